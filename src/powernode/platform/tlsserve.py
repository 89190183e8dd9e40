"""Serving the platform over TLS with client certificates handed to the app.

uvicorn verifies client certificates but does not pass them to the app
(FACTS.md, "mTLS in Python ASGI servers"). :class:`PeerCertProtocol`, a
subclass of uvicorn's httptools protocol, reads the peer's certificate from
the TLS object once per connection and puts it into every request's scope
as the ASGI TLS extension (asgi.readthedocs.io, "TLS Extension"):
``scope["extensions"]["tls"]["client_cert_chain"]`` (PEM; only the leaf,
Python < 3.13 cannot give the verified chain) plus ``"client_cert"``, the
same certificate as DER, which :func:`peer_certificate` returns.

The TLS layer checks the chain to the node CA (``CERT_OPTIONAL``: enroll
comes without a certificate; one from another CA fails the handshake) but
not the validity window (``X509_V_FLAG_NO_CHECK_TIME``): an expired node
certificate then reaches the app, whose ``NodeCA.verify_peer`` refuses it
with a problem saying when it expired and what to do, instead of a bare TLS
alert the agent cannot explain. Every caller of :func:`peer_certificate`
must therefore pass the DER through ``verify_peer``.

Behind a TLS-terminating proxy (nginx ``proxy_set_header X-Client-Cert
$ssl_client_escaped_cert``) the certificate comes in the ``X-Client-Cert``
header, used only when the TCP peer is in ``trusted_proxies``. uvicorn's own
``X-Forwarded-For`` rewriting is turned off so that the address checked is
the TCP peer's, not one a client wrote into a header.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import ipaddress
import logging
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp as ASGIApplication
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from powernode.errors import ConfigError
from powernode.platform.pki import CA_CERT_FILE, NodeCA
from powernode.platform.pki_server import load_or_create_server_identity
from powernode.platform.problems import AuthenticationError
from powernode.platform.settings import Settings
from powernode.systemd import Notifier

log = logging.getLogger(__name__)

CLIENT_CERT_HEADER = "x-client-cert"
MAX_HEADER_CERT_CHARS = 16 * 1024  # a URL-encoded Ed25519 certificate is ~1 KiB
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}  # the ASGI TLS extension's codes
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (x509_vfy.h); Python has no name for it.
_NO_CHECK_TIME = 0x200000
_MAX_LOGGED_PEERS = 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerCertProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the client certificate in the request scope."""

    _tls: dict[str, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            self._tls = None
            return
        # The handshake is complete when the protocol sees the connection (asyncio
        # sslproto and uvloop both call connection_made after it), so the
        # client's certificate, if any, has been received and verified.
        der = ssl_object.getpeercert(binary_form=True)
        self._tls = {
            "server_cert": None,
            "client_cert": der,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": None,
        }

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            # A copy per request: the app may not change what the next request sees.
            tls: dict[object, object] = {}
            tls.update(self._tls)
            extensions = {"tls": tls}
            self.scope["extensions"] = extensions


# -- the app side ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted_proxies(request: Request) -> tuple[str, ...]:
    """``app.state.trusted_proxies``, else the platform settings' (``app.state.platform``)."""
    state = request.app.state
    proxies: Iterable[object] | None = getattr(state, "trusted_proxies", None)
    if proxies is None:
        settings = getattr(getattr(state, "platform", None), "settings", None)
        proxies = getattr(settings, "trusted_proxies", ())
    return tuple(str(p) for p in proxies)


class _OncePerPeer:
    """Remembers which peers were already warned about (bounded), so logs do not flood."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first(self, peer: str) -> bool:
        with self._lock:
            if peer in self._seen or len(self._seen) >= _MAX_LOGGED_PEERS:
                return False
            self._seen.add(peer)
            return True


_untrusted_header = _OncePerPeer()


def _is_trusted(peer: str, proxies: tuple[str, ...]) -> bool:
    if not proxies or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in _networks(proxies))


def cert_der_from_header(value: str) -> bytes | None:
    """The DER of the first certificate in a URL-encoded PEM header (None when empty)."""
    if len(value) > MAX_HEADER_CERT_CHARS:
        raise AuthenticationError(
            f"{CLIENT_CERT_HEADER} from the proxy is {len(value)} characters, over the "
            f"{MAX_HEADER_CERT_CHARS} limit; forward only the client's leaf certificate"
        )
    text = urllib.parse.unquote(value).strip()
    if not text or text == "-":
        return None  # nginx sends "" when the client presented no certificate
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin))
    if start < 0 or stop < 0:
        raise AuthenticationError(
            f"{CLIENT_CERT_HEADER} from the proxy is not a URL-encoded PEM certificate; set "
            "proxy_set_header X-Client-Cert $ssl_client_escaped_cert in the proxy"
        )
    body = "".join(text[start + len(begin) : stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AuthenticationError(
            f"{CLIENT_CERT_HEADER} from the proxy has a PEM body that is not base64 ({e})"
        ) from e


def peer_certificate(request: Request) -> bytes | None:
    """DER of the client certificate of this request, not yet verified (see NodeCA.verify_peer).

    From the TLS connection; or, only when the TCP peer is a trusted proxy
    and sent ``X-Client-Cert``, from that header. A header from any other
    peer is ignored (and logged once per peer).
    """
    header = request.headers.get(CLIENT_CERT_HEADER)
    if header is not None:
        peer = request.client.host if request.client else ""
        if _is_trusted(peer, _trusted_proxies(request)):
            return cert_der_from_header(header)
        if _untrusted_header.first(peer):
            log.warning(
                "ignoring %s from %s: not in trusted_proxies (logged once per peer)",
                CLIENT_CERT_HEADER,
                peer or "an unknown peer",
            )
    tls = request.scope.get("extensions", {}).get("tls")
    if not tls:
        return None
    der = tls.get("client_cert")
    if der:
        return bytes(der)
    chain = tls.get("client_cert_chain") or []
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


# -- the server side ---------------------------------------------------------------------------


def server_identity(settings: Settings, *, now: datetime) -> tuple[Path, Path, Path | None]:
    """(cert, key, platform CA PEM or None) the server presents.

    The configured files, or the embedded identity for ``settings.host``
    (plus 127.0.0.1 and localhost) under ``settings.pki_dir``.
    """
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is not None and key is not None:
        return cert, key, None
    if cert is not None or key is not None:
        raise ConfigError(
            "tls_cert_file and tls_key_file go together: set both, or neither for the embedded "
            "self-signed platform CA"
        )
    hosts = [settings.host]
    if _is_ip(settings.host) and ipaddress.ip_address(settings.host).is_unspecified:
        hosts = [socket.gethostname()]  # listening everywhere: name the machine
    hosts += [h for h in ("127.0.0.1", "localhost") if h not in hosts]
    return load_or_create_server_identity(settings.pki_dir, hosts, now=now)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _context_factory(
    config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    ctx = default()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The window is checked by NodeCA.verify_peer, with a message (module docstring).
    ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


class NotifyingServer(uvicorn.Server):
    """uvicorn telling systemd (docs/operations.md): READY once its sockets listen,
    WATCHDOG from the event loop's own tick (uvicorn's main loop ticks every 0.1 s:
    a blocked loop stops the pings), STOPPING when it shuts down."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self.notifier = notifier

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.notifier.ready(f"serving on {self.config.host}:{self.config.port}")

    async def on_tick(self, counter: int) -> bool:
        self.notifier.watchdog()
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.notifier.stopping()
        await super().shutdown(sockets)


