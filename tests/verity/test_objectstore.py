"""ObjectStore: objects are verified against their names, and every bad object is refused
with a message naming it; verification never changes the store and never blocks."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from powernode.errors import ConfigError, DigestMismatchError, VerificationError
from powernode.verity.fsverity import fsverity_digest, fsverity_digest_file
from powernode.verity.objectstore import ObjectStore, object_name


def put(store: ObjectStore, data: bytes) -> str:
    name = object_name(fsverity_digest(data).hex())
    path = store.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return name


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry under ``root`` with its mode, mtime and content (or link target)."""
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                body: bytes | str = os.readlink(p)
            elif p.is_file():
                body = p.read_bytes()
            else:
                body = b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return out


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    root = tmp_path / "objects"
    root.mkdir()
    return ObjectStore(root)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 70_000, 1 << 20], ids=lambda n: f"{n}B")
def test_good_object_verifies_and_returns_its_path(store: ObjectStore, size: int) -> None:
    data = os.urandom(size)
    name = put(store, data)
    path = store.verify(name)
    assert path == store.root / name and path.read_bytes() == data
    assert fsverity_digest_file(path).hex() == name.replace("/", "")


@pytest.mark.parametrize(
    "tamper",
    ["flip-byte", "truncate", "append", "swap-with-other", "empty"],
)
def test_content_no_longer_matching_its_name_is_refused(store: ObjectStore, tamper: str) -> None:
    good = os.urandom(9000)
    name = put(store, good)
    path = store.root / name
    bad = {
        "flip-byte": good[:4500] + bytes([good[4500] ^ 1]) + good[4501:],
        "truncate": good[:4096],
        "append": good + b"\0",
        "swap-with-other": os.urandom(9000),
        "empty": b"",
    }[tamper]
    path.write_bytes(bad)
    before = snapshot(store.root)
    with pytest.raises(DigestMismatchError) as info:
        store.verify(name)
    err = info.value
    assert err.expected == "sha256:" + name.replace("/", "")
    assert err.actual == "sha256:" + fsverity_digest(bad).hex()
    assert str(path) in str(err) and "pull the module again" in str(err)
    assert snapshot(store.root) == before  # verification repairs nothing, deletes nothing


def test_missing_object_says_missing(store: ObjectStore) -> None:
    name = object_name("ab" * 32)
    with pytest.raises(VerificationError, match=rf"object {name} is missing from {store.root}"):
        store.verify(name)
    assert not store.has(name)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "dangling-symlink"])
def test_non_regular_object_is_refused_without_opening_it(
    store: ObjectStore, tmp_path: Path, kind: str
) -> None:
    data = b"real content that hashes to the name" * 200
    name = object_name(fsverity_digest(data).hex())
    path = store.root / name
    path.parent.mkdir()
    if kind == "symlink":  # even a link to the right content: overlayfs would not serve it
        (tmp_path / "outside").write_bytes(data)
        os.symlink(tmp_path / "outside", path)
    elif kind == "dangling-symlink":
        os.symlink(tmp_path / "nowhere", path)
    elif kind == "fifo":  # opening a fifo for reading would block until a writer comes
        os.mkfifo(path)
    else:
        path.mkdir()
    before = snapshot(store.root)
    with pytest.raises(VerificationError, match=rf"object {path}: not a regular file \(mode "):
        store.verify(name)
    assert not store.has(name)
    assert snapshot(store.root) == before


def test_fifo_digest_does_not_block(tmp_path: Path) -> None:
    """Regression: fsverity_digest_file opened a fifo without O_NONBLOCK and hung."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def digest() -> None:
        try:
            fsverity_digest_file(fifo)
        except OSError as e:
            outcome.append(e)

    worker = threading.Thread(target=digest, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the open so the thread can end
        with open(fifo, "wb"):
            pass
        worker.join(timeout=30)
        pytest.fail("fsverity_digest_file blocked on a fifo")
    assert len(outcome) == 1 and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize(
    "name",
    ["ab", "AB/" + "c" * 62, "ab/" + "c" * 61, "ab/../" + "c" * 59, "../" + "c" * 62, ""],
    ids=["short", "uppercase", "short-tail", "dotdot", "escape", "empty"],
)
def test_malformed_names_are_refused_before_any_io(store: ObjectStore, name: str) -> None:
    with pytest.raises(VerificationError, match=r"not an object name \(want <2hex>/<62hex>\)"):
        store.verify(name)
    with pytest.raises(VerificationError, match=r"not an object name"):
        store.has(name)
    assert list(store.root.iterdir()) == []


def test_verify_all_checks_every_object_and_names_all_bad_ones(store: ObjectStore) -> None:
    good = [put(store, os.urandom(n)) for n in (0, 100, 5000, 9000)]
    bad = [put(store, os.urandom(n)) for n in (4097, 8193, 12289)]
    for name in bad:
        (store.root / name).write_bytes(b"tampered")
    missing = object_name("00" * 32)
    names = good + bad + [missing, good[0]]
    before = snapshot(store.root)
    with pytest.raises(
        VerificationError, match=r"^4 of 8 objects in .* failed verification: "
    ) as e:
        store.verify_all(names, threads=2)
    message = str(e.value)
    for name in [*bad, missing]:
        assert name in message
    for name in good:
        assert name not in message
    assert isinstance(e.value.__cause__, VerificationError)
    assert snapshot(store.root) == before


def test_verify_all_one_failure_is_raised_as_is(store: ObjectStore) -> None:
    names = [put(store, os.urandom(n)) for n in (5000, 6000)]
    (store.root / names[1]).write_bytes(b"x")
    with pytest.raises(DigestMismatchError, match=names[1].replace("/", "")):
        store.verify_all(names)


def test_verify_all_lists_at_most_ten(store: ObjectStore) -> None:
    names = [object_name(f"{i:064x}") for i in range(13)]
    with pytest.raises(VerificationError, match=r"13 of 13 .*; and 3 more$"):
        store.verify_all(names, threads=1)


def test_verify_all_counts_unique_names(store: ObjectStore) -> None:
    names = [put(store, os.urandom(n)) for n in (1, 2, 3)]
    assert store.verify_all(names + names) == 3
    assert store.verify_all([]) == 0


@pytest.mark.parametrize("threads", [0, -1, 65, True])
def test_verify_all_refuses_bad_thread_counts(store: ObjectStore, threads: int) -> None:
    with pytest.raises(ConfigError, match="threads must be an integer from 1 to 64"):
        store.verify_all([], threads=threads)


def test_object_name_refuses_non_digests() -> None:
    assert object_name("ab" * 32) == "ab/" + "ab" * 31
    with pytest.raises(VerificationError, match="not a sha256 fs-verity digest"):
        object_name("AB" * 32)
