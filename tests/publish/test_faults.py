"""Bad registries and bad bytes: each a clear error, nothing half-written in the store.

Against the real docker-registry, with a misbehaving proxy (faulty.py) in
front of it where the fault is the network's or the server's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powernode.errors import DataError, DigestMismatchError, TransportError
from powernode.oci.digest import Digest
from powernode.oci.distribution import ClientLimits, DistributionRegistry
from powernode.oci.refs import Reference, parse_reference
from powernode.publish import ModuleStore, pull_artifact, push_artifact
from tests.oci.registry_fixture import RunningRegistry
from tests.publish.artifacts import make_artifact, small_files
from tests.publish.faulty import Answer, faulty_registry, is_blob_get

pytestmark = pytest.mark.registry

FAST = ClientLimits(attempts=2, backoff=0.0, read_timeout=1.0, connect_timeout=2.0)


def assert_clean(store: ModuleStore) -> None:
    """No temporaries, no image, and every object that landed matches its name."""
    assert store.partials() == []
    assert list(store.images_dir.glob("*")) == []
    root = store.root / "objects"
    names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    for name in names:
        store.objects.verify(name)


@pytest.fixture
def pushed(
    tmp_path: Path, oci_registry: RunningRegistry, request: pytest.FixtureRequest
) -> Iterator[tuple[Reference, dict[str, object]]]:
    """A unique artifact pushed to its own repository; yields (ref, manifest dict)."""
    tag = request.node.name.lower().replace("[", "-").replace("]", "").replace("_", "-")[:40]
    art = make_artifact(tmp_path / "art", small_files(tag, count=4, size=300_000))
    ref = parse_reference(f"faults/{tag}:1.0.0")
    with DistributionRegistry(oci_registry.url) as reg:
        push_artifact(reg, ref, art)
        yield ref, json.loads(reg.get_manifest(ref).data)


def pull_through(url: str, ref: Reference, store: ModuleStore) -> object:
    with DistributionRegistry(url, limits=FAST, sleep=lambda _: None) as reg:
        return pull_artifact(reg, ref, store)


def layer(manifest: dict[str, object], index: int) -> str:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    return str(layers[index]["digest"])


def test_registry_answers_500(
    tmp_path: Path, oci_registry: RunningRegistry, pushed: tuple[Reference, dict[str, object]]
) -> None:
    ref, manifest = pushed

    def fault(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
        return Answer(500, {}, b"boom") if is_blob_get(method, path, layer(manifest, 2)) else real

    store = ModuleStore(tmp_path / "state")
    with faulty_registry(oci_registry.url, fault) as srv, pytest.raises(TransportError) as e:
        pull_through(srv.url, ref, store)
    assert "HTTP 500" in str(e.value) and "after 2 attempt(s)" in str(e.value)
    assert_clean(store)


@pytest.mark.parametrize("stall", [True, False], ids=["hangs-mid-blob", "truncated"])
def test_body_stops_mid_blob(
    tmp_path: Path,
    oci_registry: RunningRegistry,
    pushed: tuple[Reference, dict[str, object]],
    stall: bool,
) -> None:
    ref, manifest = pushed
    pack = layer(manifest, 2)

    def fault(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
        if is_blob_get(method, path, pack):
            return Answer(real.status, real.headers, real.body, len(real.body) // 2, stall)
        return real

    store = ModuleStore(tmp_path / "state")
    with faulty_registry(oci_registry.url, fault) as srv, pytest.raises(TransportError) as e:
        pull_through(srv.url, ref, store)
    assert pack in str(e.value)
    assert ("stalled" if stall else "cut off") in str(e.value)
    assert "after 2 attempt(s)" in str(e.value)
    assert_clean(store)


@pytest.mark.parametrize("which", [0, 2], ids=["image", "pack"])
def test_registry_serves_other_bytes_for_a_digest(
    tmp_path: Path,
    oci_registry: RunningRegistry,
    pushed: tuple[Reference, dict[str, object]],
    which: int,
) -> None:
    ref, manifest = pushed
    digest = layer(manifest, which)

    def fault(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
        if is_blob_get(method, path, digest):
            return Answer(real.status, real.headers, real.body[::-1])
        return real

    store = ModuleStore(tmp_path / "state")
    with faulty_registry(oci_registry.url, fault) as srv, pytest.raises(DigestMismatchError) as e:
        pull_through(srv.url, ref, store)
    assert "digest mismatch" in str(e.value)
    assert ("object" in str(e.value)) == (which == 2)
    assert_clean(store)


def test_tampered_blob_in_registry_storage(
    tmp_path: Path, oci_registry: RunningRegistry, pushed: tuple[Reference, dict[str, object]]
) -> None:
    ref, manifest = pushed
    data = oci_registry.blob_data(Digest.parse(layer(manifest, 2)))
    raw = bytearray(data.read_bytes())
    raw[400_000] ^= 0xFF  # inside the second object
    data.write_bytes(bytes(raw))
    store = ModuleStore(tmp_path / "state")
    with pytest.raises(DigestMismatchError, match=r"object [0-9a-f]{2}/[0-9a-f]{62} from pack 0"):
        pull_through(oci_registry.url, ref, store)
    assert_clean(store)


def test_manifest_digest_mismatch(
    tmp_path: Path, oci_registry: RunningRegistry, pushed: tuple[Reference, dict[str, object]]
) -> None:
    ref, _ = pushed

    def fault(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
        if method == "GET" and path.endswith("/manifests/1.0.0"):
            doc = json.loads(real.body)
            doc["annotations"]["org.opencontainers.image.version"] = "6.6.6"
            return Answer(real.status, real.headers, json.dumps(doc).encode())
        return real

    store = ModuleStore(tmp_path / "state")
    with faulty_registry(oci_registry.url, fault) as srv, pytest.raises(DigestMismatchError) as e:
        pull_through(srv.url, ref, store)
    assert "manifest" in str(e.value) and "digest mismatch" in str(e.value)
    assert_clean(store)
    assert list((store.root / "blobs").rglob("*.json")) == []


def test_pinned_digest_that_does_not_exist(
    tmp_path: Path, oci_registry: RunningRegistry, pushed: tuple[Reference, dict[str, object]]
) -> None:
    ref, _ = pushed
    wrong = ref.with_digest(Digest.of_bytes(b"not this manifest"))
    store = ModuleStore(tmp_path / "state")
    with pytest.raises(DataError, match="no manifest"):
        pull_through(oci_registry.url, Reference(None, wrong.repository, None, wrong.digest), store)
    assert_clean(store)


def _ignore_range(upstream: str, pack: str, tamper: bool):  # type: ignore[no-untyped-def]
    def fault(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
        if is_blob_get(method, path, pack):
            whole = httpx.get(upstream + path, timeout=30).content
            if tamper:
                whole = whole[:-1] + bytes([whole[-1] ^ 1])
            kept = {k: v for k, v in real.headers.items() if k.lower() != "content-range"}
            return Answer(200, kept, whole)
        return real

    return fault


def test_registry_without_range_falls_back_to_whole_pack(
    tmp_path: Path, oci_registry: RunningRegistry, pushed: tuple[Reference, dict[str, object]]
) -> None:
    ref, manifest = pushed
    pack = layer(manifest, 2)
    store = ModuleStore(tmp_path / "state")
    fault = _ignore_range(oci_registry.url, pack, tamper=False)
    with faulty_registry(oci_registry.url, fault) as srv:
        pulled = pull_through(srv.url, ref, store)
    size = manifest["layers"][2]["size"]  # type: ignore[index]
    assert pulled.bytes_downloaded == size  # type: ignore[attr-defined]
    assert pulled.objects_fetched == 4  # type: ignore[attr-defined]
    assert store.partials() == []


def test_without_range_a_tampered_pack_fails_its_layer_digest(
    tmp_path: Path, oci_registry: RunningRegistry, pushed: tuple[Reference, dict[str, object]]
) -> None:
    ref, manifest = pushed
    pack = layer(manifest, 2)
    store = ModuleStore(tmp_path / "state")
    with (
        faulty_registry(
            oci_registry.url, _ignore_range(oci_registry.url, pack, tamper=True)
        ) as srv,
        pytest.raises(DigestMismatchError) as e,
    ):
        pull_through(srv.url, ref, store)
    assert pack in str(e.value)
    assert_clean(store)
