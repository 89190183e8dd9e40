"""Check a module before it is mounted: image digest, image structure, every object.

The kernel here has no fs-verity (shared/notes/FACTS.md), so nothing checks
content at read time; the agent checks it in userspace before each mount:

1. the image file's fs-verity sha256 digest equals the composefs digest asked
   for (docs/artifact.md: the composefs digest *is* that digest);
2. the image parses as composefs/EROFS, and every external file's redirect
   names an object ``<2hex>/<62hex>`` that agrees with its metacopy digest
   (shared/notes/COMPOSEFS.md §5.1, the xattrs the kernel's ``verity=``
   option would check);
3. every object named is present and its content's fs-verity digest is its name.

Re-hashing every object on each restack would cost more than the whole attach
budget for a 5,000-file module, so a full check leaves a *seal* per image:
the object list and each object's (device, inode, size, mtime, ctime) at the
moment its content matched. A later check in the same boot re-hashes only
objects whose stat changed; any write through the filesystem changes ctime,
which user space cannot set back. Seals from another boot are ignored (an
offline edit can forge times), and ``deep=True`` ignores seals altogether:
the agent's restart path and ``verify <path>`` always check deeply. Where the
object has fs-verity enabled (a node's persist store) and the kernel's
measurement (FS_IOC_MEASURE_VERITY) equals its name, a non-deep check takes it
instead of reading the object: the kernel checks every read against that
digest (a booted node's first restack measured 6,749 objects instead of hashing
175 MB under TCG). The image
itself is re-hashed every time (it is small), and the verified image is
mounted through the very file descriptor that was hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from powernode.agent.modules.refusal import ModuleRefused, Refusal
from powernode.durable import write_json
from powernode.errors import ImageFormatError, SyscallError, VerificationError
from powernode.linux import measure_verity
from powernode.node.store import ModuleStore, image_digest
from powernode.verity.composefs.reader import EntryType, Image
from powernode.verity.fsverity import fsverity_digest, fsverity_digest_file
from powernode.verity.fsverity_tree import file_digest, verity_params

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 512 << 20  # a composefs image is metadata only; the largest seen are MBs
MAX_REPORTED = 20  # problems listed in one refusal; the rest are counted
_SMALL = 1 << 20  # objects up to this size are read whole and hashed in memory
_SHA256 = verity_params("sha256", 4096, b"")
_ZERO_BLOCK = bytes(4096)

# "st_dev:st_ino:st_size:st_mtime_ns:st_ctime_ns": a string, cheap to load and compare
Stat = str


def current_boot_id(proc: Path = Path("/proc")) -> str:
    """The kernel's boot id: seals are valid within one boot only."""
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # no /proc: never trust a seal


