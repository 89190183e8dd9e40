"""The distribution client against misbehaving servers: a real socket server on
127.0.0.1 for broken bodies, httpx.MockTransport for protocol answers."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from powernode.errors import DigestMismatchError, TransportError, VerificationError
from powernode.oci.auth import Credentials, parse_challenge
from powernode.oci.cache import BlobCache
from powernode.oci.digest import Digest
from powernode.oci.distribution import ClientLimits, DistributionRegistry
from powernode.oci.errors import AuthError
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.refs import parse_reference
from tests.oci.helpers import blob, files_under

DATA = blob(300_000, seed=11)
DIGEST = Digest.of_bytes(DATA)
FAST = ClientLimits(attempts=2, backoff=0.25, read_timeout=0.3, connect_timeout=1.0)


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """Serves GET of one blob, broken in the way ``mode`` names."""

    mode = "ok"
    release = threading.Event()
    hits: list[str]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = DATA if self.mode != "tamper" else DATA[::-1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        if self.mode in {"truncate", "stall"}:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if self.mode == "stall":
                self.release.wait(10)  # bounded: teardown sets it at once
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], tuple[DistributionRegistry, list[str]]]]:
    servers: list[http.server.ThreadingHTTPServer] = []
    clients: list[DistributionRegistry] = []
    release = threading.Event()

    def start(mode: str) -> tuple[DistributionRegistry, list[str]]:
        hits: list[str] = []
        handler = type("H", (Misbehaving,), {"mode": mode, "release": release, "hits": hits})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        host, port = srv.server_address[:2]
        reg = DistributionRegistry(f"http://{host!s}:{port}", limits=FAST, sleep=lambda s: None)
        clients.append(reg)
        return reg, hits

    yield start
    release.set()
    for c in clients:
        c.close()
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("truncate", TransportError, "download cut short.*after 2 attempt"),
        ("stall", TransportError, "stalled mid-body.*after 2 attempt"),
        ("tamper", DigestMismatchError, f"expected {DIGEST}"),
    ],
    ids=["truncated", "hangs-mid-blob", "tampered"],
)
def test_broken_bodies_leave_nothing(
    serve: Callable[[str], tuple[DistributionRegistry, list[str]]],
    tmp_path: Path,
    mode: str,
    error: type[Exception],
    message: str,
) -> None:
    reg, hits = serve(mode)
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(error, match=message):
        reg.pull_blob_to("pn/x", DIGEST, cache, size=len(DATA))
    assert files_under(tmp_path / "cache") == []
    assert len(hits) == (1 if mode == "tamper" else 2)  # data errors are never retried


def test_good_server_streams_into_cache(
    serve: Callable[[str], tuple[DistributionRegistry, list[str]]], tmp_path: Path
) -> None:
    reg, hits = serve("ok")
    cache = BlobCache(tmp_path / "cache")
    assert reg.pull_blob_to("pn/x", DIGEST, cache).read_bytes() == DATA
    reg.pull_blob_to("pn/x", DIGEST, cache)
    assert hits == [f"/v2/pn/x/blobs/{DIGEST}"]  # the second pull came from the cache


def mock(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> DistributionRegistry:
    return DistributionRegistry(
        "http://127.0.0.1:5000",
        transport=httpx.MockTransport(handler),
        limits=ClientLimits(attempts=3, backoff=0.5),
        **kw,  # type: ignore[arg-type]
    )


def test_500_is_retried_with_backoff_then_named() -> None:
    seen: list[str] = []
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(500, json={"errors": [{"code": "UNKNOWN", "message": "boom"}]})

    with (
        mock(handler, sleep=slept.append) as reg,
        pytest.raises(
            TransportError,
            match=r"HEAD http://127\.0\.0\.1:5000/v2/pn/x/blobs/sha256:[0-9a-f]{64}: "
            r"HTTP 500 \(UNKNOWN\) after 3 attempt",
        ),
    ):
        reg.blob_exists("pn/x", DIGEST)
    assert seen == ["HEAD"] * 3
    assert slept == [0.5, 1.0]


def test_manifest_digest_mismatch() -> None:
    body = b'{"schemaVersion": 2}'
    claimed = Digest.of_bytes(b"not this")

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": str(claimed)}
        return httpx.Response(200, content=body, headers=headers)

    with mock(handler) as reg:
        with pytest.raises(DigestMismatchError, match=f"expected {claimed}, got"):
            reg.get_manifest(parse_reference("pn/x:v1"))
        pinned = Digest.of_bytes(b"pinned")
        with pytest.raises(DigestMismatchError, match=f"pn/x@{pinned}.*expected {pinned}"):
            reg.get_manifest(parse_reference(f"pn/x@{pinned}"))


def test_oversized_content_length_refused_before_download(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DATA + b"extra")

    with mock(handler) as reg, pytest.raises(VerificationError, match="Content-Length"):
        reg.pull_blob_to("pn/x", DIGEST, tmp_path / "out", size=len(DATA))
    assert files_under(tmp_path) == []


def token_registry(requests: list[httpx.Request], realm: str) -> Callable[..., httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/token":
            if request.headers.get("Authorization") != Credentials("u", "p").basic_header():
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("Authorization") == "Bearer T0K":
            return httpx.Response(200, json={"name": "pn/x", "tags": ["a"]})
        challenge = f'Bearer realm="{realm}",service="reg",scope="repository:pn/x:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return handler


def test_bearer_token_flow_and_reuse() -> None:
    seen: list[httpx.Request] = []
    handler = token_registry(seen, "http://127.0.0.1:5000/token")
    with mock(handler, credentials=Credentials("u", "p")) as reg:
        assert reg.list_tags("pn/x") == ["a"]
        assert reg.list_tags("pn/x") == ["a"]
    token_calls = [r for r in seen if r.url.path == "/token"]
    assert len(token_calls) == 1
    assert dict(token_calls[0].url.params) == {"service": "reg", "scope": "repository:pn/x:pull"}
    with (
        mock(handler, credentials=Credentials("u", "wrong")) as reg,
        pytest.raises(AuthError, match=r"token server .* refused user 'u'"),
    ):
        reg.list_tags("pn/x")
    with mock(handler) as anon, pytest.raises(AuthError, match="refused anonymous"):
        anon.list_tags("pn/x")


def test_https_registry_refuses_plain_http_realm() -> None:
    seen: list[httpx.Request] = []
    handler = token_registry(seen, "http://127.0.0.1:5000/token")
    with (
        DistributionRegistry(
            "https://127.0.0.1:5000",
            transport=httpx.MockTransport(handler),
            credentials=Credentials("u", "p"),
        ) as reg,
        pytest.raises(AuthError, match="plain http; refusing"),
    ):
        reg.list_tags("pn/x")
    assert all(r.url.path != "/token" for r in seen)


def test_tag_pagination_follows_relative_links() -> None:
    pages = {None: (["a", "b"], "/v2/pn/x/tags/list?n=2&last=b"), "b": (["c"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        tags, nxt = pages[request.url.params.get("last")]
        headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
        return httpx.Response(200, json={"name": "pn/x", "tags": tags}, headers=headers)

    with mock(handler) as reg:
        assert reg.list_tags("pn/x") == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="r"', ("basic", {"realm": "r"})),
        (
            'Bearer realm="https://a/t",service="s",scope="repository:x/y:pull,push"',
            ("bearer", {"realm": "https://a/t", "service": "s",
                        "scope": "repository:x/y:pull,push"}),
        ),
        ('Bearer realm="q\\"x", error=insufficient_scope',
         ("bearer", {"realm": 'q"x', "error": "insufficient_scope"})),
    ],
    ids=["basic", "bearer", "escaped-and-token"],
)  # fmt: skip
def test_parse_challenge(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected


def test_manifest_list_error_body_in_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(418, json={"errors": [{"code": "TEAPOT"}]})

    with (
        mock(handler) as reg,
        pytest.raises(TransportError, match=r"unexpected HTTP 418 \(TEAPOT\)"),
    ):
        reg.list_tags("pn/x")
