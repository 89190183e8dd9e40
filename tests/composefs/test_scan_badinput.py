"""Bad source trees: each is refused with a message naming the path, and leaves nothing
half-written: no image, no temporary file, the digest store exactly as it was.

Unreadable files are simulated at the unit layer (tests run as root, who can
read anything): ``os.open``/``os.read`` are wrapped to fail with EACCES/EIO for
one path. A fifo swapped in for a regular file is done for real.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from powernode.errors import SourceTreeError
from powernode.verity.composefs.reader import open_image
from powernode.verity.composefs.scan import TreePolicy, scan_tree
from powernode.verity.composefs.tree import Node, Tree, tree_path
from powernode.verity.composefs.writer import build_image, write_tree
from powernode.verity.fsverity import fsverity_digest
from powernode.verity.objectstore import object_name

POLICY = TreePolicy()
KEEP = os.urandom(5000)  # already in the store before each build
KEEP_NAME = object_name(fsverity_digest(KEEP).hex())
HANG_LIMIT = 20  # seconds; a bug-catcher for blocking opens, not a timing assertion

Snapshot = dict[str, tuple[int, bytes | str]]


def snapshot(root: Path) -> Snapshot:
    out: Snapshot = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        body: bytes | str = b""
        if p.is_symlink():
            body = os.readlink(p)
        elif p.is_file():
            body = p.read_bytes()
        out[str(p.relative_to(root))] = (st.st_mode, body)
    return out


class Build:
    """A source dir, an empty output dir and a digest store holding one object."""

    def __init__(self, tmp: Path) -> None:
        self.src = tmp / "src"
        self.out = tmp / "out"
        self.store = tmp / "store"
        self.image = self.out / "img.cfs"
        self.src.mkdir()
        self.out.mkdir()
        (self.store / KEEP_NAME).parent.mkdir(parents=True)
        (self.store / KEEP_NAME).write_bytes(KEEP)
        self.before = snapshot(self.store)

    def run(self, policy: TreePolicy = POLICY) -> None:
        build_image(self.src, self.image, digest_store=self.store, policy=policy)

    def assert_nothing_written(self) -> None:
        assert list(self.out.iterdir()) == [], "image or temporary file left behind"
        assert snapshot(self.store) == self.before, "digest store changed"


@pytest.fixture
def build(tmp_path: Path) -> Build:
    return Build(tmp_path)


def refused(build: Build, match: str, policy: TreePolicy = POLICY) -> None:
    with pytest.raises(SourceTreeError, match=match):
        build.run(policy)
    build.assert_nothing_written()


def bounded(fn: Callable[[], None], unblock: Path) -> None:
    """Run ``fn``; if it blocks (opening a fifo), unblock it and fail instead of hanging."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(HANG_LIMIT)
    if worker.is_alive():
        fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)  # a reader is waiting: succeeds
        os.close(fd)
        worker.join(HANG_LIMIT)
        pytest.fail(f"blocked opening the fifo {unblock}")
    if errors:
        raise errors[0]


# --- symlink loops and links out of the tree -------------------------------------------


def test_src_that_is_a_symlink_loop(build: Build, tmp_path: Path) -> None:
    build.src.rmdir()
    os.symlink("src", build.src)
    refused(build, rf"^{build.src}: source path is a symlink loop$")


def test_directory_symlink_cycles_are_stored_not_followed(build: Build) -> None:
    """scan lstat()s only: a cycle (d/self -> ., d/up -> .., a <-> b, d/root -> SRC) is a few
    symlinks in the image, the walk does not grow, and nothing outside is read."""
    d = build.src / "d"
    d.mkdir()
    os.symlink(".", d / "self")
    os.symlink("..", d / "up")
    os.symlink(build.src, d / "root")
    os.symlink("b", build.src / "a")
    os.symlink("a", build.src / "b")
    build.run()
    image = open_image(build.image)
    listed = {e.path: e.symlink for e in image.walk()}
    assert listed == {
        b"/": None,
        b"/a": b"b",
        b"/b": b"a",
        b"/d": None,
        b"/d/root": os.fsencode(build.src),
        b"/d/self": b".",
        b"/d/up": b"..",
    }
    assert snapshot(build.store) == build.before  # nothing external in this tree


def test_symlink_out_of_the_root_is_not_followed(build: Build, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 9000)  # would become an object if the link were followed
    os.symlink("../secret", build.src / "rel")
    os.symlink(secret, build.src / "abs")
    build.run()
    entries = {e.path: e for e in open_image(build.image).walk()}
    assert entries[b"/rel"].symlink == b"../secret"
    assert entries[b"/abs"].symlink == os.fsencode(secret)
    assert snapshot(build.store) == build.before


