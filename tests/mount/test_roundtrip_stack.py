"""Several composefs modules stacked in priority order with a tmpfs upper
(powernode.mount.compose.stack_modules), mounted for real: the highest priority wins
each path (ties broken by name), directories merge, the images and objects are
never written, and every mount is undone."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.errors import MountError
from powernode.mount.compose import Layer, stack_modules
from powernode.mount.kernel import mountpoints
from powernode.mount.overlay import mount_stack
from powernode.verity.composefs.scan import TreePolicy
from powernode.verity.composefs.writer import build_image
from powernode.verity.fsverity import fsverity_digest

pytestmark = pytest.mark.mount

# name -> (priority, {path: content | "dir" | ("link", target)})
Spec = dict[str, str | bytes | tuple[str, str]]
MODULES: dict[str, tuple[int, Spec]] = {
    "base": (
        10,
        {
            "etc": "dir",
            "etc/os-release": b"base\n",
            "etc/base-only": b"from base\n" * 900,  # external object
            "usr": "dir",
            "usr/lib": "dir",
            "usr/lib/libbase.so": b"B" * 9000,
            "usr/lib/shared.so": b"base shared" * 1000,
            "usr/bin": "dir",
            "usr/bin/tool": b"base tool" * 1000,
            "opt": "dir",
            "opt/inside": b"hidden by top's file",
            "link": ("link", "etc/base-only"),
        },
    ),
    "b-top": (
        50,
        {
            "etc": "dir",
            "etc/os-release": b"b-top\n",
            "usr": "dir",
            "usr/bin": "dir",
            "usr/bin/tool": b"b-top tool" * 1000,
            "usr/lib": "dir",
            "usr/lib/libtop.so": b"T" * 9000,
            "opt": b"a file where base has a directory",
            "link": ("link", "usr/bin/tool"),
        },
    ),
    "a-mid": (  # same priority as b-top: the name decides, "a-mid" is above
        50,
        {
            "etc": "dir",
            "etc/os-release": b"a-mid\n",
            "usr": "dir",
            "usr/lib": "dir",
            "usr/lib/shared.so": b"a-mid shared" * 1000,
        },
    ),
}
DIR_MODES = {"base": 0o755, "b-top": 0o750, "a-mid": 0o711}
ETC_XATTR = {"base": b"base", "b-top": b"b-top", "a-mid": b"a-mid"}


def _make(root: Path, module: str, spec: Spec) -> None:
    root.mkdir()
    for rel, what in spec.items():
        p = root / rel
        if what == "dir":
            p.mkdir()
            os.chmod(p, DIR_MODES[module])
        elif isinstance(what, tuple):
            os.symlink(what[1], p)
        else:
            assert isinstance(what, bytes)
            p.write_bytes(what)
    os.setxattr(root / "etc", "user.module", ETC_XATTR[module])


def _snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def union(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Path]]:
    disk, state = tmp_path / "disk", tmp_path / "state"
    disk.mkdir()
    with mount_stack() as stack:
        ram = stack.tmpfs(tmp_path / "ram", size="256m")
        objects = ram / "objects"
        layers = []
        for name, (priority, spec) in MODULES.items():
            _make(ram / name, name, spec)
            image = disk / f"{name}.cfs"
            build_image(ram / name, image, digest_store=objects, policy=TreePolicy())
            layers.append(Layer(name, image, priority))
        target = stack_modules(stack, layers, objects, tmp_path / "root", state=state)
        yield target, disk, objects, state
    left = [m for m in mountpoints() if m.startswith(str(tmp_path))]
    assert left == [], f"mounts left behind: {left}"


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("etc/os-release", b"a-mid\n"),  # in all three: priority 50 beats 10, a- before b-
        ("usr/lib/shared.so", b"a-mid shared" * 1000),  # a-mid over base
        ("usr/bin/tool", b"b-top tool" * 1000),  # b-top over base
        ("etc/base-only", b"from base\n" * 900),  # only in the lowest: still visible
        ("usr/lib/libbase.so", b"B" * 9000),
        ("usr/lib/libtop.so", b"T" * 9000),
        ("opt", b"a file where base has a directory"),  # a file above hides a directory
    ],
)
def test_highest_priority_wins_each_path(
    union: tuple[Path, Path, Path, Path], path: str, content: bytes
) -> None:
    root = union[0]
    assert (root / path).read_bytes() == content


def test_directories_merge_and_take_the_winners_metadata(
    union: tuple[Path, Path, Path, Path],
) -> None:
    root = union[0]
    assert sorted(os.listdir(root)) == ["etc", "link", "opt", "usr"]
    assert sorted(os.listdir(root / "usr" / "lib")) == ["libbase.so", "libtop.so", "shared.so"]
    assert sorted(os.listdir(root / "etc")) == ["base-only", "os-release"]
    assert stat.S_IMODE((root / "etc").stat().st_mode) == DIR_MODES["a-mid"]
    assert os.getxattr(root / "etc", "user.module") == b"a-mid"
    assert os.readlink(root / "link") == "usr/bin/tool"  # b-top's link, base's hidden
    assert not (root / "opt").is_dir()


def test_writes_go_to_the_tmpfs_upper_only(
    union: tuple[Path, Path, Path, Path],
) -> None:
    root, disk, objects, state = union
    before = _snapshot(disk, objects)
    (root / "etc" / "new").write_text("written")
    with (root / "usr" / "bin" / "tool").open("ab") as f:  # copy-up of a metacopy file
        f.write(b"+")
    (root / "etc" / "base-only").unlink()  # a whiteout in the upper
    assert (root / "usr" / "bin" / "tool").read_bytes() == b"b-top tool" * 1000 + b"+"
    assert not (root / "etc" / "base-only").exists()
    assert (state / "upper" / "upper" / "etc" / "new").read_text() == "written"
    assert _snapshot(disk, objects) == before  # images and objects untouched
    for name in MODULES:
        image = (disk / f"{name}.cfs").read_bytes()
        assert fsverity_digest(image) == fsverity_digest(before[str(disk / f"{name}.cfs")])


def test_read_only_union_refuses_writes(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with mount_stack() as stack:
        ram = stack.tmpfs(tmp_path / "ram", size="64m")
        _make(ram / "base", "base", MODULES["base"][1])
        build_image(ram / "base", disk / "base.cfs", digest_store=ram / "objects")
        root = stack_modules(
            stack,
            [Layer("base", disk / "base.cfs", 10)],
            ram / "objects",
            tmp_path / "root",
            state=tmp_path / "state",
            writable=False,
        )
        assert (root / "etc" / "os-release").read_bytes() == b"base\n"
        with pytest.raises(OSError) as info:
            (root / "etc" / "new").write_text("x")
        assert info.value.errno == errno.EROFS
    assert [m for m in mountpoints() if m.startswith(str(tmp_path))] == []


def test_a_failed_mount_in_the_stack_unwinds_the_others(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    (disk / "broken.cfs").write_bytes(b"\0" * 8192)
    with pytest.raises(MountError, match=r"mount -t erofs .*broken\.cfs"), mount_stack() as stack:
        ram = stack.tmpfs(tmp_path / "ram", size="64m")
        _make(ram / "base", "base", MODULES["base"][1])
        build_image(ram / "base", disk / "base.cfs", digest_store=ram / "objects")
        stack_modules(
            stack,
            [Layer("base", disk / "base.cfs", 10), Layer("broken", disk / "broken.cfs", 5)],
            ram / "objects",
            tmp_path / "root",
            state=tmp_path / "state",
        )
    assert [m for m in mountpoints() if m.startswith(str(tmp_path))] == []
