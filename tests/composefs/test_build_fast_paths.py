"""The fast build paths: the scan staging objects as it reads (each file read once),
contents hashed on threads beside the walk, objects published with syncfs.

Each must give exactly what the plain path gives (scan, then write_tree copying
the objects), and fail the same clean way: nothing left in the store or beside
the image.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from powernode.errors import ConfigError, SourceTreeError
from powernode.verity.composefs import objects as objects_mod
from powernode.verity.composefs.objects import ObjectStager
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.writer import build_image, image_bytes, write_tree
from powernode.verity.fsverity import fsverity_digest
from powernode.verity.objectstore import ObjectStore, object_name

from .test_scan_badinput import snapshot

POLICY = TreePolicy()
BIG = 3 * (1 << 20) + 123  # over the 1 MiB single-read limit: streamed in chunks


def make_tree(src: Path) -> dict[str, bytes]:
    """Inline, one-block, multi-block and streamed files, duplicates, empty, nested dirs."""
    files = {
        "empty": b"",
        "inline": b"i" * 64,
        "one": b"o" * 65,
        "block": b"b" * 4096,
        "multi": os.urandom(70_000),
        "dup1": b"d" * 9000,
        "sub/dup2": b"d" * 9000,  # same content: one object
        "sub/deep/big": b"B" * BIG,
        "sub/deep/big2": b"B" * BIG,  # a streamed duplicate
        "sub/deep/odd": os.urandom(BIG),
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return files


def reference(src: Path, tmp: Path) -> tuple[bytes, dict[str, bytes]]:
    """Image bytes and store contents from the plain path (serial scan, then copy)."""
    tree = scan_tree(src, policy=POLICY, threads=0)
    store = tmp / "ref-store"
    write_tree(tree, tmp / "ref.cfs", digest_store=store)
    return (tmp / "ref.cfs").read_bytes(), store_files(store)


def store_files(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("threads", [0, 1, 4])
def test_staged_build_equals_plain_path(tmp_path: Path, threads: int) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    ref_image, ref_store = reference(src, tmp_path)
    out, store = tmp_path / "out", tmp_path / "store"
    out.mkdir()
    result = build_image(src, out / "img.cfs", digest_store=store, policy=POLICY, threads=threads)
    assert (out / "img.cfs").read_bytes() == ref_image
    assert result.digest == fsverity_digest(ref_image).hex()
    assert store_files(store) == ref_store
    # one object per distinct non-inline content, each named by its digest
    distinct = {d for d in files.values() if len(d) > 64}
    assert len(result.objects) == len(ref_store) == len(distinct)
    assert ObjectStore(store).verify_all(o.name for o in result.objects) == len(distinct)
    assert [p.name for p in store.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("threads", [1, 3])
def test_threaded_scan_gives_the_same_tree(tmp_path: Path, threads: int) -> None:
    src = tmp_path / "src"
    make_tree(src)
    for i in range(200):  # enough files that workers finish out of order
        (src / "many" / f"{i:03d}").parent.mkdir(exist_ok=True)
        (src / "many" / f"{i:03d}").write_bytes(os.urandom(100 + i * 37))
    serial = scan_tree(src, policy=POLICY, threads=0)
    threaded = scan_tree(src, policy=POLICY, threads=threads)
    assert image_bytes(threaded) == image_bytes(serial)
    assert [(p, n.source) for p, n in threaded.walk()] == [(p, n.source) for p, n in serial.walk()]


def test_existing_object_is_not_rewritten_even_when_streamed(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    data = b"B" * BIG
    (src / "big").write_bytes(data)
    name = object_name(fsverity_digest(data).hex())
    (store / name).parent.mkdir(parents=True)
    (store / name).write_bytes(data)
    before = (store / name).stat()
    result = build_image(src, None, digest_store=store, threads=2)
    assert [o.name for o in result.objects] == [name]
    after = (store / name).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in store.iterdir()) == [name[:2]]  # no temporary left


def test_first_failure_in_walk_order_is_reported_and_nothing_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers fail out of order; the error is the one the serial scan meets first (the
    same whatever the thread count), and the objects other workers staged meanwhile are
    removed."""
    src, store, out = tmp_path / "src", tmp_path / "store", tmp_path / "out"
    out.mkdir()
    for i in range(60):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i:02d}").write_bytes(b"%02d" % i * 3000)
    store.mkdir()
    before = snapshot(store)
    real_open = os.open
    bad = {b"/d0/f33", b"/d2/f59"}

    def failing_open(path: object, *args: object, **kw: object) -> int:
        if any(os.fsencode(path).endswith(b) for b in bad):  # type: ignore[arg-type]
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return int(real_open(path, *args, **kw))  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)
    messages = []
    for threads in (0, 4, 4, 4):
        with pytest.raises(SourceTreeError, match=r"cannot read file: Input/output error") as e:
            build_image(src, out / "img.cfs", digest_store=store, threads=threads)
        messages.append(str(e.value))
    monkeypatch.undo()
    assert len(set(messages)) == 1
    assert "/d2/f59: " in messages[0]  # the walk pops the last directory first
    assert list(out.iterdir()) == []
    assert snapshot(store) == before


def test_publish_without_syncfs_fsyncs_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the C library has no syncfs(2), every object and directory is fsynced."""
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"%d" % i * 5000)
    synced: list[bytes] = []
    monkeypatch.setattr(objects_mod, "_syncfs", lambda fd: False)
    real = objects_mod._fsync_path

    def recording(path: bytes) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(objects_mod, "_fsync_path", recording)
    result = build_image(src, None, digest_store=store)
    names = {o.name[:2].encode() for o in result.objects}
    assert len(result.objects) == 5
    assert sum(b"/.tmp-" in p for p in synced) == 5  # each object, before its rename
    assert {os.path.basename(p) for p in synced if b"/.tmp-" not in p} == names  # its dir


def test_syncfs_error_is_a_store_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 5000)

    def broken(fd: int) -> bool:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(objects_mod, "_syncfs", broken)
    with pytest.raises(SourceTreeError, match=rf"^{store}: cannot write to the digest store: "):
        build_image(src, tmp_path / "img.cfs", digest_store=store)
    assert not store.exists()  # created by this build, removed again
    assert not (tmp_path / "img.cfs").exists()


def test_stager_abort_removes_temporaries_and_created_dirs(tmp_path: Path) -> None:
    store = tmp_path / "a" / "store"
    stager = ObjectStager(store)
    name = b"ab/" + b"c" * 62
    assert stager.claim(name)
    assert not stager.claim(name)  # a second file with the same content writes nothing
    stager.write(name, b"data")
    fd, tmp = stager.temp()
    os.close(fd)
    assert len(list(store.iterdir())) == 2
    stager.abort()
    assert not (tmp_path / "a").exists()
    assert not os.path.exists(tmp)


@pytest.mark.parametrize("threads", [-1, 65, True])
def test_bad_thread_count(tmp_path: Path, threads: int) -> None:
    with pytest.raises(ConfigError, match="threads must be an integer from 0 to 64"):
        scan_tree(tmp_path, policy=POLICY, threads=threads)