# --- paths escaping the root -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/../etc/passwd", "a/../../x", "..", "/a/../.."])
def test_tree_path_escaping_the_root_through_dotdot(tmp_path: Path, path: str) -> None:
    tree = Tree(Node(0o40755))
    tree.add("/a", Node(0o40755))
    with pytest.raises(SourceTreeError, match=r"path escapes the image root through '\.\.'"):
        tree.add(path, Node(0o100644))
    assert set(tree.root.children) == {b"a"}
    assert tree.root.children[b"a"].children == {}  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "sub/../../x"])
def test_file_list_path_outside_the_source_root(tmp_path: Path, path: str) -> None:
    with pytest.raises(SourceTreeError, match=rf"path is outside the image root {tmp_path}"):
        tree_path(tmp_path, Path(path))


def test_hard_link_escaping_the_root_writes_nothing(tmp_path: Path) -> None:
    tree = Tree(Node(0o40755))
    tree.add("/f", Node(0o100644))
    with pytest.raises(SourceTreeError, match=r"escapes the image root"):
        tree.add_hardlink("/g", "/../f")
    with pytest.raises(SourceTreeError, match=r"escapes the image root"):
        tree.add_hardlink("/../g", "/f")
    assert set(tree.root.children) == {b"f"}


# --- unreadable files ------------------------------------------------------------------


def _fail_for(monkeypatch: pytest.MonkeyPatch, call: str, victim: bytes, err: int) -> None:
    """Make ``os.open`` (or ``os.read`` on a descriptor of) paths ending in ``victim`` fail."""
    real_open, real_read = os.open, os.read
    fds: set[int] = set()

    def fake_open(path: object, *args: object, **kw: object) -> int:
        hit = os.fsencode(path).endswith(victim)  # type: ignore[arg-type]
        if hit and call == "open":
            raise OSError(err, os.strerror(err), path)
        fd = int(real_open(path, *args, **kw))  # type: ignore[arg-type]
        (fds.add if hit else fds.discard)(fd)
        return fd

    def fake_read(fd: int, n: int) -> bytes:
        if fd in fds:
            raise OSError(err, os.strerror(err))
        return bytes(real_read(fd, n))

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "read", fake_read)


