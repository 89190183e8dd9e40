"""The distribution client against a real CNCF distribution 2.8 registry."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powernode.errors import DataError, DigestMismatchError, TransportError, VerificationError
from powernode.oci.auth import Credentials
from powernode.oci.cache import BlobCache
from powernode.oci.digest import Digest
from powernode.oci.distribution import ClientLimits, DistributionRegistry
from powernode.oci.errors import AuthError, NotFoundError, UploadInterruptedError
from powernode.oci.mediatypes import OCI_MANIFEST
from powernode.oci.ranges import read_range_into
from powernode.oci.refs import parse_reference
from powernode.oci.registry import Registry, open_registry
from tests.oci.helpers import ARTIFACT_TYPE, blob, files_under, push_artifact, write_file
from tests.oci.registry_fixture import RunningRegistry

pytestmark = pytest.mark.registry

SMALL = ClientLimits(chunk_size=64 << 10, attempts=2, backoff=0.0, read_timeout=5.0)


class Counting(httpx.BaseTransport):
    """Wraps the real transport; counts requests and can fail chosen ones."""

    def __init__(self, fail_patch_after: int | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str]] = []
        self.fail_patch_after = fail_patch_after
        self.patches = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if request.method == "PATCH":
            self.patches += 1
            if self.fail_patch_after is not None and self.patches > self.fail_patch_after:
                raise httpx.ConnectError("injected: connection dropped", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


_open: list[DistributionRegistry] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def client(
    reg: RunningRegistry | str,
    transport: httpx.BaseTransport | None = None,
    limits: ClientLimits = SMALL,
    credentials: Credentials | None = None,
) -> DistributionRegistry:
    """A client closed after the test (unclosed sockets are errors under -W error)."""
    url = reg if isinstance(reg, str) else reg.url
    if credentials is None and not isinstance(reg, str):
        credentials = reg.credentials
    c = DistributionRegistry(url, credentials=credentials, transport=transport, limits=limits)
    _open.append(c)
    return c


def test_round_trip_chunked_and_monolithic(oci_registry: RunningRegistry, tmp_path: Path) -> None:
    reg = client(oci_registry)
    assert isinstance(reg, Registry)
    repo = "pn/roundtrip"
    layers = [blob(10), blob(300_000, seed=1)]  # one monolithic PUT, one 5-chunk upload
    manifest, digest = push_artifact(reg, tmp_path, repo, layers)
    ref = parse_reference(f"{repo}:v1")
    assert reg.push_manifest(ref, manifest, OCI_MANIFEST) == digest
    got = reg.get_manifest(ref)
    assert (got.data, got.media_type, got.digest) == (manifest, OCI_MANIFEST, digest)
    assert json.loads(got.data)["artifactType"] == ARTIFACT_TYPE
    cache = BlobCache(tmp_path / "cache")
    for data in layers:
        path = reg.pull_blob_to(repo, Digest.of_bytes(data), cache, size=len(data))
        assert path.read_bytes() == data
    assert reg.get_manifest(ref.with_digest(digest)).data == manifest
    assert cache.partials() == []


def test_cache_shared_across_repositories(oci_registry: RunningRegistry, tmp_path: Path) -> None:
    transport = Counting()
    reg = client(oci_registry, transport=transport)
    data = blob(5000, seed=2)
    path, digest = write_file(tmp_path / "b", data)
    reg.push_blob("pn/mod-a", path, digest, len(data))
    reg.push_blob("pn/mod-b", path, digest, len(data), mount_from="pn/mod-a")
    assert ("POST", "/v2/pn/mod-b/blobs/uploads/") in transport.requests  # mount attempted
    assert not any(m in {"PATCH", "PUT"} for m, p in transport.requests if "mod-b" in p)
    cache = BlobCache(tmp_path / "cache")
    reg.pull_blob_to("pn/mod-a", digest, cache)
    reg.pull_blob_to("pn/mod-b", digest, cache)
    gets = [p for m, p in transport.requests if m == "GET" and "/blobs/sha256:" in p]
    assert gets == [f"/v2/pn/mod-a/blobs/{digest}"]


def test_tags_paginate_and_delete(oci_registry: RunningRegistry, tmp_path: Path) -> None:
    reg = client(oci_registry, limits=ClientLimits(tags_page_size=2))
    repo = "pn/tags"
    manifest, digest = push_artifact(reg, tmp_path, repo, [blob(100, seed=3)])
    names = ["a", "b", "c", "d", f"{digest.tag_form}.sig"]
    for tag in names:
        reg.push_manifest(parse_reference(f"{repo}:{tag}"), manifest, OCI_MANIFEST)
    assert reg.list_tags(repo) == sorted(names)
    assert reg.list_tags("pn/never-pushed") == []
    reg.delete_manifest(parse_reference(f"{repo}:a"))  # deletes the manifest: every tag goes
    with pytest.raises(NotFoundError, match="no manifest"):
        reg.get_manifest(parse_reference(f"{repo}:b"))
    with pytest.raises(NotFoundError, match=str(digest)):
        reg.delete_manifest(parse_reference(f"{repo}@{digest}"))


def test_manifest_with_missing_blob_is_rejected(oci_registry: RunningRegistry) -> None:
    reg = client(oci_registry)
    from tests.oci.helpers import manifest_for

    manifest = manifest_for(b"{}", [blob(77, seed=4)])
    with pytest.raises(DataError, match="MANIFEST_BLOB_UNKNOWN"):
        reg.push_manifest(parse_reference("pn/missing:v1"), manifest, OCI_MANIFEST)
    assert reg.list_tags("pn/missing") == []


def test_tampered_blob_in_storage(oci_registry: RunningRegistry, tmp_path: Path) -> None:
    reg = client(oci_registry)
    data = blob(200_000, seed=5)
    path, digest = write_file(tmp_path / "b", data)
    reg.push_blob("pn/tamper", path, digest, len(data))
    stored = oci_registry.blob_data(digest)
    stored.write_bytes(b"X" + data[1:])  # same size, one byte changed on the server's disk
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(DigestMismatchError, match=f"expected {digest}"):
        reg.pull_blob_to("pn/tamper", digest, cache, size=len(data))
    assert files_under(tmp_path / "cache") == []
    target = tmp_path / "out" / "blob"
    with pytest.raises(VerificationError):
        reg.pull_blob_to("pn/tamper", digest, target)
    assert files_under(tmp_path / "out") == []


def test_interrupted_push_resumes_from_location(
    oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    data = blob(64 * 1024 * 5 + 123, seed=6)  # 6 chunks of 64 KiB
    path, digest = write_file(tmp_path / "b", data)
    failing = Counting(fail_patch_after=3)
    reg = client(oci_registry, transport=failing)
    with pytest.raises(UploadInterruptedError, match="stopped at byte 196608") as info:
        reg.push_blob("pn/resume", path, digest, len(data))
    assert info.value.offset == 3 * 64 * 1024
    assert not reg.blob_exists("pn/resume", digest)
    # A new client (as after a restart) continues from the registry's Range.
    fresh = Counting()
    client(oci_registry, transport=fresh).push_blob(
        "pn/resume", path, digest, len(data), resume_location=info.value.location
    )
    assert [m for m, _ in fresh.requests].count("PATCH") == 3  # only the missing chunks
    out = tmp_path / "pulled"
    client(oci_registry).pull_blob_to("pn/resume", digest, out, size=len(data))
    assert out.read_bytes() == data


def test_transient_patch_failure_resyncs_within_one_push(
    oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    class FlakyOnce(Counting):
        """Drops the third PATCH once, before it reaches the registry."""

        dropped = False

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "PATCH" and self.patches == 2 and not self.dropped:
                self.dropped = True
                raise httpx.ConnectError("injected", request=request)
            return super().handle_request(request)

    transport = FlakyOnce()
    data = blob(64 * 1024 * 4, seed=7)
    path, digest = write_file(tmp_path / "b", data)
    reg = client(oci_registry, transport=transport)
    reg.push_blob("pn/flaky", path, digest, len(data))
    assert reg.blob_exists("pn/flaky", digest)
    status_checks = [p for m, p in transport.requests if m == "GET" and "/uploads/" in p]
    assert len(status_checks) == 1  # one resync via the upload status endpoint
    assert transport.patches == 4


def test_push_of_file_not_matching_digest(oci_registry: RunningRegistry, tmp_path: Path) -> None:
    reg = client(oci_registry)
    data = blob(200_000, seed=8)
    path, _ = write_file(tmp_path / "b", data)
    claimed = Digest.of_bytes(b"something else")
    with pytest.raises(DigestMismatchError, match=f"expected {claimed}"):
        reg.push_blob("pn/wrong", path, claimed, len(data))
    assert not reg.blob_exists("pn/wrong", claimed)


def test_basic_auth(oci_registry_basic: RunningRegistry, tmp_path: Path) -> None:
    anonymous = client(oci_registry_basic.url)
    with pytest.raises(AuthError, match="asks for a user name and password"):
        anonymous.list_tags("pn/auth")
    wrong = client(oci_registry_basic, credentials=Credentials("tester", "nope"))
    with pytest.raises(AuthError, match="refused the credentials for user 'tester'"):
        wrong.blob_exists("pn/auth", Digest.of_bytes(b""))
    reg = client(oci_registry_basic)
    manifest, _digest = push_artifact(reg, tmp_path, "pn/auth", [blob(90_000, seed=9)])
    reg.push_manifest(parse_reference("pn/auth:v1"), manifest, OCI_MANIFEST)
    assert reg.list_tags("pn/auth") == ["v1"]


def test_open_registry_url(oci_registry: RunningRegistry) -> None:
    reg = open_registry(oci_registry.url)
    assert isinstance(reg, DistributionRegistry)
    _open.append(reg)
    reg.check()
    with pytest.raises(TransportError, match="connection failed"):
        client("http://127.0.0.1:9", limits=ClientLimits(attempts=1)).check()


RANGED = ClientLimits(read_chunk=64 << 10, attempts=1, backoff=0.0, read_timeout=5.0)


def read_into(reg: DistributionRegistry, repo: str, digest: Digest, offset: int, n: int) -> bytes:
    """read_range_into collected; checks every chunk fits the client's buffer."""
    out = bytearray()

    def sink(chunk: memoryview) -> None:
        assert 0 < len(chunk) <= reg.limits.read_chunk
        out.extend(chunk)

    read_range_into(reg, repo, digest, offset, n, sink=sink)
    return bytes(out)


