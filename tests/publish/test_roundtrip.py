"""Push → pull → verify round trips, on an image layout and on a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powernode.oci.distribution import DistributionRegistry
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.oci.registry import Registry
from powernode.publish import ModuleStore, pull_artifact, push_artifact
from powernode.publish.format import (
    ARTIFACT_TYPE,
    COMPOSEFS_ANNOTATION,
    IMAGE_TYPE,
    INDEX_TYPE,
    PACK_TYPE,
    SBOM_TYPE,
)
from powernode.verity.fsverity import fsverity_digest_file
from tests.oci.registry_fixture import RunningRegistry
from tests.publish.artifacts import make_artifact, small_files, store_files


def check_pulled(store: ModuleStore, artifact: Path) -> None:
    objects = sorted(
        str(p.relative_to(artifact / "objects"))
        for p in (artifact / "objects").rglob("*")
        if p.is_file()
    )
    assert store_files(store.root / "objects") == objects
    for name in objects:
        assert (store.root / "objects" / name).read_bytes() == (
            artifact / "objects" / name
        ).read_bytes()
    assert store.partials() == []


def test_layout_round_trip(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", small_files())
    reg = LayoutRegistry(tmp_path / "layout")
    ref = parse_reference("modules/demo:1.0.0")
    digest = push_artifact(reg, ref, art)
    store = ModuleStore(tmp_path / "state")
    pulled = pull_artifact(reg, ref, store)
    assert pulled.manifest_digest == digest
    assert pulled.image.read_bytes() == (art / "image.cfs").read_bytes()
    assert pulled.image == store.images_dir / f"{pulled.composefs_digest.hex}.cfs"
    assert pulled.config == json.loads((art / "module.json").read_bytes())
    assert pulled.objects_fetched == 6 and pulled.objects_reused == 0
    check_pulled(store, art)
    again = pull_artifact(reg, ref, store)
    assert (again.objects_fetched, again.objects_reused, again.bytes_downloaded) == (0, 6, 0)


def test_manifest_shape(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", small_files())
    reg = LayoutRegistry(tmp_path / "layout")
    ref = parse_reference("modules/demo:1.0.0")
    push_artifact(reg, ref, art)
    doc = json.loads(reg.get_manifest(ref).data)
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert [layer["mediaType"] for layer in doc["layers"]] == [
        IMAGE_TYPE,
        INDEX_TYPE,
        PACK_TYPE,
        SBOM_TYPE,
    ]
    cfs = "sha256:" + fsverity_digest_file(art / "image.cfs").hex()
    assert doc["annotations"][COMPOSEFS_ANNOTATION] == cfs
    assert doc["layers"][0]["annotations"][COMPOSEFS_ANNOTATION] == cfs
    assert doc["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


def test_push_is_reproducible(tmp_path: Path) -> None:
    files = small_files()
    a = make_artifact(tmp_path / "a", files)
    b = make_artifact(tmp_path / "b", files)
    ref = parse_reference("modules/demo:1.0.0")
    da = push_artifact(LayoutRegistry(tmp_path / "l1"), ref, a)
    db = push_artifact(LayoutRegistry(tmp_path / "l2"), ref, b)
    assert da == db


@pytest.mark.registry
def test_registry_round_trip_and_shared_objects(
    tmp_path: Path, oci_registry: RunningRegistry
) -> None:
    with DistributionRegistry(oci_registry.url) as reg:
        _shared_objects(tmp_path, reg)


def _shared_objects(tmp_path: Path, reg: Registry) -> None:
    shared = small_files("s", count=9)
    one = make_artifact(tmp_path / "one", {**shared, "x/one.bin": b"1" * 7000}, name="one")
    two = make_artifact(tmp_path / "two", {**shared, "x/two.bin": b"2" * 7000}, name="two")
    r1 = parse_reference("rt/one:1.0.0")
    r2 = parse_reference("rt/two:1.0.0")
    push_artifact(reg, r1, one)
    push_artifact(reg, r2, two)
    store = ModuleStore(tmp_path / "state")
    first = pull_artifact(reg, r1, store)
    assert (first.objects_fetched, first.objects_reused) == (10, 0)
    second = pull_artifact(reg, r2, store)
    assert (second.objects_fetched, second.objects_reused) == (1, 9)
    assert second.bytes_downloaded == 7000  # a Range request for the one new object
    assert store.partials() == []