UNREADABLE = {
    "open-eacces": ("open", errno.EACCES, "Permission denied; run the build as a user"),
    "open-eio": ("open", errno.EIO, "Input/output error"),
    "read-eio": ("read", errno.EIO, "Input/output error"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
@pytest.mark.parametrize("size", [10, 9000], ids=["inline", "external"])
def test_unreadable_file(
    build: Build, monkeypatch: pytest.MonkeyPatch, case: str, size: int
) -> None:
    call, err, message = UNREADABLE[case]
    (build.src / "a").write_bytes(b"a" * 9000)  # sorted first: its object must not land
    (build.src / "secret").write_bytes(b"s" * size)
    _fail_for(monkeypatch, call, b"/secret", err)
    refused(build, rf"/secret: cannot read file: {message}")


# --- files changing while they are read ------------------------------------------------


@pytest.mark.parametrize("size", [10, 9000, 3 << 20], ids=["inline", "external", "multi-chunk"])
@pytest.mark.parametrize("change", ["grow", "truncate", "touch", "rewrite-same-size"])
def test_file_changing_while_it_is_scanned(build: Build, size: int, change: str) -> None:
    victim = build.src / "v"
    victim.write_bytes(b"v" * size)

    def hook(path: Path, done: int) -> None:
        if path != victim:
            return
        if change == "grow":
            with victim.open("ab") as f:
                f.write(b"more")
        elif change == "truncate":
            os.truncate(victim, size // 2)
        elif change == "touch":
            os.utime(victim, ns=(1, 1))
        else:
            st = victim.stat()
            with victim.open("r+b") as f:
                f.write(b"w")
            os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1))

    with pytest.raises(SourceTreeError, match=rf"^{victim}: file changed while it was read"):
        scan_tree(build.src, policy=POLICY, read_hook=hook)
    build.assert_nothing_written()


@pytest.mark.parametrize("change", ["same-size-mtime-kept", "truncated", "replaced", "removed"])
def test_file_changing_between_scan_and_copy(build: Build, change: str) -> None:
    """The store copy re-hashes: a change the scan could not see is still caught, and the
    objects already copied for this build are not left in the store."""
    (build.src / "a").write_bytes(b"a" * 9000)  # copied before the victim
    victim = build.src / "v"
    victim.write_bytes(b"v" * 9000)
    tree = scan_tree(build.src, policy=POLICY)
    st = victim.stat()
    if change == "same-size-mtime-kept":  # invisible to any stat check
        victim.write_bytes(b"w" * 9000)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
        match = rf"{victim}: content changed since it was scanned"
    elif change == "truncated":
        os.truncate(victim, 100)
        match = rf"{victim}: content changed since it was scanned"
    elif change == "replaced":
        (build.src / "new").write_bytes(b"n" * 9000)
        os.replace(build.src / "new", victim)
        match = rf"{victim}: content changed since it was scanned"
    else:
        victim.unlink()
        match = rf"{victim}: cannot read file: No such file or directory"
    with pytest.raises(SourceTreeError, match=match):
        write_tree(tree, build.image, digest_store=build.store)
    build.assert_nothing_written()


def test_fifo_swapped_in_while_scanning_does_not_block(build: Build) -> None:
    """The scan lstat()s a whole directory first, then reads each file: a fifo put in
    place of a file in between must be refused, not opened for a blocking read."""
    (build.src / "a").write_bytes(b"a" * 100)
    victim = build.src / "b"
    victim.write_bytes(b"b" * 9000)

    def swap(path: Path, done: int) -> None:
        if path.name == "a":
            victim.unlink()
            os.mkfifo(victim)

    def scan() -> None:
        scan_tree(build.src, policy=POLICY, read_hook=swap)

    with pytest.raises(SourceTreeError, match=rf"^{victim}: file changed while it was read"):
        bounded(scan, victim)
    build.assert_nothing_written()


def test_fifo_swapped_in_before_copy_does_not_block(build: Build) -> None:
    victim = build.src / "b"
    victim.write_bytes(b"b" * 9000)
    tree = scan_tree(build.src, policy=POLICY)
    victim.unlink()
    os.mkfifo(victim)

    def write() -> None:
        write_tree(tree, build.image, digest_store=build.store)

    with pytest.raises(SourceTreeError, match=rf"^{victim}: not a regular file any more"):
        bounded(write, victim)
    build.assert_nothing_written()


# --- the rest of the tree policy, at the build level -----------------------------------


def _file_with_mode(path: Path, mode: int) -> None:
    path.write_bytes(b"x")
    os.chmod(path, mode)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda s: os.mknod(s / "null", 0o20644, os.makedev(1, 3)), r"/null: is a device node"),
        (lambda s: os.mknod(s / "sda", 0o60600, os.makedev(8, 0)), r"/sda: is a device node"),
        (lambda s: _file_with_mode(s / "su", 0o4755), r"/su: is setuid/setgid \(mode 4755\)"),
        (lambda s: _file_with_mode(s / "sg", 0o2711), r"/sg: is setuid/setgid \(mode 2711\)"),
    ],
    ids=["char-device", "block-device", "setuid", "setgid"],
)
def test_policy_refusals_write_nothing(
    build: Build, make: Callable[[Path], object], match: str
) -> None:
    (build.src / "a").write_bytes(b"a" * 9000)
    make(build.src)
    refused(build, match)


def test_too_many_entries(build: Build) -> None:
    for i in range(6):
        (build.src / f"f{i}").write_bytes(b"")
    refused(build, r"tree has more than 5 entries", TreePolicy(max_entries=5))


def test_one_bad_object_among_many_copied_in_parallel(build: Build) -> None:
    """Objects are copied on several threads: the ones that succeeded are removed too."""
    for i in range(40):
        (build.src / f"f{i:02d}").write_bytes(b"%02d" % i * 3000)
    tree = scan_tree(build.src, policy=POLICY)
    victim = build.src / "f17"
    st = victim.stat()
    victim.write_bytes(b"XX" * 3000)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(SourceTreeError, match=rf"^{victim}: content changed since it was scanned"):
        write_tree(tree, build.image, digest_store=build.store)
    build.assert_nothing_written()
    victim.write_bytes(b"17" * 3000)  # put back: the same tree now builds, every object lands
    result = write_tree(tree, build.image, digest_store=build.store)
    assert len(result.objects) == 40
    assert all((build.store / o.name).read_bytes() == o.source.read_bytes() for o in result.objects)
    assert not [p for p in build.store.iterdir() if p.name.startswith(".")]