def pushed_blob(reg: DistributionRegistry, tmp_path: Path, repo: str, size: int) -> bytes:
    data = blob(size, seed=size)
    path, digest = write_file(tmp_path / f"blob-{size}", data)
    reg.push_blob(repo, path, digest, len(data))
    return data


def test_ranged_reads_reuse_one_connection(oci_registry: RunningRegistry, tmp_path: Path) -> None:
    reg = client(oci_registry, limits=RANGED)
    data = pushed_blob(reg, tmp_path, "pn/ranged", 300_000)
    digest = Digest.of_bytes(data)
    for offset, n in [(0, 1), (0, 300_000), (65_535, 70_000), (299_999, 1), (123, 200_000)]:
        assert read_into(reg, "pn/ranged", digest, offset, n) == data[offset : offset + n]
    assert reg.raw.usable and reg.raw.idle() == 1  # five reads, one keep-alive connection
    with pytest.raises(DataError, match="outside blob"):
        read_into(reg, "pn/ranged", digest, 300_000, 1)
    with pytest.raises(NotFoundError, match="no blob"):
        read_into(reg, "pn/ranged", Digest.of_bytes(b"absent"), 0, 10)


def test_ranged_read_survives_a_connection_the_server_closed(
    oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    reg = client(oci_registry, limits=RANGED)  # attempts=1: a counted failure would raise
    data = pushed_blob(reg, tmp_path, "pn/stale", 100_000)
    digest = Digest.of_bytes(data)
    assert read_into(reg, "pn/stale", digest, 0, 10) == data[:10]
    conn, reused = reg.raw.acquire()
    assert reused and conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)  # as when the registry drops an idle connection
    reg.raw.release(conn)
    assert read_into(reg, "pn/stale", digest, 5, 99_995) == data[5:]


