"""dracut in a target root: the 90powernode module under Debian's own dracut, not the host's.

``dracut --no-hostonly`` copies the userspace of the system it runs on, so
it runs inside a Debian root made for it (mmdebstrap with ``dracut-core``,
``kmod`` and ``fsverity``), with the kernel package's modules unpacked there
and ``depmod`` run, in a private mount namespace (``unshare -m``) with
``/proc``, ``/sys`` and ``/dev`` mounted: nothing is installed on the host
(installing dracut there would replace initramfs-tools and upgrade systemd;
shared/notes/FACTS.md).
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from powernode.image.bootlayout import MODULE_DIR
from powernode.image.debs import Deb
from powernode.run import run
from powernode.toolchain.build.packages import mmdebstrap_argv
from powernode.toolchain.build.sources import read_sources

PACKAGES = ("dracut-core", "kmod", "fsverity", "zstd", "cpio")
MODULES_D = "usr/lib/dracut/modules.d"
TIMEOUT_S = 900
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # the root's, not the caller's


def make_root(target: Path, kernel: Deb, release: str, debs: Path, arch: str = "amd64") -> Path:
    """A Debian root at ``target`` with dracut, the kernel's modules and 90powernode."""
    sources = read_sources(Path("/"), None)
    run(
        mmdebstrap_argv(PACKAGES, sources, arch, target, debs), timeout=TIMEOUT_S, merge_output=True
    )
    # tar, not dpkg-deb -x: keep the root's /lib -> usr/lib symlink (merged /usr)
    run(
        [
            "sh",
            "-eu",
            "-c",
            'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --keep-directory-symlink',
            "sh",
            str(kernel.path),
            str(target),
        ]
    )
    run(["chroot", str(target), "depmod", release], env=_ENV)
    install_module(target)
    return target


def install_module(target: Path) -> Path:
    """Copy 90powernode into the root's dracut module directory (what a package would do)."""
    dest = target / MODULES_D / MODULE_DIR.name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(MODULE_DIR, dest)
    return dest


def run_dracut(target: Path, release: str, out_name: str, args: Sequence[str]) -> Path:
    """``dracut ARGS --kver RELEASE /<out_name>`` inside ``target``; returns the image's path."""
    t = shlex.quote(str(target))
    dracut = " ".join(
        shlex.quote(a) for a in ["dracut", "--force", "--kver", release, *args, f"/{out_name}"]
    )
    script = (
        f"mount -t proc proc {t}/proc && mount -t sysfs sysfs {t}/sys && "
        f"mount --rbind /dev {t}/dev && exec chroot {t} {dracut}"
    )
    run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-eu", "-c", script],
        timeout=TIMEOUT_S,
        merge_output=True,
        env=_ENV,
    )
    return target / out_name


def list_initrd(target: Path, image: str) -> list[str]:
    """The paths in an initramfs dracut wrote (its own ``lsinitrd``)."""
    out = run(["chroot", str(target), "lsinitrd", "--", f"/{image}"], env=_ENV).stdout.decode()
    return [line.split()[-1] for line in out.splitlines() if line[:1] in "-dlcb" and " " in line]
