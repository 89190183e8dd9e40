"""The OCI image-layout backend."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from powernode.errors import ConfigError, DataError, DigestMismatchError, VerificationError
from powernode.oci.cache import BlobCache
from powernode.oci.digest import Digest
from powernode.oci.errors import NotFoundError
from powernode.oci.layout import LayoutRegistry
from powernode.oci.mediatypes import OCI_MANIFEST, REF_NAME_ANNOTATION
from powernode.oci.refs import parse_reference
from powernode.oci.registry import Registry, open_registry
from tests.conftest import require_tool
from tests.oci.helpers import ARTIFACT_TYPE, blob, files_under, manifest_for, push_artifact


def snapshot(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in files_under(root)}


def test_new_layout_files(tmp_path: Path) -> None:
    reg = open_registry(tmp_path / "store")
    assert isinstance(reg, LayoutRegistry)
    assert isinstance(reg, Registry)
    root = tmp_path / "store"
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["manifests"] == [] and index["schemaVersion"] == 2
    assert (root / "blobs" / "sha256").is_dir()


def test_round_trip_tags_and_delete(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "store")
    layers = [blob(10), blob(3_000_000, seed=1)]
    manifest, digest = push_artifact(reg, tmp_path, "mods/base", layers)
    assert reg.push_manifest(parse_reference("mods/base:1.0"), manifest, OCI_MANIFEST) == digest
    reg.push_manifest(parse_reference("mods/base:stable"), manifest, OCI_MANIFEST)
    reg.push_manifest(parse_reference("mods/other:1.0"), manifest, OCI_MANIFEST)
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    names = sorted(d["annotations"][REF_NAME_ANNOTATION] for d in index["manifests"])
    assert names == ["mods/base:1.0", "mods/base:stable", "mods/other:1.0"]
    assert {d["artifactType"] for d in index["manifests"]} == {ARTIFACT_TYPE}
    got = reg.get_manifest(parse_reference("mods/base:stable"))
    assert (got.data, got.media_type, got.digest) == (manifest, OCI_MANIFEST, digest)
    assert reg.list_tags("mods/base") == ["1.0", "stable"]
    cache = BlobCache(tmp_path / "cache")
    for data in layers:
        d = Digest.of_bytes(data)
        assert reg.pull_blob_to("mods/base", d, cache, size=len(data)).read_bytes() == data
    reg.delete_manifest(parse_reference("mods/base:1.0"))
    assert reg.list_tags("mods/base") == []
    # mods/other still names the manifest, so its blob stays.
    assert reg.get_manifest(parse_reference(f"mods/other@{digest}")).data == manifest
    reg.delete_manifest(parse_reference("mods/other:1.0"))
    assert not reg.blob_path(digest).exists()
    with pytest.raises(NotFoundError, match=r"no tag 'mods/other:1\.0'"):
        reg.get_manifest(parse_reference("mods/other:1.0"))


def test_retag_moves_the_tag(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "store")
    m1, _ = push_artifact(reg, tmp_path, "r", [blob(5, seed=1)])
    m2, d2 = push_artifact(reg, tmp_path, "r", [blob(5, seed=2)])
    ref = parse_reference("r:latest")
    reg.push_manifest(ref, m1, OCI_MANIFEST)
    reg.push_manifest(ref, m2, OCI_MANIFEST)
    assert reg.get_manifest(ref).digest == d2
    assert reg.list_tags("r") == ["latest"]


def test_tampered_blob_is_refused_and_nothing_written(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "store")
    data = blob(2_500_000, seed=3)
    push_artifact(reg, tmp_path, "r", [data])
    digest = Digest.of_bytes(data)
    reg.blob_path(digest).write_bytes(data[:-1] + b"\0")
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(DigestMismatchError, match=f"expected {digest}"):
        reg.pull_blob_to("r", digest, cache, size=len(data))
    assert files_under(tmp_path / "cache") == []
    reg.blob_path(digest).write_bytes(data[: len(data) // 2])
    with pytest.raises(VerificationError, match="truncated"):
        reg.pull_blob_to("r", digest, tmp_path / "out.bin", size=len(data))
    assert not (tmp_path / "out.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")] == []


def test_tampered_manifest_blob(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "store")
    manifest, digest = push_artifact(reg, tmp_path, "r", [blob(5)])
    reg.push_manifest(parse_reference("r:v1"), manifest, OCI_MANIFEST)
    reg.blob_path(digest).write_bytes(manifest.replace(b"schemaVersion", b"schemaVersioN"))
    with pytest.raises(DigestMismatchError, match=f"expected {digest}"):
        reg.get_manifest(parse_reference("r:v1"))


def test_bad_pushes_change_nothing(tmp_path: Path) -> None:
    reg = LayoutRegistry(tmp_path / "store")
    manifest, _ = push_artifact(reg, tmp_path, "r", [blob(5)])
    before = snapshot(tmp_path / "store")
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(DigestMismatchError, match=f"manifest for r@{wrong}"):
        reg.push_manifest(parse_reference(f"r@{wrong}"), manifest, OCI_MANIFEST)
    missing = manifest_for(b"{}", [blob(6, seed=9)])
    with pytest.raises(NotFoundError, match=r"references blobs not in .*push them first"):
        reg.push_manifest(parse_reference("r:v1"), missing, OCI_MANIFEST)
    with pytest.raises(DataError, match="not JSON"):
        reg.push_manifest(parse_reference("r:v1"), b"\xff", OCI_MANIFEST)
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    with pytest.raises(DigestMismatchError):
        reg.push_blob("r", src, wrong, 7)
    assert snapshot(tmp_path / "store") == before


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unsupported registry URL 'ftp://x'"):
        open_registry("ftp://x")
    with pytest.raises(NotFoundError, match="not an OCI image layout"):
        LayoutRegistry(tmp_path / "absent", create=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "oci-layout").write_text('{"imageLayoutVersion": "0.9"}')
    with pytest.raises(DataError, match=r"imageLayoutVersion '0\.9' is not supported"):
        LayoutRegistry(tmp_path / "old")


@pytest.mark.tool
def test_skopeo_reads_the_layout(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    reg = LayoutRegistry(tmp_path / "store")
    layer = blob(4096, seed=4)
    manifest, digest = push_artifact(reg, tmp_path, "mods/base", [layer])
    reg.push_manifest(parse_reference("mods/base:1.0"), manifest, OCI_MANIFEST)
    out = tmp_path / "copied"
    proc = subprocess.run(
        [skopeo, "copy", "--preserve-digests",
         f"oci:{tmp_path / 'store'}:mods/base:1.0", f"dir:{out}"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "manifest.json").read_bytes() == manifest
    assert (out / Digest.of_bytes(layer).hex).read_bytes() == layer
    assert Digest.of_bytes((out / "manifest.json").read_bytes()) == digest
