"""Copy a tree's external file contents into a digest store (mkcomposefs --digest-store).

Layout and behaviour follow shared/notes/COMPOSEFS.md §12: each non-empty,
non-inline regular file becomes ``STORE/hh/<62hex>`` (mode 0644, missing
``hh`` directories created 0755), written as a temporary file and renamed
into place; an object that already exists is left alone (content-addressed).
Unlike mkcomposefs, the bytes copied are re-hashed on the way and compared
with the digest the image records, so a source that changed after the scan
cannot put wrong content under a right name.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import SourceTreeError
from powernode.verity.composefs.tree import Tree
from powernode.verity.fsverity import FsVerityHasher

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# FS_IOC_ENABLE_VERITY = _IOW('f', 133, struct fsverity_enable_arg) (linux/fsverity.h);
# the argument: version 1, sha256, 4096-byte blocks, no salt, no signature.
_FS_IOC_ENABLE_VERITY = 0x40806685
_ENABLE_ARG = struct.pack("<IIIIQIIQ88x", 1, 1, 4096, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class ObjectRef:
    """One object an image points at: ``name`` is ``hh/<62hex>``."""

    name: str
    size: int
    source: Path


def collect_objects(tree: Tree) -> tuple[ObjectRef, ...]:
    """Every distinct object of the tree, sorted by name (first source path wins)."""
    found: dict[str, ObjectRef] = {}
    for _, node in tree.walk():
        if node.is_reg and node.payload and node.source is not None and node.content is None:
            name = node.payload.decode()
            if name not in found:
                found[name] = ObjectRef(name, node.size, node.source)
    return tuple(found[n] for n in sorted(found))


def store_objects(objects: tuple[ObjectRef, ...], store: Path) -> int:
    """Copy every missing object into ``store``; returns how many were copied."""
    try:
        store.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        raise SourceTreeError(f"{store}: cannot create the digest store: {e.strerror}") from e
    copied = 0
    for ref in objects:
        if copy_object(ref, store):
            copied += 1
    log.info("digest store %s: %d of %d objects copied", store, copied, len(objects))
    return copied


def copy_object(ref: ObjectRef, store: Path) -> bool:
    """Copy one object unless present; False if it was already there."""
    dest = store / ref.name
    if dest.is_file():
        return False
    try:
        dest.parent.mkdir(mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=store, prefix=".tmp")
    except OSError as e:
        raise SourceTreeError(f"{dest}: cannot write to the digest store: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            digest = _copy_hashing(ref, out.fileno())
            out.flush()
            os.fsync(out.fileno())
        if digest.hex() != ref.name.replace("/", ""):
            raise SourceTreeError(
                f"{ref.source}: content changed since it was scanned (digest "
                f"{digest.hex()}, image records {ref.name.replace('/', '')}); "
                "stop writers to the source tree and build again"
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _try_enable_verity(dest)
    return True


def _copy_hashing(ref: ObjectRef, out_fd: int) -> bytes:
    hasher = FsVerityHasher()
    try:
        in_fd = os.open(ref.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SourceTreeError(f"{ref.source}: cannot read file: {e.strerror}") from e
    try:
        while True:
            buf = os.read(in_fd, _CHUNK)
            if not buf:
                break
            hasher.update(buf)
            view = memoryview(buf)
            while view:
                view = view[os.write(out_fd, view) :]
    except OSError as e:
        raise SourceTreeError(f"{ref.source}: copying into the store failed: {e.strerror}") from e
    finally:
        os.close(in_fd)
    return hasher.digest()


def _try_enable_verity(path: Path) -> None:
    """Like mkcomposefs: try to enable fs-verity, ignore kernels/filesystems without it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, _FS_IOC_ENABLE_VERITY, _ENABLE_ARG)
    except OSError as e:
        log.debug("fs-verity not enabled on %s: %s", path, e.strerror)
    finally:
        os.close(fd)
