"""build_image / write_tree: atomic image writes and the digest store (COMPOSEFS.md §12)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from powernode.errors import SourceTreeError
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.writer import ImageResult, build_image, write_tree
from powernode.verity.fsverity import fsverity_digest
from tests.conftest import require_root

from .vectors import VECTORS, vector_b

HUNDRED = "2a/a7269baa451a6a9de06bd75d2657b4be63d3be65a9e09fb5beee8ed7f26dd4"
BIG = "ee/5c6c394f62599b2319d546c14a0bf89774b4633bee8b49f26be53b52d0ff3c"


def _leftovers(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.name.startswith(".")]


def test_build_image_writes_vector_b_and_its_objects(tmp_path: Path) -> None:
    require_root()
    src, img, store = tmp_path / "B", tmp_path / "out" / "b.cfs", tmp_path / "store"
    vector_b(src)
    img.parent.mkdir()
    result = build_image(src, img, digest_store=store)
    assert isinstance(result, ImageResult)
    assert result.digest == VECTORS["B"][1] == fsverity_digest(img.read_bytes()).hex()
    assert result.size == img.stat().st_size == 16384
    assert stat.S_IMODE(img.stat().st_mode) == 0o644
    assert [o.name for o in result.objects] == [HUNDRED, BIG]
    assert [o.size for o in result.objects] == [100, 5000]
    assert result.objects[0].source == src / "hundred"
    assert (store / HUNDRED).read_bytes() == b"a" * 100
    assert (store / BIG).read_bytes() == b"b" * 5000
    assert stat.S_IMODE((store / BIG).stat().st_mode) == 0o644
    assert stat.S_IMODE((store / "ee").stat().st_mode) == 0o755
    assert sorted(p.name for p in store.iterdir()) == ["2a", "ee"]  # inline files: no object
    assert _leftovers(store, img.parent) == []


def test_existing_objects_are_left_alone(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    (src / "f").write_bytes(b"a" * 100)
    (store / "2a").mkdir(parents=True)
    (store / HUNDRED).write_bytes(b"already here")
    result = build_image(src, None, digest_store=store)
    assert [o.name for o in result.objects] == [HUNDRED]
    assert (store / HUNDRED).read_bytes() == b"already here"


def test_print_digest_only_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    before = sorted(tmp_path.rglob("*"))
    result = build_image(tmp_path / "src", None)
    assert len(result.digest) == 64 and result.size % 4096 == 0
    assert sorted(tmp_path.rglob("*")) == before


def test_failed_scan_leaves_existing_image_untouched(tmp_path: Path) -> None:
    src, img = tmp_path / "src", tmp_path / "img.cfs"
    src.mkdir()
    (src / "su").write_bytes(b"x")
    os.chmod(src / "su", 0o4755)  # noqa: S103
    img.write_bytes(b"old image")
    with pytest.raises(SourceTreeError, match=r"allow\.setuid"):
        build_image(src, img, digest_store=tmp_path / "store")
    assert img.read_bytes() == b"old image"
    assert not (tmp_path / "store").exists()
    assert _leftovers(tmp_path) == []


def test_image_path_that_is_a_directory_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "img").mkdir()
    with pytest.raises(SourceTreeError, match=r"/img: is a directory"):
        build_image(tmp_path / "src", tmp_path / "img")
    assert list((tmp_path / "img").iterdir()) == [] and _leftovers(tmp_path) == []


def test_missing_image_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(SourceTreeError, match=r"/no/such/img.cfs: cannot create the image"):
        build_image(tmp_path / "src", tmp_path / "no" / "such" / "img.cfs")


def test_source_changed_after_scan_is_caught_when_copying(tmp_path: Path) -> None:
    src, img, store = tmp_path / "src", tmp_path / "img.cfs", tmp_path / "store"
    src.mkdir()
    (src / "f").write_bytes(b"a" * 100)
    tree = scan_tree(src, policy=TreePolicy())
    (src / "f").write_bytes(b"b" * 100)  # same size, different content
    with pytest.raises(SourceTreeError, match=r"/f: content changed since it was scanned"):
        write_tree(tree, img, digest_store=store)
    assert not img.exists()
    assert not (store / HUNDRED).exists()
    assert _leftovers(store) == []
