"""powernode's initramfs: busybox, the 90powernode dracut module's own files, kernel modules.

The module's ``module-setup.sh`` is the one list of what an initramfs needs:
this builder runs its ``installkernel`` and ``install`` functions in a shell
whose ``instmods``/``inst_*`` only print what they were asked for, and
places exactly that (dracut's hook layout, ``/lib/dracut/hooks/<stage>/
<prio>-<name>.sh``), plus a tiny ``/init`` that sources the hooks in dracut's
stage order. Programs come from Debian packages: busybox-static for the
applets, fsverity (and its libraries) for ``fsverity digest/enable/measure``.
"""

from __future__ import annotations

import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import CommandError, ConfigError, DataError
from powernode.image import cpio
from powernode.image.bootlayout import MODULE_DIR, render_layout_sh
from powernode.image.debs import Deb, read_members
from powernode.image.kernel import Kernel, depmod_files
from powernode.run import run

INIT = Path(__file__).parent / "init.sh"
# Our own small programs, built from source with Debian's gcc (static, stripped, no build
# id: the same compiler gives the same bytes). pn-verity-enable enables fs-verity on a
# whole store in one process (busybox has no applet; `fsverity enable` takes one file).
HELPERS = {"pn-verity-enable": Path(__file__).parent / "helpers" / "pn-verity-enable.c"}
GCC_FLAGS = (
    "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none",
)  # fmt: skip
# Programs not in busybox, with the package they come from
EXTRA_PROGRAMS = {"fsverity": "usr/bin/fsverity"}


@dataclass
class ModuleRequest:
    """What module-setup.sh asked for."""

    kernel_modules: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (source, dest, mode)
    hooks: list[tuple[str, int, str]] = field(default_factory=list)  # (stage, prio, source)


_SHIMS = r"""
instmods() { for m in "$@"; do echo "mod $m"; done; }
inst_multiple() { for p in "$@"; do echo "bin $p"; done; }
inst_simple() { echo "file $1 ${2:-$1} 644"; }
inst_script() { echo "file $1 ${2:-$1} 755"; }
inst_hook() { echo "hook $1 $2 $3"; }
"""


def read_module_setup(module_dir: Path = MODULE_DIR) -> ModuleRequest:
    """Run module-setup.sh's installkernel and install with printing shims."""
    script = (
        f"moddir={shlex.quote(str(module_dir))}\n{_SHIMS}\n"
        f'. "$moddir/module-setup.sh"\ninstallkernel\ninstall\n'
    )
    out = run(["/bin/sh", "-eu", "-c", script]).stdout.decode()
    req = ModuleRequest()
    for line in out.splitlines():
        kind, *args = line.split()
        if kind == "mod":
            req.kernel_modules.append(args[0])
        elif kind == "bin":
            req.programs.append(args[0])
        elif kind == "file":
            req.files.append((args[0], args[1], int(args[2], 8)))
        elif kind == "hook":
            req.hooks.append((args[0], int(args[1]), args[2]))
        else:
            raise DataError(f"module-setup.sh printed {line!r}")
    return req


@dataclass(frozen=True)
class Userland:
    """The .debs the initramfs's programs come from."""

    busybox: Deb
    fsverity: Deb
    libs: tuple[Deb, ...]  # libfsverity0, libssl3 (libcrypto), libc6
    triplet: str  # x86_64-linux-gnu
    loader: str  # lib64/ld-linux-x86-64.so.2
    helpers: tuple[tuple[str, bytes], ...] = ()  # (name, static binary): usr/bin/<name>


def _resolve(members: dict[str, tuple[int, bytes]], path: str) -> bytes:
    for _ in range(8):  # bounded: a link to a link to the file
        mode, data = members[path]
        if not stat.S_ISLNK(mode):
            return data
        target = data.decode()
        path = target.lstrip("/") if target.startswith("/") else str(Path(path).parent / target)
    raise DataError(f"{path}: too many symlinks")


