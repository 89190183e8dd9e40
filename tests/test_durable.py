"""powernode.durable (the one atomic write) and powernode.linux (calls raising typed errors)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from powernode import durable, linux
from powernode.errors import MountCallError, MountError, PowernodeError, SyscallError


def test_write_bytes_sets_the_mode_whatever_the_umask_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    old = os.umask(0o077)
    try:
        durable.write_bytes(target, b"one", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    durable.write_bytes(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_an_error_inside_the_block_keeps_the_old_file_and_removes_the_temp(
    tmp_path: Path,
) -> None:
    target = tmp_path / "state.json"
    durable.write_text(target, "old")
    with pytest.raises(RuntimeError, match="midway"), durable.atomic_file(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("midway")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_temp_prefix_names_the_leftover_a_sweep_looks_for(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    seen: list[str] = []
    with durable.atomic_file(target, temp_prefix=".partial-") as f:
        seen = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    assert len(seen) == 1 and seen[0].startswith(".partial-")
    assert target.read_bytes() == b"x"


def test_write_json_is_canonical(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    durable.write_json(target, {"b": [1, None], "a": {"z": True}})
    assert target.read_bytes() == b'{"a":{"z":true},"b":[1,null]}'
    assert json.loads(target.read_bytes()) == {"a": {"z": True}, "b": [1, None]}


def test_write_into_a_missing_directory_fails_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durable.write_bytes(tmp_path / "absent" / "f", b"x")
    assert list(tmp_path.iterdir()) == []


def test_create_once_keeps_the_first_writer(tmp_path: Path) -> None:
    target = tmp_path / "id"
    assert durable.create_once(target, b"first", mode=0o600)
    assert not durable.create_once(target, b"second")
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["id"]


def test_fsync_dir_and_syncfs_run_here(tmp_path: Path) -> None:
    durable.fsync_dir(tmp_path)
    durable.syncfs(tmp_path)
    with pytest.raises(NotADirectoryError):
        durable.fsync_dir(Path("/dev/null"))


def test_libc_is_loaded_once() -> None:
    assert linux.libc() is linux.libc()


def test_a_failed_syscall_carries_its_name_and_errno() -> None:
    with pytest.raises(SyscallError) as caught:
        linux.syncfs(-1)
    e = caught.value
    assert (e.call, e.errno) == ("syncfs", errno.EBADF)
    assert isinstance(e, OSError) and isinstance(e, PowernodeError)
    assert str(e) == "syncfs: EBADF: Bad file descriptor"
    again = pickle.loads(pickle.dumps(e))  # noqa: S301 - our own bytes, across a process
    assert (type(again), again.call, again.errno, str(again)) == (
        SyscallError,
        "syncfs",
        errno.EBADF,
        str(e),
    )


def test_a_failed_mount_call_is_a_mount_error(tmp_path: Path) -> None:
    with pytest.raises(MountCallError) as caught:
        linux.move_mount(tmp_path / "absent", tmp_path / "also-absent")
    e = caught.value
    assert isinstance(e, MountError) and isinstance(e, SyscallError)
    assert e.call == "move_mount"
    assert e.errno in (errno.ENOENT, errno.EPERM, errno.ENOSYS)
    assert str(e).startswith(f"move_mount {tmp_path}/absent -> {tmp_path}/also-absent: ")


def test_fs_verity_ioctls_raise_with_their_request_named(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"data")
    fd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(SyscallError, match="FS_IOC_MEASURE_VERITY") as caught:
            linux.measure_verity(fd)  # not enabled (ENODATA) or not supported here
        assert caught.value.call == "ioctl"
        assert caught.value.errno in (errno.ENODATA, errno.ENOTTY, errno.EOPNOTSUPP)
    finally:
        os.close(fd)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:  # a directory: EISDIR where fs-verity exists, ENOTTY/EOPNOTSUPP where not
        with pytest.raises(SyscallError, match="FS_IOC_ENABLE_VERITY"):
            linux.enable_verity(fd)
    finally:
        os.close(fd)