def test_ranged_read_sink_error_is_not_retried(
    oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    reg = client(oci_registry, limits=RANGED)
    data = pushed_blob(reg, tmp_path, "pn/sinkerr", 200_000)
    digest = Digest.of_bytes(data)
    calls = []

    def sink(chunk: memoryview) -> None:
        calls.append(len(chunk))
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        read_range_into(reg, "pn/sinkerr", digest, 0, 200_000, sink=sink)
    assert calls == [64 << 10]  # one chunk, no retry of a consumer's error
    assert reg.raw.idle() == 0  # a connection left mid-body is not reused
    assert read_into(reg, "pn/sinkerr", digest, 0, 200_000) == data


def test_ranged_read_with_injected_transport_goes_through_httpx(
    oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    counting = Counting()
    reg = client(oci_registry, transport=counting, limits=RANGED)
    data = pushed_blob(reg, tmp_path, "pn/viahttpx", 100_000)
    digest = Digest.of_bytes(data)
    assert not reg.raw.usable
    assert read_into(reg, "pn/viahttpx", digest, 10, 90_000) == data[10:90_010]
    assert ("GET", f"/v2/pn/viahttpx/blobs/{digest}") in counting.requests


def test_bearer_token_auth(tmp_path: Path) -> None:
    from tests.oci.registry_fixture import run_registry
    from tests.oci.token_server import run_token_server

    user = Credentials("tokenuser", "tokenpass")
    with (
        run_token_server(tmp_path / "tokens", user) as tokens,
        run_registry(tmp_path / "reg", token=tokens.auth) as running,
    ):
        with pytest.raises(AuthError, match="refused anonymous"):
            client(running.url).list_tags("pn/tok")
        reg = client(running, credentials=user)
        manifest, _ = push_artifact(reg, tmp_path, "pn/tok", [blob(100_000, seed=12)])
        reg.push_manifest(parse_reference("pn/tok:v1"), manifest, OCI_MANIFEST)
        assert reg.list_tags("pn/tok") == ["v1"]
        # distribution names the actions in map order (either way round)
        scopes = (s.rsplit(":", 1) for s in tokens.issued)
        issued = {(resource, frozenset(actions.split(","))) for resource, actions in scopes}
        assert ("repository:pn/tok", frozenset({"pull", "push"})) in issued
        # ranged reads: the plain connection meets the challenge, httpx answers
        # it, and the next read carries the token on a plain connection
        data = pushed_blob(reg, tmp_path, "pn/tok", 70_000)
        digest = Digest.of_bytes(data)
        reader = client(running, credentials=user, limits=RANGED)
        assert read_into(reader, "pn/tok", digest, 1, 69_999) == data[1:]
        assert reader.raw.idle() == 0  # the 401 closed it
        assert read_into(reader, "pn/tok", digest, 2, 100) == data[2:102]
        assert reader.raw.idle() == 1


def test_rerun_of_an_interrupted_artifact_push_skips_finished_blobs(
    oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    from powernode.publish import ModuleStore, pull_artifact
    from powernode.publish import push_artifact as push_module
    from tests.publish.artifacts import make_artifact, small_files, store_files

    art = make_artifact(tmp_path / "art", small_files("resume", count=4, size=300_000))
    ref = parse_reference("pn/module-resume:1.0.0")
    # config, image and index go in one PUT each; the 1.2 MB pack in 64 KiB
    # PATCHes, the 6th of which fails: the push stops inside the pack
    failing = Counting(fail_patch_after=5)
    with pytest.raises(UploadInterruptedError, match="stopped at byte 327680"):
        push_module(client(oci_registry, transport=failing), ref, art)
    first_posts = [m for m, _ in failing.requests].count("POST")
    assert first_posts == 4  # config, image, index, pack
    assert not client(oci_registry).list_tags("pn/module-resume")  # no manifest yet

    rerun = Counting()
    digest = push_module(client(oci_registry, transport=rerun), ref, art)
    methods = [m for m, _ in rerun.requests]
    heads = [p for m, p in rerun.requests if m == "HEAD" and "/blobs/" in p]
    assert len(set(heads)) == 5  # every blob asked for (the uploaded ones twice: push_blob checks)
    # only the pack (from its start: push_artifact passes no resume location)
    # and the SBOM are uploaded again; finished blobs are not
    assert methods.count("POST") == 2
    assert methods.count("PATCH") == 19  # 1,200,0xx bytes of pack / 64 KiB, nothing more
    store = ModuleStore(tmp_path / "state")
    pulled = pull_artifact(client(oci_registry), ref, store)
    assert pulled.manifest_digest == digest
    assert store_files(store.root / "objects") == store_files(art / "objects")


def test_ranged_read_from_a_registry_that_is_gone(tmp_path: Path) -> None:
    from tests.oci.registry_fixture import run_registry

    with run_registry(tmp_path / "reg") as running:
        url = running.url
        reg = client(url, limits=ClientLimits(attempts=2, backoff=0.0, read_timeout=5.0))
        data = pushed_blob(reg, tmp_path, "pn/gone", 1000)
        assert read_into(reg, "pn/gone", Digest.of_bytes(data), 0, 10) == data[:10]
    got: list[bytes] = []
    with pytest.raises(TransportError, match=r"connection failed.*after 2 attempt\(s\)"):
        read_range_into(
            reg, "pn/gone", Digest.of_bytes(data), 0, 10, sink=lambda b: got.append(bytes(b))
        )
    assert got == []
