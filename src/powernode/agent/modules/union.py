"""Stack verified modules into an overlay union and swap it onto the root atomically.

A restack never shows readers a half-built union. Each generation ``g`` is
built off to the side, under the private tmpfs ``<run>``:

- ``gen-g/layers/<module>``: each composefs image mounted (EROFS, read-only)
  from the file descriptor that was verified;
- ``gen-g/union``: the overlay, lowers highest priority first, the shared
  object store after ``::`` as a data-only layer (Linux >= 6.5,
  Documentation/filesystems/overlayfs.rst), upper/work on the tmpfs or the
  persistent upper directory (one work dir per generation: two overlays must
  not share one).

Only a complete union is put on ``root``. The first one is moved there
(``move_mount``); a later one is moved *beneath* the union being served
(``MOVE_MOUNT_BENEATH``, Linux >= 6.5, the same floor as data-only lowers)
and the old one is then lazily unmounted from the top: a path lookup sees
the old union or the new one, never neither. Open files and lookups already
inside the old union finish there; its layers are detached once it is gone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.agent.modules.integrity import VerifiedImage
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.masks import build_mask_layer, plan_fixes
from powernode.agent.modules.render import Renders, build_render_layer
from powernode.core.composition import Composition
from powernode.errors import MountError, SyscallError
from powernode.linux import MS_BIND, MS_PRIVATE, MS_REC, measure_verity, move_mount, pivot_root
from powernode.mount.kernel import MS_NODEV, MS_RDONLY, mount, umount
from powernode.mount.overlay import MountStack, Upper, overlay_options
from powernode.node import layout as names
from powernode.node.layout import UNION_SOURCE, Verity
from powernode.verity.composefs.reader import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MountInfo:
    mount_point: str
    fstype: str
    source: str
    options: str = ""  # the superblock's options (overlayfs prints verity=require here)


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_table(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountInfo]:
    """Mounts in mount order (proc(5) mountinfo: fields, then ' - ', fstype, source)."""
    out = []
    for line in mountinfo.read_text().splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(" "), tail.split(" ")
        if sep and len(fields) >= 5 and len(rest) >= 2:
            opts = rest[2] if len(rest) >= 3 else ""
            out.append(MountInfo(_unescape(fields[4]), rest[0], _unescape(rest[1]), opts))
    return out


def top_mount(path: Path) -> MountInfo | None:
    """The mount visible at ``path`` if ``path`` is a mount point (the last one listed)."""
    found = None
    for m in mount_table():
        if m.mount_point == str(path):
            found = m
    return found


def serving_union(layout: NodeLayout) -> bool:
    """Whether one of our unions is the top mount on the node root."""
    top = top_mount(layout.root)
    return top is not None and top.fstype == "overlay" and top.source == UNION_SOURCE


def serving_enforced_union(layout: NodeLayout) -> bool:
    """Whether our union on the root was mounted with ``verity=require``: the kernel then
    checks every object's fs-verity digest on each open, so hashing them again in userspace
    proves nothing more."""
    top = top_mount(layout.root)
    return (
        top is not None
        and top.fstype == "overlay"
        and top.source == UNION_SOURCE
        and "verity=require" in top.options.split(",")
    )


def ensure_run(layout: NodeLayout) -> Path:
    run = layout.run_dir
    top = top_mount(run)
    if top is None or top.fstype != "tmpfs":
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        mount("tmpfs", run, "tmpfs", MS_NODEV, names.run_tmpfs_options(layout.tmpfs_size))
        mount("none", run, "", MS_PRIVATE)
    return run


def _upper(layout: NodeLayout, generation: int) -> Upper | None:
    if not layout.writable:
        return None
    base = layout.upper if layout.upper is not None else layout.run_dir / "upper"
    (base / "upper").mkdir(mode=0o755, parents=True, exist_ok=True)
    work = base / f"work-{generation}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(mode=0o700)
    return Upper(base / "upper", work)


def _unmount_under(prefix: Path) -> None:
    """Lazily unmount everything mounted at or below ``prefix``, deepest first."""
    mine = [m.mount_point for m in mount_table() if Path(m.mount_point).is_relative_to(prefix)]
    for point in reversed(mine):
        with contextlib.suppress(MountError):
            umount(Path(point), detach=True)


def _drop_generation(layout: NodeLayout, generation: int) -> None:
    gen = layout.run_dir / f"gen-{generation}"
    _unmount_under(gen)
    shutil.rmtree(gen, ignore_errors=True)
    if layout.writable:
        base = layout.upper if layout.upper is not None else layout.run_dir / "upper"
        shutil.rmtree(base / f"work-{generation}", ignore_errors=True)


def drop_stale_generations(layout: NodeLayout, keep: int) -> None:
    """Remove every generation but ``keep`` (left over from crashes or earlier restacks)."""
    if not layout.run_dir.is_dir():
        return
    for entry in layout.run_dir.iterdir():
        if entry.name.startswith("gen-") and entry.name[4:].isdigit():
            g = int(entry.name[4:])
            if g != keep:
                _drop_generation(layout, g)
    base = layout.upper if layout.upper is not None else layout.run_dir / "upper"
    if layout.writable and base.is_dir():
        for entry in base.iterdir():
            if entry.name.startswith("work-") and entry.name != f"work-{keep}":
                shutil.rmtree(entry, ignore_errors=True)


def kernel_verity(layout: NodeLayout) -> Verity:
    """The overlay ``verity=`` option: the layout's, or for "auto" what the kernel supports.

    "auto" probes the object store's filesystem with FS_IOC_MEASURE_VERITY:
    ENOTTY/EOPNOTSUPP mean no fs-verity (this kernel: shared/notes/FACTS.md,
    where ``verity=require`` mounts but every read fails with EIO), so "off"
    and the userspace checks stand alone; otherwise "on" (overlayfs checks
    the metacopy digest of every object that has fs-verity enabled). Pass
    "require" explicitly once every object has fs-verity enabled.
    """
    if layout.verity != "auto":
        return layout.verity
    try:
        fd = os.open(layout.store.objects_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return "off"
    try:
        measure_verity(fd)
    except SyscallError as e:
        if e.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            return "off"
        return "on"  # ENODATA & co.: supported, just not enabled on the directory
    finally:
        os.close(fd)
    return "on"


def restack(
    layout: NodeLayout,
    layers: Sequence[tuple[VerifiedImage, int]],
    generation: int,
    *,
    composition: Composition | None = None,
    renders: Renders | None = None,
) -> tuple[str, ...]:
    """Mount ``layers`` (verified image, priority) as generation ``generation`` and serve it.

    ``renders`` (module -> templates, facts) adds a render layer just above
    each module named (:mod:`.render`); a template that does not render
    raises ModuleRefused before anything is swapped.

    Returns the composefs hex digests of the union, top first. With no layers
    the union is taken off the root. On any failure before the swap, what was
    mounted for the new generation is undone and the old union keeps serving.
    """
    ensure_run(layout)
    had_union = serving_union(layout)
    if not layers:
        if had_union:
            umount(layout.root, detach=True)
        drop_stale_generations(layout, keep=-1)
        return ()
    ordered = sorted(layers, key=lambda lp: (-lp[1], lp[0].module))
    gen = layout.run_dir / f"gen-{generation}"
    if gen.exists():
        _drop_generation(layout, generation)
    stack = MountStack()
    try:
        lowers = []
        for v, _ in ordered:
            if renders and v.module in renders:
                templates, facts = renders[v.module]
                image = Image.from_bytes(v.read(), source=str(v.path))
                rendered = gen / "rendered" / v.module
                build_render_layer(
                    rendered,
                    v.module,
                    v.digest,
                    image=image,
                    objects_dir=layout.store.objects_dir,
                    templates=templates,
                    facts=facts,
                )
                lowers.append(rendered)
            lowers.append(stack.image(v.mount_source, gen / "layers" / v.module))
        fixes = plan_fixes(composition, [v.module for v, _ in ordered]) if composition else []
        if fixes:
            images = [
                (v.module, Image.from_bytes(v.read(), source=str(v.path))) for v, _ in ordered
            ]
            build_mask_layer(gen / "mask", fixes, images)
            lowers.insert(0, gen / "mask")
            log.info("mask layer: %d path(s) fixed to follow the composition", len(fixes))
        upper = _upper(layout, generation)
        staging = gen / "union"
        staging.mkdir(parents=True)
        verity = kernel_verity(layout)
        data = overlay_options(lowers, [layout.store.objects_dir], upper=upper, verity=verity)
        flags = MS_NODEV | (0 if upper is not None else MS_RDONLY)
        mount(UNION_SOURCE, staging, "overlay", flags, data)
        if layout.root == Path("/"):
            _swap_root(staging)  # the node's own root: nothing is stacked on "/" itself
            had_union = False
        else:
            layout.root.mkdir(parents=True, exist_ok=True)
            move_mount(staging, layout.root, beneath=had_union)
    except BaseException as e:
        with contextlib.suppress(MountError):
            if (top := top_mount(gen / "union")) is not None and top.source == UNION_SOURCE:
                umount(gen / "union", detach=True)
        with contextlib.suppress(MountError):
            stack.unmount_all()
        _drop_generation(layout, generation)
        if isinstance(e, OSError):
            raise MountError(
                f"union generation {generation} for {layout.root}: {e}; "
                "nothing changed, the previous union keeps serving"
            ) from e
        raise
    if had_union:
        # The new union is beneath; detaching the top one reveals it in one step.
        umount(layout.root, detach=True)
    drop_stale_generations(layout, keep=generation)
    digests = tuple(v.digest.removeprefix("sha256:") for v, _ in ordered)
    log.info("union generation %d on %s: %s", generation, layout.root, digests)
    return digests


def _carried_mounts(table: list[MountInfo]) -> list[Path]:
    """The mounts on the running root that the new root must carry: each mount point not
    below another one (``/proc``, ``/dev``, ``/persist``, ``/etc/powernode/seed``…); the
    ones below travel with them (a recursive bind)."""
    points = sorted({Path(m.mount_point) for m in table if m.mount_point != "/"})
    out: list[Path] = []
    for p in points:
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def _swap_root(staging: Path) -> None:
    """Make the union at ``staging`` the root of every process on the node (a live upgrade).

    A mount stacked on "/" is invisible to processes already rooted there (the kernel
    starts every lookup at the process's root, under anything stacked on it), and the
    kernel refuses to move a mount beneath a caller's root; pivot_root(2) moves the root
    and cwd of every process in the mount namespace at once. First the mounts on the old
    root are bound into the new one at the same paths (a path the new root lacks is left
    out and logged); then ``pivot_root(".", ".")`` stacks the old root on the new one and
    a lazy unmount detaches it, with what it still holds, once the last user lets go.
    """
    for point in _carried_mounts(mount_table()):
        if point.is_relative_to(staging):
            continue
        target = staging / point.relative_to("/")
        if not target.is_dir():
            log.warning("new root: %s has no %s; that mount is not carried over", staging, point)
            continue
        mount(point, target, "", MS_BIND | MS_REC)
    cwd = os.getcwd()
    os.chdir(staging)
    try:
        pivot_root(Path("."), Path("."))
    except BaseException:
        os.chdir(cwd)
        raise
    umount(Path("."), detach=True)
    os.chdir("/")
    log.info("the node's root is now the union built at %s (pivot_root)", staging)


def teardown(layout: NodeLayout) -> None:
    """Take every union off the root and unmount the run tmpfs (lifecycle shutdown, tests)."""
    for _ in range(64):  # bounded: one of ours per iteration
        if not serving_union(layout):
            break
        umount(layout.root, detach=True)
    _unmount_under(layout.run_dir)
    if layout.upper is not None and layout.upper.is_dir():
        for entry in layout.upper.iterdir():
            if entry.name.startswith("work-"):
                shutil.rmtree(entry, ignore_errors=True)