def _lib_entries(userland: Userland) -> list[cpio.CpioEntry]:
    """fsverity and the shared libraries it loads, at their sonames."""
    wanted = ("libfsverity.so.0", "libcrypto.so.3", "libc.so.6", Path(userland.loader).name)
    out: list[cpio.CpioEntry] = []
    found: set[str] = set()
    for deb in (userland.fsverity, *userland.libs):
        members = read_members(deb, lambda p: p.endswith(wanted) or p in EXTRA_PROGRAMS.values())
        for p in sorted(members):
            name = Path(p).name
            if p in EXTRA_PROGRAMS.values():
                out.append(cpio.regular(p, _resolve(members, p), 0o755))
            elif name in wanted and name not in found:
                found.add(name)
                out.append(
                    cpio.regular(f"lib/{userland.triplet}/{name}", _resolve(members, p), 0o755)
                )
    missing = set(wanted) - found
    if missing:
        raise DataError(f"libraries not found in their packages: {sorted(missing)}")
    out.append(
        cpio.symlink(userland.loader, f"/lib/{userland.triplet}/{Path(userland.loader).name}")
    )
    return out


def compile_helper(source: Path, gcc: str = "gcc") -> bytes:
    """``source`` built as a static binary; ConfigError when there is no compiler."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    if shutil.which(gcc) is None:
        raise ConfigError(
            f"{gcc} is not installed: it builds {source.name} for the initramfs "
            "(Debian: gcc libc6-dev)"
        )
    with tempfile.TemporaryDirectory(prefix="pn-helper-") as d:
        out = Path(d) / source.stem
        # -ffile-prefix-map: nothing of where the tree lives gets into the binary
        run([gcc, *GCC_FLAGS, f"-ffile-prefix-map={source.parent}=.", "-o", str(out), str(source)])
        return out.read_bytes()


def applets(busybox: bytes) -> set[str] | None:
    """The applets of this busybox, if it runs here (same architecture); else None."""
    import tempfile  # noqa: PLC0415

    with tempfile.NamedTemporaryFile(prefix="busybox-") as f:
        f.write(busybox)
        f.flush()
        Path(f.name).chmod(0o755)
        try:
            return set(run([f.name, "--list"]).stdout.decode().split())
        except (OSError, CommandError):  # another architecture's binary
            return None


def entries(
    kernel: Kernel, userland: Userland, req: ModuleRequest, module_dir: Path = MODULE_DIR
) -> list[cpio.CpioEntry]:
    members = read_members(userland.busybox, lambda p: p == "bin/busybox")
    if "bin/busybox" not in members:
        raise DataError(f"{userland.busybox.path.name}: no bin/busybox")
    busybox = members["bin/busybox"][1]
    known = applets(busybox)
    if known is not None:
        missing = [p for p in req.programs if p not in known and p not in EXTRA_PROGRAMS]
        if missing:
            raise ConfigError(
                f"module-setup.sh needs {missing}: neither busybox applets "
                f"nor in {sorted(EXTRA_PROGRAMS)}"
            )
    out = [
        cpio.regular("init", INIT.read_bytes(), 0o755),
        cpio.regular("bin/busybox", busybox, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.symlink("sbin/modprobe", "/bin/busybox"),  # the kernel's request_module helper
        cpio.chardev("dev/console", 5, 1),
        *(cpio.directory(d) for d in ("proc", "sys", "run", "sysroot", "persist", "tmp")),
    ]
    out += _lib_entries(userland)
    out += [cpio.regular(f"usr/bin/{name}", data, 0o755) for name, data in userland.helpers]
    layout_sh = render_layout_sh()
    for src, dest, mode in req.files:
        data = Path(src).read_bytes()
        if Path(src).name == "powernode-layout.sh" and data.decode() != layout_sh:
            raise ConfigError(f"{src}: stale; regenerate it (powernode.image.bootlayout)")
        out.append(cpio.regular(dest.lstrip("/"), data, mode))
    for stage, prio, src in req.hooks:
        out.append(
            cpio.regular(
                f"lib/dracut/hooks/{stage}/{prio:02d}-{Path(src).name}",
                Path(src).read_bytes(),
                0o755,
            )
        )
    base = f"lib/modules/{kernel.release}"
    out += [cpio.regular(f"{base}/{m.path}", m.data) for m in kernel.modules]
    out += [cpio.regular(f"{base}/{n}", d) for n, d in depmod_files(kernel).items()]
    load = "".join(m.path + "\n" for m in kernel.modules)
    out.append(cpio.regular("etc/powernode/modules.load", load.encode()))
    return out


def build(kernel: Kernel, userland: Userland, req: ModuleRequest, epoch: int) -> bytes:
    """The initramfs bytes (uncompressed newc: FACTS.md, it boots faster under TCG)."""
    return cpio.write_newc(entries(kernel, userland, req), epoch)
