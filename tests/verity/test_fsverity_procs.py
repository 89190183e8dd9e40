"""Level 0 on forked worker processes: the same digest, errors named, nothing left running."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import signal
import threading
from pathlib import Path

import pytest

from powernode.errors import ConfigError
from powernode.verity.fsverity import (
    PROCESS_MIN_SIZE,
    VerityFileError,
    fsverity_digest,
    fsverity_digest_file,
)
from powernode.verity.fsverity_procs import (
    TASK_SIZE,
    Level0Failure,
    fork_is_safe,
    level0_in_processes,
)
from powernode.verity.fsverity_tree import verity_params


def _children() -> set[int]:
    """Live children of this (main) thread, from /proc."""
    path = Path(f"/proc/self/task/{os.getpid()}/children")
    if not path.exists():
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    return {int(p) for p in path.read_text().split()}


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not a secret


@pytest.mark.parametrize(
    "size",
    [1, 4097, TASK_SIZE, TASK_SIZE + 1, 2 * TASK_SIZE + 4096 * 3 + 11],
    ids=["one", "4097", "task", "task+1", "2tasks+"],
)
def test_processes_agree_with_one_pass(tmp_path: Path, size: int) -> None:
    data = _data(size, 11)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = fsverity_digest(data)
    before = _children()
    for processes in (1, 2, 3, 8):
        assert fsverity_digest_file(path, processes=processes) == expected, processes
    for algorithm, block_size, salt in [("sha512", 1024, b"s"), ("sha256", 65536, b"x" * 32)]:
        got = fsverity_digest_file(
            path, algorithm=algorithm, block_size=block_size, salt=salt, processes=2
        )
        assert got == fsverity_digest(data, algorithm=algorithm, block_size=block_size, salt=salt)
    assert _children() == before  # every worker reaped


def test_default_forks_for_large_files_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable CPU: the default is one process")
    big = tmp_path / "big"
    with big.open("wb") as f:  # sparse: reads as zeros, costs no disk
        f.truncate(PROCESS_MIN_SIZE)
    small = tmp_path / "small"
    small.write_bytes(b"z" * 5000)
    caplog.set_level(logging.DEBUG, logger="powernode.verity.fsverity")
    zeros = fsverity_digest(bytes(PROCESS_MIN_SIZE))
    # Forks only while this process runs one thread: under the whole suite an
    # earlier test's server thread may still be alive; then the default is threads.
    single = fork_is_safe()
    assert fsverity_digest_file(big) == zeros
    assert ("processes" in caplog.text) is single
    assert ("thread(s)" in caplog.text) is not single
    caplog.clear()
    assert fsverity_digest_file(big, threads=1) == zeros  # an explicit thread count: no fork
    assert "1 thread(s)" in caplog.text
    caplog.clear()
    assert fsverity_digest_file(small) == fsverity_digest(b"z" * 5000)
    assert "processes" not in caplog.text


@pytest.mark.parametrize("processes", [0, -1, 65, 1.5, True])
def test_bad_process_count(tmp_path: Path, processes: object) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with pytest.raises(ConfigError, match="processes must be an integer from 1 to 64"):
        fsverity_digest_file(path, processes=processes)  # type: ignore[arg-type]


def test_file_shorter_than_its_size_is_named(tmp_path: Path) -> None:
    # As if the file shrank after fstat(): the worker meets EOF early.
    path = tmp_path / "f"
    path.write_bytes(b"q" * (TASK_SIZE + 5000))
    fd = os.open(path, os.O_RDONLY)
    before = _children()
    try:
        results = level0_in_processes(fd, verity_params(), 3 * TASK_SIZE, 2)
        with contextlib.closing(results), pytest.raises(Level0Failure) as info:
            list(results)
    finally:
        os.close(fd)
    assert (info.value.kind, info.value.offset) == ("ended", TASK_SIZE + 5000)
    assert _children() == before


def test_shrinking_file_raises_verity_file_error(tmp_path: Path) -> None:
    from powernode.verity.fsverity import _from_processes

    path = tmp_path / "f"
    path.write_bytes(b"q" * 10000)
    fd = os.open(path, os.O_RDONLY)
    try:
        results = _from_processes(fd, str(path), verity_params(), 20000, 2)
        with contextlib.closing(results), pytest.raises(VerityFileError) as info:
            list(results)
    finally:
        os.close(fd)
    assert str(info.value) == (
        f"{path}: file changed while being hashed (ended at offset 10000); "
        "hash it again once nothing is writing to it"
    )


def test_worker_killed_fails_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as f:
        f.truncate(6 * TASK_SIZE)
    fd = os.open(path, os.O_RDONLY)
    before = _children()
    try:
        results = level0_in_processes(fd, verity_params(), 6 * TASK_SIZE, 1)
        with contextlib.closing(results):
            hashes, length = next(results)
            block = hashlib.sha256(bytes(4096)).digest()
            assert (hashes, length) == (block * (TASK_SIZE // 4096), TASK_SIZE)
            for pid in _children() - before:
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(Level0Failure) as info:
                list(results)
    finally:
        os.close(fd)
    assert info.value.kind == "died"
    assert _children() == before


def test_closing_early_reaps_workers(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as f:
        f.truncate(5 * TASK_SIZE)
    fd = os.open(path, os.O_RDONLY)
    before = _children()
    try:
        results = level0_in_processes(fd, verity_params(), 5 * TASK_SIZE, 2)
        next(results)
        assert len(_children() - before) == 2
        results.close()
    finally:
        os.close(fd)
    assert _children() == before


def test_no_fork_while_other_threads_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork copies only the calling thread: a lock another thread holds (OpenSSL's,
    logging's) would stay locked in the child. With other threads running, the
    digest stays in this process (on threads)."""
    data = _data(TASK_SIZE + 3000, 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(30,))
    other.start()
    try:

        def no_fork() -> int:
            raise AssertionError("forked while another thread runs")

        monkeypatch.setattr(os, "fork", no_fork)
        assert fsverity_digest_file(path, processes=2) == fsverity_digest(data)
    finally:
        release.set()
        other.join()