@dataclass
class VerifiedImage:
    """A module whose image and objects matched; ``fd`` is the hashed image, open."""

    module: str
    digest: str
    path: Path
    fd: int
    objects: int
    rehashed: int  # objects hashed in this check (the rest were sealed and unchanged)

    @property
    def mount_source(self) -> Path:
        # Mounting the magic link mounts the inode that was hashed, not whatever
        # the path names by then.
        return Path(f"/proc/self/fd/{self.fd}")

    def read(self) -> bytes:
        """The verified image's bytes (from the verified descriptor)."""
        return os.pread(self.fd, os.fstat(self.fd).st_size, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Problems:
    module: str
    digest: str
    found: list[Refusal] = field(default_factory=list)
    more: int = 0

    def add(self, refusal: Refusal) -> None:
        if len(self.found) < MAX_REPORTED:
            self.found.append(refusal)
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.found:
            raise ModuleRefused(self.found, more=self.more)


def object_digest_fd(fd: int, size: int, path: Path) -> str:
    """The fs-verity sha256 digest (hex) of an open object file."""
    if size > _SMALL:
        return fsverity_digest_file(f"/proc/self/fd/{fd}", threads=1).hex()
    data = os.read(fd, size + 1)
    while len(data) <= size:  # short reads are legal; read until EOF
        more = os.read(fd, size + 1 - len(data))
        if not more:
            break
        data += more
    if len(data) > 4096:
        return fsverity_digest(data).hex()
    # One block: the root hash is the hash of the zero-padded block, and an
    # empty file's root hash is all zeros (Documentation/filesystems/fsverity.rst).
    root = hashlib.sha256(data + _ZERO_BLOCK[len(data) :]).digest() if data else bytes(32)
    return file_digest(_SHA256, len(data), root).hex()


def _stat_key(st: os.stat_result) -> Stat:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class Seals:
    """Per-image seals under ``<agent dir>/seals/<hex>.json`` (see the module docstring)."""

    def __init__(self, directory: Path, boot_id: str) -> None:
        self.directory = directory
        self.boot_id = boot_id

    def _path(self, hex_digest: str) -> Path:
        return self.directory / f"{hex_digest}.json"

    def load(self, hex_digest: str) -> dict[str, Stat] | None:
        if not self.boot_id:
            return None
        try:
            doc = json.loads(self._path(hex_digest).read_bytes())
            if doc.get("boot_id") != self.boot_id:
                return None
            objects = doc["objects"]
            if not isinstance(objects, dict):
                return None
            return objects
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def known(self, limit: int = 64) -> dict[str, Stat]:
        """Every object some image's seal vouches for in this boot (up to ``limit`` seals).

        A new image's objects are mostly shared with images checked before (an
        update changes a few files): an object whose stat is what it was when it
        was hashed this boot is the same content, whichever image sealed it.
        """
        merged: dict[str, Stat] = {}
        try:
            paths = sorted(self.directory.glob("*.json"))[:limit]
        except OSError:
            return merged
        for path in paths:
            objects = self.load(path.stem)
            if objects:
                merged.update(objects)
        return merged

    def save(self, hex_digest: str, objects: dict[str, Stat]) -> None:
        if not self.boot_id:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json(
            self._path(hex_digest), {"boot_id": self.boot_id, "objects": objects}, mode=0o600
        )

    def drop(self, hex_digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(hex_digest).unlink()


def _image_objects(data: bytes, source: str, p: _Problems) -> list[str]:
    try:
        image = Image.from_bytes(data, source=source)
        entries = image.walk()
        names: set[str] = set()
        for e in entries:
            if e.type is not EntryType.FILE or e.payload is None:
                continue
            name = e.object or ""
            try:
                ModuleStore(Path("/")).objects.path(name)  # checks the <2hex>/<62hex> form
            except VerificationError:
                p.add(_ref(p, "image-inconsistent", f"{e.path_str}: redirect {name!r} "
                           "is not an object name <2hex>/<62hex>", source))  # fmt: skip
                continue
            if e.digest is not None and e.digest.hex() != name.replace("/", ""):
                p.add(
                    _ref(
                        p,
                        "image-inconsistent",
                        f"{e.path_str}: metacopy digest differs from its redirect",
                        source,
                        expected=name.replace("/", ""),
                        actual=e.digest.hex(),
                    )
                )
                continue
            names.add(name)
    except ImageFormatError as e:
        p.add(_ref(p, "image-corrupt", str(e), source))
        return []
    return sorted(names)


def _ref(p: _Problems, reason: str, detail: str, path: str, **kw: str) -> Refusal:
    return Refusal(p.module, p.digest, reason, detail, path, **kw)  # type: ignore[arg-type]


def _check_objects(
    root: Path,
    names: Iterable[str],
    sealed: dict[str, Stat],
    p: _Problems,
    *,
    kernel: bool = True,
) -> tuple[dict[str, Stat], int, int]:
    """Check every object not sealed-and-unchanged; the new seals, how many were checked and
    how many of those the kernel's fs-verity measurement proved (the rest were hashed)."""
    seals: dict[str, Stat] = {}
    hashed = measured = 0
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        p.add(_ref(p, "object-missing", f"no object store: {e.strerror}", str(root)))
        return seals, hashed, measured
    try:
        for name in names:
            seal = sealed.get(name)
            if seal is not None:
                # The hot path of a warm restack: one lstat per object, no pathlib.
                try:
                    st = os.lstat(name, dir_fd=root_fd)
                except OSError:
                    st = None
                if st is not None and stat.S_ISREG(st.st_mode) and _stat_key(st) == seal:
                    seals[name] = seal
                    continue
            key, by_kernel = _check_one(root_fd, root, name, p, kernel=kernel)
            if key is not None:
                seals[name] = key
                hashed += 1
                measured += by_kernel
    finally:
        os.close(root_fd)
    return seals, hashed, measured


def _kernel_measured(fd: int, name: str) -> str:
    """The object's fs-verity digest as the kernel measures it, when that is its name.

    With fs-verity enabled on an object (a node's persist store: the initramfs enables it)
    the kernel checks every read against the Merkle tree whose root this digest covers, so
    a measurement equal to the name proves the content without reading it (what composefs
    relies on). "" when there is no fs-verity here (ENOTTY, EOPNOTSUPP), none on this object
    (ENODATA), or another digest (other parameters, or tampering): then it is hashed.
    """
    try:
        measured = measure_verity(fd).hex()
    except SyscallError:
        return ""
    return measured if measured == name.replace("/", "") else ""


def _check_one(
    root_fd: int, root: Path, name: str, p: _Problems, *, kernel: bool = True
) -> tuple[Stat | None, bool]:
    """Check one object (measured by the kernel, else hashed); its stat key if it matches its
    name, else None (problem recorded), and whether the kernel's measurement sufficed."""
    path = root / name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    except FileNotFoundError:
        p.add(_ref(p, "object-missing", f"object {name} is not in the store", str(path)))
        return None, False
    except OSError as e:
        p.add(_ref(p, "object-unreadable", f"cannot open: {e.strerror}", str(path)))
        return None, False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            p.add(_ref(p, "object-unreadable", "not a regular file", str(path)))
            return None, False
        measured = _kernel_measured(fd, name) if kernel else ""
        actual = measured or object_digest_fd(fd, st.st_size, path)
    except OSError as e:
        p.add(_ref(p, "object-unreadable", f"cannot read: {e.strerror}", str(path)))
        return None, False
    finally:
        os.close(fd)
    expected = name.replace("/", "")
    if actual != expected:
        p.add(
            _ref(
                p,
                "object-digest",
                "content does not match its fs-verity name",
                str(path),
                expected=f"sha256:{expected}",
                actual=f"sha256:{actual}",
            )
        )
        return None, False
    return _stat_key(st), bool(measured)


def verify_module(
    store: ModuleStore, module: str, digest: str, *, seals: Seals, deep: bool = False
) -> VerifiedImage:
    """Check ``module``'s image and objects in the store; the open, verified image or
    ModuleRefused."""
    return verify_image(
        store.image_path(image_digest(digest)),
        store.objects_dir,
        module,
        digest,
        seals=seals,
        deep=deep,
    )


def verify_image(
    path: Path,
    objects_dir: Path,
    module: str,
    digest: str,
    *,
    seals: Seals | None = None,
    deep: bool = False,
) -> VerifiedImage:
    """Check the image at ``path`` against ``digest`` and its objects under ``objects_dir``."""
    hex_digest = image_digest(digest).hex
    p = _Problems(module, f"sha256:{hex_digest}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        p.add(_ref(p, "image-missing", "no image for this digest in the store", str(path)))
        p.raise_if_any()
        raise AssertionError("unreachable") from None
    except OSError as e:
        p.add(_ref(p, "image-unreadable", f"cannot open: {e.strerror}", str(path)))
        p.raise_if_any()
        raise AssertionError("unreachable") from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_IMAGE_BYTES:
            p.add(_ref(p, "image-corrupt", f"{size} bytes exceed {MAX_IMAGE_BYTES}", str(path)))
            p.raise_if_any()
        data = os.pread(fd, size + 1, 0)
        actual = fsverity_digest(data).hex()
        if actual != hex_digest:
            detail = "the image's fs-verity digest is not the one asked for"
            p.add(
                _ref(
                    p,
                    "image-digest",
                    detail,
                    str(path),
                    expected=p.digest,
                    actual=f"sha256:{actual}",
                )
            )
            p.raise_if_any()
        sealed = None if deep or seals is None else seals.load(hex_digest)
        names = sorted(sealed) if sealed is not None else _image_objects(data, str(path), p)
        p.raise_if_any()
        # No seal for this image yet (a new version): objects other images sealed in
        # this boot need only their stat compared; the changed ones are hashed.
        hints = sealed if sealed is not None else ({} if deep or seals is None else seals.known())
        # deep (restart, `verify`): every byte hashed, so a tampered object is reported
        # rather than left to fail its reads
        new_seals, hashed, measured = _check_objects(objects_dir, names, hints, p, kernel=not deep)
        if p.found:
            if seals is not None:
                seals.drop(hex_digest)
            p.raise_if_any()
        if seals is not None and (hashed or sealed is None):
            seals.save(hex_digest, new_seals)
    except BaseException:
        os.close(fd)
        raise
    log.info(
        "%s %s verified: %d objects, %d re-hashed, %d measured by the kernel (fs-verity)",
        module, p.digest, len(names), hashed - measured, measured,
    )  # fmt: skip
    return VerifiedImage(module, p.digest, path, fd, len(names), hashed)
