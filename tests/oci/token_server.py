"""A tiny token server on 127.0.0.1 for distribution's ``auth.token`` mode.

Implements the distribution "Token Authentication Specification": ``GET
/token?service=…&scope=repository:<name>:<actions>`` with Basic credentials
answers ``{"token": <JWT>}``. The JWT is ES256 (raw r||s signature, RFC 7518
§3.4) with the signing certificate in the ``x5c`` header; the registry
trusts it through ``auth.token.rootcertbundle`` (the same self-signed cert).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from powernode.oci.auth import Credentials
from tests.oci.registry_fixture import TokenAuth

SERVICE = "powernode-test-registry"
ISSUER = "powernode-test-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    url: str
    auth: TokenAuth
    issued: list[str]  # scopes a token was issued for


def _make_cert(workdir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "powernode test token signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = workdir / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, bundle


def _jwt(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, claims: dict[str, object]) -> str:
    header = {
        "alg": "ES256",
        "typ": "JWT",
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@contextlib.contextmanager
def run_token_server(workdir: Path, user: Credentials) -> Iterator[TokenServer]:
    """Serve tokens to ``user`` (any repository, the actions asked for) until exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, cert, bundle = _make_cert(workdir)
    issued: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != user.basic_header():
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            query = parse_qs(urlsplit(self.path).query)
            access = []
            for scope in query.get("scope", []):
                kind, name, actions = scope.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
                issued.append(scope)
            now = int(time.time())
            claims = {
                "iss": ISSUER, "sub": user.username, "aud": SERVICE, "exp": now + 300,
                "nbf": now - 60, "iat": now, "jti": secrets.token_hex(8), "access": access,
            }  # fmt: skip
            body = json.dumps({"token": _jwt(key, cert, claims)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    host, port = srv.server_address[:2]
    url = f"http://{host!s}:{port}/token"
    try:
        yield TokenServer(url, TokenAuth(url, SERVICE, ISSUER, bundle), issued)
    finally:
        srv.shutdown()
        srv.server_close()
