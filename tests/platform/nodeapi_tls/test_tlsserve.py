"""mTLS serving: a real uvicorn server (tlsserve.build_server) on 127.0.0.1 hands the peer
certificate to a tiny Starlette app, which checks it with NodeCA.verify_peer."""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from powernode.agent.certstore import build_csr
from powernode.agent.transport import tls_context
from powernode.errors import ConfigError
from powernode.platform import tlsserve
from powernode.platform.pki import NodeCA
from powernode.platform.problems import AuthenticationError
from powernode.platform.settings import Settings
from tests.platform.nodeapi_tls import forge
from tests.platform.nodeapi_tls.forge import INSTANCE
from tests.platform.nodeapi_tls.tlsserver import running


def _echo_app(ca: NodeCA) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        request.app.state.hits += 1
        try:
            der = tlsserve.peer_certificate(request)
            if der is None:
                return JSONResponse({"peer": None})
            peer = ca.verify_peer(der, now=datetime.now(UTC))
        except AuthenticationError as e:
            return JSONResponse({"detail": e.detail}, status_code=401)
        return JSONResponse({"peer": peer.instance_id, "serial": peer.serial})

    app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"])])
    app.state.trusted_proxies = ()
    app.state.hits = 0
    return app


class Lab:
    def __init__(self, tmp: Path, url: str, app: Starlette, ca: NodeCA, platform_ca: Path) -> None:
        self.tmp, self.url, self.app, self.ca, self.platform_ca = tmp, url, app, ca, platform_ca

    def node_files(self, cert_pem: bytes, key: Any, name: str) -> tuple[Path, Path]:
        cert, key_file = self.tmp / f"{name}.pem", self.tmp / f"{name}.key"
        cert.write_bytes(cert_pem)
        key_file.write_bytes(forge.key_pem(key))
        return cert, key_file

    def enrolled(self, name: str = "node") -> tuple[Path, Path]:
        key = Ed25519PrivateKey.generate()
        issued = self.ca.issue(
            build_csr(key, "").decode(),
            INSTANCE,
            now=datetime.now(UTC),
            lifetime=timedelta(days=30),
        )
        return self.node_files(issued.certificate_pem.encode(), key, name)

    def get(
        self, cert: tuple[Path, Path] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        ctx = tls_context(self.platform_ca, *(cert or (None, None)))  # the agent's own context
        with httpx.Client(verify=ctx, timeout=10) as client:
            return client.get(self.url + "/echo", headers=headers)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("tls")
    settings = Settings(data_dir=tmp / "data", tls=True, host="127.0.0.1")
    ca = NodeCA.load_or_create(settings.pki_dir, now=datetime.now(UTC))
    app = _echo_app(ca)
    with running(app, settings) as url:
        yield Lab(tmp, url, app, ca, settings.pki_dir / "platform-ca.pem")


@pytest.fixture(autouse=True)
def _fresh(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab.app.state.trusted_proxies = ()
    monkeypatch.setattr(tlsserve, "_untrusted_header", tlsserve._OncePerPeer())


def _escaped(cert_file: Path) -> str:
    # nginx's $ssl_client_escaped_cert: the PEM, URL-encoded.
    return urllib.parse.quote(cert_file.read_text())


def test_a_node_certificate_reaches_the_app(lab: Lab) -> None:
    answer = lab.get(lab.enrolled())
    assert answer.status_code == 200
    assert answer.json()["peer"] == INSTANCE


def test_no_client_certificate_is_seen_as_none(lab: Lab) -> None:
    answer = lab.get()
    assert answer.status_code == 200
    assert answer.json() == {"peer": None}


def test_a_certificate_from_another_ca_fails_the_handshake_or_is_refused(lab: Lab) -> None:
    cert, key = forge.forge_cert(forge.other_ca(datetime.now(UTC)), now=datetime.now(UTC))
    files = lab.node_files(forge.pem(cert), key, "stranger")
    hits = lab.app.state.hits
    try:
        answer = lab.get(files)
    except httpx.TransportError:
        # TLS 1.3: the client finishes first, the server's alert ends the connection.
        assert lab.app.state.hits == hits  # the app never saw the request
    else:
        assert answer.status_code == 401, answer.text  # reached the app: it must refuse
        assert "not by this platform's node CA" in answer.json()["detail"]
    assert lab.get(lab.enrolled()).json()["peer"] == INSTANCE  # the server is still fine


def test_an_expired_certificate_gets_a_clear_answer_not_a_tls_alert(lab: Lab) -> None:
    now = datetime.now(UTC)
    cert, key = forge.forge_cert(
        forge.load_ca(lab.platform_ca.parent),  # the node CA's files sit beside it
        now=now,
        not_before=now - timedelta(days=40),
        not_after=now - timedelta(days=10),
    )
    answer = lab.get(lab.node_files(forge.pem(cert), key, "expired"))
    assert answer.status_code == 401
    assert "expired at" in answer.json()["detail"]
    assert "re-enroll with a new bootstrap token" in answer.json()["detail"]


def test_the_header_from_a_trusted_proxy_is_used(lab: Lab) -> None:
    lab.app.state.trusted_proxies = ("127.0.0.0/8",)
    cert, _ = lab.enrolled("behind-proxy")
    answer = lab.get(headers={"X-Client-Cert": _escaped(cert)})
    assert answer.status_code == 200
    assert answer.json()["peer"] == INSTANCE


def test_a_trusted_proxy_without_a_client_certificate_is_none(lab: Lab) -> None:
    lab.app.state.trusted_proxies = ("127.0.0.1",)
    assert lab.get(headers={"X-Client-Cert": ""}).json() == {"peer": None}


def test_garbage_in_the_header_from_a_trusted_proxy_is_refused(lab: Lab) -> None:
    lab.app.state.trusted_proxies = ("127.0.0.1",)
    answer = lab.get(headers={"X-Client-Cert": "hello"})
    assert answer.status_code == 401
    assert "$ssl_client_escaped_cert" in answer.json()["detail"]


def test_the_header_from_an_untrusted_peer_is_ignored_and_logged_once(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    # X-Forwarded-For naming the trusted proxy must not make the TCP peer trusted.
    lab.app.state.trusted_proxies = ("10.9.9.9",)
    cert, _ = lab.enrolled("spoofed")
    headers = {"X-Client-Cert": _escaped(cert), "X-Forwarded-For": "10.9.9.9"}
    with caplog.at_level(logging.WARNING, logger="powernode.platform.tlsserve"):
        first = lab.get(headers=headers)
        second = lab.get(headers=headers)
    assert first.json() == {"peer": None}
    assert second.json() == {"peer": None}
    warnings = [r for r in caplog.records if "not in trusted_proxies" in r.getMessage()]
    assert len(warnings) == 1
    assert "127.0.0.1" in warnings[0].getMessage()


def test_the_header_does_not_replace_a_tls_certificate_from_an_untrusted_peer(lab: Lab) -> None:
    mine = lab.enrolled("mine")
    forged, _ = forge.forge_cert(forge.other_ca(datetime.now(UTC)), now=datetime.now(UTC))
    answer = lab.get(mine, headers={"X-Client-Cert": urllib.parse.quote(forge.pem(forged))})
    assert answer.json()["peer"] == INSTANCE


# -- header parsing ----------------------------------------------------------------------------


def test_cert_der_from_header_reads_nginx_escaped_pem(lab: Lab) -> None:
    cert, _ = lab.enrolled("parse")
    der = tlsserve.cert_der_from_header(_escaped(cert))
    assert der == ssl.PEM_cert_to_DER_cert(cert.read_text())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-----BEGIN CERTIFICATE-----%0A!!!%0A-----END CERTIFICATE-----", "not base64"),
        ("-----BEGIN CERTIFICATE-----", "not a URL-encoded PEM certificate"),
        ("A" * 20_000, "over the 16384 limit"),
    ],
    ids=["bad-base64", "truncated", "too-long"],
)
def test_cert_der_from_header_refuses_garbage(value: str, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message):
        tlsserve.cert_der_from_header(value)


# -- the server's identity ---------------------------------------------------------------------


def test_embedded_identity_is_made_once_and_reissued_when_hosts_change(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    settings = Settings(data_dir=tmp_path, tls=True, host="127.0.0.1")
    cert, key, ca = tlsserve.server_identity(settings, now=now)
    assert ca == tmp_path / "pki" / "platform-ca.pem"
    first = cert.read_bytes(), key.read_bytes(), ca.read_bytes()
    assert tlsserve.server_identity(settings, now=now) == (cert, key, ca)
    assert (cert.read_bytes(), key.read_bytes(), ca.read_bytes()) == first  # not rewritten
    other = Settings(data_dir=tmp_path, tls=True, host="10.1.2.3")
    tlsserve.server_identity(other, now=now)
    assert cert.read_bytes() != first[0]
    assert ca.read_bytes() == first[2]  # the CA the agents pin stays
    assert b"node-ca" not in ca.read_bytes()


def test_configured_identity_is_used_as_is_and_must_be_complete(tmp_path: Path) -> None:
    given = Settings(data_dir=tmp_path, tls_cert_file=tmp_path / "c", tls_key_file=tmp_path / "k")
    assert tlsserve.server_identity(given, now=datetime.now(UTC)) == (
        tmp_path / "c",
        tmp_path / "k",
        None,
    )
    half = Settings(data_dir=tmp_path, tls_cert_file=tmp_path / "c")
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        tlsserve.server_identity(half, now=datetime.now(UTC))
    assert not (tmp_path / "pki").exists()


def test_plain_http_behind_a_proxy_takes_the_certificate_only_from_the_trusted_proxy(
    lab: Lab, tmp_path: Path
) -> None:
    # tls = false: the proxy terminates TLS and forwards the verified certificate.
    app = _echo_app(lab.ca)
    cert, _ = lab.enrolled("plain")
    headers = {"X-Client-Cert": _escaped(cert)}
    with running(app, Settings(data_dir=tmp_path, tls=False, host="127.0.0.1")) as url:
        assert url.startswith("http://")
        untrusted = httpx.get(url + "/echo", headers=headers, timeout=10)
        app.state.trusted_proxies = ("127.0.0.1",)
        trusted = httpx.get(url + "/echo", headers=headers, timeout=10)
    assert untrusted.json() == {"peer": None}
    assert trusted.json()["peer"] == INSTANCE
    assert not (tmp_path / "pki").exists()  # no TLS identity made for a plain server
