"""Digests on forked processes (scan_tree(processes=N), mkimage --threads): same bytes,
the serial scan's errors, a dead worker's files redone, nothing left running."""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.composefs import app
from powernode.errors import ConfigError, SourceTreeError
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.scan_procs import DigestPool
from powernode.verity.composefs.tree import Node
from powernode.verity.composefs.writer import build_image, image_bytes
from powernode.verity.fsverity import fsverity_digest

from .test_build_fast_paths import make_tree

POLICY = TreePolicy()


def _children() -> set[int]:
    path = Path(f"/proc/self/task/{os.getpid()}/children")
    if not path.exists():
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    return {int(p) for p in path.read_text().split()}


def _many(src: Path, count: int = 150) -> None:
    """Enough files for many batches (32 files or 1 MiB each), of varied sizes."""
    for i in range(count):
        path = src / f"m{i % 4}" / f"{i:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(60 + i * 301))


@pytest.mark.parametrize("processes", [2, 3])
def test_same_image_as_serial_scan(tmp_path: Path, processes: int) -> None:
    src = tmp_path / "src"
    make_tree(src)  # inline, one-block, multi-block, streamed (> 1 MiB), duplicates
    _many(src)
    before = _children()
    serial = scan_tree(src, policy=POLICY)
    forked = scan_tree(src, policy=POLICY, processes=processes)
    assert image_bytes(forked) == image_bytes(serial)
    assert [(p, n.source, n.digest) for p, n in forked.walk()] == [
        (p, n.source, n.digest) for p, n in serial.walk()
    ]
    assert _children() == before


def test_build_image_with_store_ignores_processes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    plain = build_image(src, tmp_path / "a.cfs", policy=POLICY)
    stored = build_image(
        src, tmp_path / "b.cfs", digest_store=tmp_path / "store", policy=POLICY, processes=2
    )
    assert (tmp_path / "a.cfs").read_bytes() == (tmp_path / "b.cfs").read_bytes()
    assert plain.digest == stored.digest
    assert len(stored.objects) == len({d for d in files.values() if len(d) > 64})


def test_unreadable_file_fails_like_the_serial_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers (forked with the patched os.open) leave the file unanswered; this
    process reads it again and raises the serial scan's error, naming the path."""
    src, out = tmp_path / "src", tmp_path / "out"
    out.mkdir()
    _many(src)
    real_open = os.open
    bad = {b"/m1/041", b"/m3/147"}

    def failing_open(path: object, *args: object, **kw: object) -> int:
        if any(os.fsencode(path).endswith(b) for b in bad):  # type: ignore[arg-type]
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return int(real_open(path, *args, **kw))  # type: ignore[arg-type]

    before = _children()
    monkeypatch.setattr(os, "open", failing_open)
    messages = []
    for processes in (0, 2, 3):
        with pytest.raises(SourceTreeError, match=r"cannot read file: Input/output error") as e:
            build_image(src, out / "img.cfs", policy=POLICY, processes=processes)
        messages.append(str(e.value))
    monkeypatch.undo()
    assert len(set(messages)) == 1, messages
    assert "/m3/147: " in messages[0]  # the walk pops the last directory first
    assert list(out.iterdir()) == []
    assert _children() == before


def test_policy_error_during_walk_stops_workers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _many(src)
    (src / "m2" / "suid").write_bytes(b"s" * 100)
    os.chmod(src / "m2" / "suid", 0o4755)  # noqa: S103 - the point of the test
    before = _children()
    with pytest.raises(SourceTreeError, match=r"m2/suid: is setuid/setgid"):
        scan_tree(src, policy=POLICY, processes=2)
    assert _children() == before


def test_changed_file_is_read_again_here(tmp_path: Path) -> None:
    """A file that changed after the walk's lstat: the worker refuses it and the
    caller's reader gets it; the other files get their digests."""
    paths = []
    for i in range(70):  # three batches
        path = tmp_path / f"f{i:02d}"
        path.write_bytes(b"%02d" % i * 50)
        paths.append(path)
    stats = [p.lstat() for p in paths]
    paths[40].write_bytes(b"changed" * 100)
    read_again: list[bytes] = []
    digests: dict[bytes, bytes] = {}
    with DigestPool(2) as pool:
        for path, st in zip(paths, stats, strict=True):
            pool.add(os.fsencode(path), st, Node(mode=st.st_mode))
        pool.finish(
            lambda p, st, node: read_again.append(p),
            lambda p, node, digest: digests.__setitem__(p, digest),
        )
    assert read_again == [os.fsencode(paths[40])]
    assert len(digests) == 69
    for i in (0, 39, 41, 69):
        assert digests[os.fsencode(paths[i])] == fsverity_digest(b"%02d" % i * 50)


def test_dead_worker_files_are_done_here(tmp_path: Path) -> None:
    paths = []
    for i in range(100):
        path = tmp_path / f"f{i:03d}"
        path.write_bytes(os.urandom(100 + i))
        paths.append(path)
    before = _children()
    digests: dict[bytes, bytes] = {}
    with DigestPool(3) as pool:
        workers = _children() - before
        assert len(workers) == 2
        os.kill(min(workers), signal.SIGKILL)
        for path in paths:
            st = path.lstat()
            pool.add(os.fsencode(path), st, Node(mode=st.st_mode))
        pool.finish(
            lambda p, st, node: pytest.fail(f"{p!r} was not digested"),
            lambda p, node, digest: digests.__setitem__(p, digest),
        )
    assert digests == {os.fsencode(p): fsverity_digest(p.read_bytes()) for p in paths}
    assert _children() == before


@pytest.mark.parametrize("processes", [-1, 65, True])
def test_bad_process_count(tmp_path: Path, processes: int) -> None:
    with pytest.raises(ConfigError, match="processes must be an integer from 0 to 64"):
        scan_tree(tmp_path, policy=POLICY, processes=processes)


def _mkimage(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["mkimage", *args])
    return result.exit_code, result.stdout, result.stderr


def test_mkimage_threads_give_identical_images(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    _many(src)
    images = []
    for extra in ([], ["--threads", "1"], ["--threads", "2"], ["--threads", "4"]):
        img = tmp_path / f"img{len(images)}.cfs"
        code, out, err = _mkimage(*extra, "--print-digest", str(src), str(img))
        assert code == 0, err
        assert out.strip() == fsverity_digest(img.read_bytes()).hex()
        images.append(img.read_bytes())
    store = tmp_path / "store"
    stored = tmp_path / "stored.cfs"
    code, _, err = _mkimage("--threads", "2", "--digest-store", str(store), str(src), str(stored))
    assert code == 0, err
    assert all(i == images[0] for i in images)
    assert stored.read_bytes() == images[0]


@pytest.mark.parametrize("value", ["0", "65", "-2"])
def test_mkimage_bad_threads(tmp_path: Path, value: str) -> None:
    img = tmp_path / "img.cfs"
    code, _, err = _mkimage("--threads", value, str(tmp_path), str(img))
    assert code == 2
    assert f"--threads must be from 1 to 64, not {value}" in err
    assert not img.exists()


def test_no_fork_while_other_threads_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    _many(src, 40)
    serial = image_bytes(scan_tree(src, policy=POLICY))
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(30,))
    other.start()
    try:

        def no_fork() -> int:
            raise AssertionError("forked while another thread runs")

        monkeypatch.setattr(os, "fork", no_fork)
        assert image_bytes(scan_tree(src, policy=POLICY, processes=2)) == serial
    finally:
        release.set()
        other.join()
