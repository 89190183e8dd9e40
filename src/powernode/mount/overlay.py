"""Mount composefs images and stack them with overlayfs.

A composefs mount is two mounts (shared/notes/FACTS.md, Linux ≥ 6.5):
the EROFS metadata image, read-only, and an overlay whose lower layers are
the image mounts (highest priority first) followed, after ``::``, by the
object store as a *data-only* lower layer. Regular files in the images carry
``trusted.overlay.metacopy`` and ``trusted.overlay.redirect=/<2hex>/<62hex>``,
so overlayfs reads their data from the object store
(Documentation/filesystems/overlayfs.rst, "Data-only lower layers").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import ConfigError, MountError
from powernode.mount.kernel import MS_NODEV, MS_RDONLY, mount, umount
from powernode.node.layout import FORBIDDEN_IN_PATHS, Verity, overlay_data

log = logging.getLogger(__name__)

# overlayfs splits lowerdir on ':' and options on ','; a '\' escapes them, but
# refusing such paths is simpler than escaping them right everywhere.
_FORBIDDEN_IN_PATHS = FORBIDDEN_IN_PATHS


def _checked(path: Path) -> str:
    text = str(path)
    bad = [c for c in _FORBIDDEN_IN_PATHS if c in text]
    if bad:
        raise ConfigError(f"{text!r}: overlay mount paths may not contain {bad[0]!r}")
    if not path.is_absolute():
        raise ConfigError(f"{text!r}: overlay mount paths must be absolute")
    return text


@dataclass(frozen=True)
class Upper:
    """A writable layer: ``upper`` and ``work`` on the same filesystem."""

    upper: Path
    work: Path


def overlay_options(
    lowers: Sequence[Path],
    data_lowers: Sequence[Path] = (),
    *,
    upper: Upper | None = None,
    verity: Verity = "off",
) -> str:
    """The overlay mount data string; ``lowers`` highest priority first."""
    if not lowers:
        raise ConfigError("an overlay needs at least one lower layer")
    return overlay_data(
        [_checked(p) for p in lowers],
        [_checked(p) for p in data_lowers],
        upper=None if upper is None else (_checked(upper.upper), _checked(upper.work)),
        verity=verity,
    )


def mount_image(image: Path, target: Path) -> None:
    """Mount a composefs/EROFS image file read-only at ``target`` (file-backed)."""
    target.mkdir(parents=True, exist_ok=True)
    mount(image, target, "erofs", MS_RDONLY | MS_NODEV)


def mount_overlay(
    target: Path,
    lowers: Sequence[Path],
    data_lowers: Sequence[Path] = (),
    *,
    upper: Upper | None = None,
    verity: Verity = "off",
) -> None:
    """Mount an overlay union at ``target``; read-only unless ``upper`` is given."""
    data = overlay_options(lowers, data_lowers, upper=upper, verity=verity)
    target.mkdir(parents=True, exist_ok=True)
    flags = MS_NODEV | (0 if upper is not None else MS_RDONLY)
    mount("overlay", target, "overlay", flags, data)


def mount_tmpfs(target: Path, *, size: str = "25%", mode: int = 0o755) -> None:
    target.mkdir(parents=True, exist_ok=True)
    mount("tmpfs", target, "tmpfs", MS_NODEV, f"size={size},mode={mode:o}")


class MountStack:
    """Mounts made in order and undone in reverse, even when a later one fails."""

    def __init__(self) -> None:
        self._mounted: list[Path] = []

    @property
    def mounted(self) -> tuple[Path, ...]:
        return tuple(self._mounted)

    def image(self, image: Path, target: Path) -> Path:
        mount_image(image, target)
        self._mounted.append(target)
        return target

    def overlay(
        self,
        target: Path,
        lowers: Sequence[Path],
        data_lowers: Sequence[Path] = (),
        *,
        upper: Upper | None = None,
        verity: Verity = "off",
    ) -> Path:
        mount_overlay(target, lowers, data_lowers, upper=upper, verity=verity)
        self._mounted.append(target)
        return target

    def tmpfs(self, target: Path, *, size: str = "25%") -> Path:
        mount_tmpfs(target, size=size)
        self._mounted.append(target)
        return target

    def unmount_all(self) -> None:
        """Unmount in reverse; a busy mount is detached lazily, and the first error raised."""
        first: MountError | None = None
        while self._mounted:
            target = self._mounted.pop()
            try:
                umount(target)
            except MountError as e:
                log.warning("%s; detaching lazily", e)
                try:
                    umount(target, detach=True)
                except MountError as e2:
                    first = first or e2
        if first is not None:
            raise first


@contextlib.contextmanager
def mount_stack() -> Iterator[MountStack]:
    """A MountStack that is always unwound."""
    stack = MountStack()
    try:
        yield stack
    finally:
        stack.unmount_all()
