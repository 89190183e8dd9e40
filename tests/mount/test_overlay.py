"""Overlay option building (pure) and real mounts of plain layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.errors import ConfigError, MountError
from powernode.mount.kernel import is_mountpoint
from powernode.mount.overlay import Upper, mount_stack, overlay_options


def test_options_order_highest_first_and_data_lowers() -> None:
    opts = overlay_options(
        [Path("/l/top"), Path("/l/base")],
        [Path("/objects")],
        upper=Upper(Path("/u/upper"), Path("/u/work")),
    )
    assert opts == (
        "lowerdir=/l/top:/l/base::/objects,metacopy=on,redirect_dir=on,"
        "upperdir=/u/upper,workdir=/u/work"
    )


def test_options_verity_require() -> None:
    assert "verity=require" in overlay_options([Path("/a")], verity="require")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/has:colon", "may not contain ':'"),
        ("/has,comma", "may not contain ','"),
        ("relative/dir", "must be absolute"),
    ],
    ids=["colon", "comma", "relative"],
)
def test_options_refuse_unsafe_paths(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        overlay_options([Path(path)])


def test_options_need_a_lower() -> None:
    with pytest.raises(ConfigError, match="at least one lower"):
        overlay_options([])


@pytest.mark.mount
def test_plain_layers_stack_in_order_with_tmpfs_upper(tmp_path: Path) -> None:
    top, base = tmp_path / "top", tmp_path / "base"
    for d, text in ((top, "top"), (base, "base")):
        d.mkdir()
        (d / "shared").write_text(text)
        (d / f"only-{text}").write_text(text)
    target = tmp_path / "union"
    with mount_stack() as stack:
        scratch = stack.tmpfs(tmp_path / "scratch")
        (scratch / "u").mkdir()
        (scratch / "w").mkdir()
        stack.overlay(target, [top, base], upper=Upper(scratch / "u", scratch / "w"))
        assert (target / "shared").read_text() == "top"
        assert (target / "only-base").read_text() == "base"
        (target / "new").write_text("written")
        assert (scratch / "u" / "new").read_text() == "written"
        assert not (top / "new").exists()
        assert is_mountpoint(target)
    assert not is_mountpoint(target)
    assert not is_mountpoint(tmp_path / "scratch")


@pytest.mark.mount
def test_failed_mount_names_the_call_and_unwinds(tmp_path: Path) -> None:
    target = tmp_path / "img"
    with (
        pytest.raises(MountError, match=r"mount -t erofs .*missing\.cfs.*ENOENT"),
        mount_stack() as stack,
    ):
        stack.tmpfs(tmp_path / "first")
        stack.image(tmp_path / "missing.cfs", target)
    assert not is_mountpoint(tmp_path / "first")


@pytest.mark.mount
def test_garbage_image_is_refused_by_the_kernel(tmp_path: Path) -> None:
    image = tmp_path / "garbage.cfs"
    image.write_bytes(b"\x00" * 8192)
    with pytest.raises(MountError, match=r"EINVAL|ENOTBLK|ENOTTY"), mount_stack() as stack:
        stack.image(image, tmp_path / "m")
    assert not is_mountpoint(tmp_path / "m")
