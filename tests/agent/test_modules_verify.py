"""`verify <path>` verdicts, the store's checked writes and the small-object digest path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.agent.modules import NodeLayout, attach, verify_path
from powernode.agent.modules.integrity import object_digest_fd
from powernode.errors import ConfigError, DataError, DigestMismatchError
from powernode.node.store import ModuleStore, image_digest
from powernode.verity.fsverity import fsverity_digest
from tests.agent.test_modules_support import big, build_artifact, build_module, layout

__all__ = ["layout"]


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[3] ^= 0x10
    path.write_bytes(bytes(data))


def test_artifact_directory_verdict_ok(tmp_path: Path) -> None:
    art = build_artifact(tmp_path, "chrony", {"etc/chrony.conf": big("c"), "usr/sbin/c": big("d")})
    v = verify_path(art)
    assert (v.ok, v.exit_code, v.kind, v.objects) == (True, 0, "artifact", 2)
    assert v.modules[0][0] == "chrony"
    assert "not checked here" in v.signature


def test_artifact_with_a_flipped_object_fails_with_the_path(tmp_path: Path) -> None:
    art = build_artifact(tmp_path, "chrony", {"etc/chrony.conf": big("c")})
    (obj,) = (art / "objects").glob("*/*")
    flip(obj)
    v = verify_path(art)
    assert (v.ok, v.exit_code) == (False, 1)
    assert [(r.reason, r.path) for r in v.refusals] == [("object-digest", str(obj))]


def test_artifact_with_a_flipped_image_fails(tmp_path: Path) -> None:
    art = build_artifact(tmp_path, "chrony", {"etc/chrony.conf": big("c")})
    flip(art / "image.cfs")
    v = verify_path(art)
    assert [r.reason for r in v.refusals] == ["image-digest"]


def test_artifact_with_a_bad_module_json_names_the_field(tmp_path: Path) -> None:
    art = build_artifact(tmp_path, "chrony", {"etc/chrony.conf": big("c")})
    (art / "module.json").write_text('{"name": "x", "version": "1", "composefs_digest": "md5:1"}')
    with pytest.raises(DataError, match=r"module.json: composefs_digest: invalid digest 'md5:1'"):
        verify_path(art)


def test_unknown_path_says_what_it_accepts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an artifact directory"):
        verify_path(tmp_path)


def test_store_image_is_verified_against_its_name(layout: NodeLayout) -> None:
    spec = build_module(layout, "base", {"etc/a": big("a")})
    v = verify_path(layout.store.image_path(spec.composefs))
    assert (v.ok, v.kind, v.modules) == (True, "image", ((spec.digest[7:], spec.digest),))


@pytest.mark.mount
def test_node_root_and_layer_verdicts(layout: NodeLayout) -> None:
    base = build_module(layout, "base", {"etc/a": big("a")}, priority=1)
    app = build_module(layout, "app", {"opt/b": big("b")}, priority=2)
    attach(layout, base)
    attach(layout, app)
    v = verify_path(layout.root, layout)
    assert (v.ok, v.kind, [m for m, _ in v.modules]) == (True, "union", ["app", "base"])
    layer = layout.run_dir / "gen-2" / "layers" / "app"
    assert verify_path(layer, layout).modules == (("app", app.digest),)
    obj = next((layout.store.objects_dir).glob("*/*"))
    os.chmod(obj, 0o644)
    flip(obj)
    bad = verify_path(layout.root, layout)
    assert bad.exit_code == 1 and bad.refusals[0].reason == "object-digest"


def test_put_image_refuses_bytes_that_do_not_match_and_leaves_nothing(tmp_path: Path) -> None:
    store = ModuleStore(tmp_path)
    digest = "sha256:" + fsverity_digest(b"right").hex()
    with pytest.raises(DigestMismatchError, match="digest mismatch"):
        store.put_image(b"wrong", image_digest(digest))
    assert list((tmp_path / "images").iterdir()) == []
    store.put_image(b"right", image_digest(digest))
    assert store.has_image(image_digest(digest))


def test_put_object_refuses_content_not_matching_its_name(tmp_path: Path) -> None:
    store = ModuleStore(tmp_path)
    name = fsverity_digest(b"x" * 100).hex()
    name = f"{name[:2]}/{name[2:]}"
    with pytest.raises(DigestMismatchError):
        store.put_object(name, b"y" * 100)
    assert not store.has_object(name)
    assert [p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


def test_import_artifact_files_image_and_objects(tmp_path: Path) -> None:
    art = build_artifact(tmp_path, "chrony", {"etc/chrony.conf": big("c"), "a": big("e")})
    store = ModuleStore(tmp_path / "state")
    info = store.import_artifact(art)
    assert (info.name, info.objects) == ("chrony", 2)
    assert store.has_image(info.digest)
    assert verify_path(store.image_path(info.digest)).ok


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3 * 4096 + 7))
def test_small_object_digest_equals_the_reference(data: bytes) -> None:
    fd = os.memfd_create("obj")
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        assert object_digest_fd(fd, len(data), Path("mem")) == fsverity_digest(data).hex()
    finally:
        os.close(fd)