def build_server(
    app: ASGIApplication,
    settings: Settings,
    *,
    now: datetime | None = None,
    access_log: bool = True,
    log_level: str = "info",
    notifier: Notifier | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` as ``settings`` say (TLS or not), not yet started."""
    kw: dict[str, Any] = {}  # Any: uvicorn.Config keywords of several types
    if settings.tls:
        moment = now or datetime.now(UTC)
        cert, key, _ = server_identity(settings, now=moment)
        NodeCA.load_or_create(settings.pki_dir, now=moment)  # the file the handshake trusts
        kw = {
            "ssl_certfile": str(cert),
            "ssl_keyfile": str(key),
            "ssl_ca_certs": str(settings.pki_dir / CA_CERT_FILE),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            "ssl_context_factory": _context_factory,
        }
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=PeerCertProtocol,
        loop="uvloop",
        proxy_headers=False,  # the TCP peer decides trust (module docstring)
        server_header=False,
        access_log=access_log,
        log_level=log_level,
        **kw,
    )
    return NotifyingServer(config, notifier or Notifier({}))


def serve(
    app: ASGIApplication, settings: Settings, *, sockets: list[socket.socket] | None = None
) -> None:
    """Run ``app`` until interrupted (SIGINT/SIGTERM), over TLS when ``settings.tls``."""
    build_server(app, settings).run(sockets=sockets)
