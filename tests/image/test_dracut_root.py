"""Debian's own dracut (dracut-core in a target root, never on the host) includes 90powernode."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.image.build import ARCHES
from powernode.image.debs import fetch, newest_name
from powernode.image.dracut_root import list_initrd, make_root, run_dracut
from tests.conftest import require_tool
from tests.package_cache import persistent_debs

pytestmark = [pytest.mark.slow, pytest.mark.tool]


def test_dracut_builds_an_initramfs_with_90powernode(tmp_path: Path) -> None:
    for tool in ("mmdebstrap", "unshare", "dpkg-deb"):
        require_tool(tool)
    deb = fetch(newest_name(ARCHES["amd64"].kernel_package), "amd64", persistent_debs())
    release = deb.name.removeprefix("linux-image-").removesuffix("-unsigned")
    root = make_root(tmp_path / "root", deb, release, persistent_debs())
    run_dracut(root, release, "initrd.img", ["--no-hostonly", "-m", "base powernode"])
    paths = set(list_initrd(root, "initrd.img"))
    hooks = {p for p in paths if "/dracut/hooks/" in p}
    assert any(p.endswith("cmdline/20-hook-identity.sh") for p in hooks), sorted(hooks)
    assert any(p.endswith("mount/50-hook-compose.sh") for p in hooks), sorted(hooks)
    assert any(p.endswith("pre-pivot/50-hook-seed.sh") for p in hooks), sorted(hooks)
    assert "usr/lib/powernode/initrd/powernode-stage.sh" in paths
    assert "usr/lib/powernode/initrd/powernode-layout.sh" in paths
    assert any(p.endswith("/fsverity") for p in paths)
    assert any("/kernel/fs/erofs/erofs.ko" in p for p in paths)
    assert any("/kernel/fs/overlayfs/overlay.ko" in p for p in paths)
