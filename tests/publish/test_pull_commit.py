"""How a pull makes objects durable: batched commits on a thread, few descriptors held."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

import powernode.node.store as store_mod
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import FetchTuning, ModuleStore, pull_artifact, push_artifact
from tests.oci.registry_fixture import RunningRegistry
from tests.publish.artifacts import make_artifact, object_bytes, small_files, store_files


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    """Lower the soft RLIMIT_NOFILE to what is open now + 48 for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir("/proc/self/fd")) + 48
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.registry
def test_a_run_of_many_small_objects_holds_few_descriptors(
    tmp_path: Path, oci_registry: RunningRegistry, few_descriptors: int
) -> None:
    # 300 objects in one ranged read: each temporary is closed once written
    # (keeping them open until the commit needed 300 descriptors: EMFILE)
    files = {f"usr/share/many/f{i:03d}": object_bytes(f"many{i}", 100 + i) for i in range(300)}
    art = make_artifact(tmp_path / "art", files)
    ref = parse_reference("pull/many:1.0.0")
    store = ModuleStore(tmp_path / "state")
    with DistributionRegistry(oci_registry.url) as reg:
        push_artifact(reg, ref, art)
        pulled = pull_artifact(reg, ref, store, tuning=FetchTuning(workers=1))
    assert pulled.objects_fetched == 300 > few_descriptors
    assert store_files(store.root / "objects") == store_files(art / "objects")
    assert store.partials() == []


def test_a_failed_commit_fails_the_pull_and_leaves_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = make_artifact(tmp_path / "art", small_files("commit", count=12, size=3000))
    reg = LayoutRegistry(tmp_path / "layout")
    ref = parse_reference("pull/commit:1.0.0")
    push_artifact(reg, ref, art)
    store = ModuleStore(tmp_path / "state")

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "syncfs failed: Input/output error")

    monkeypatch.setattr(store_mod, "_syncfs", broken)
    with pytest.raises(OSError, match="Input/output error"):
        pull_artifact(reg, ref, store)  # one run of 12 objects: one batch, syncfs
    assert store.partials() == []
    assert list(store.images_dir.iterdir()) == []
    assert store_files(store.root / "objects") == []  # nothing was named before it was durable
    monkeypatch.undo()
    pulled = pull_artifact(reg, ref, store)  # and a retry completes
    assert pulled.objects_fetched == 12
    assert store_files(store.root / "objects") == store_files(art / "objects")


def test_small_batches_fsync_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = make_artifact(tmp_path / "art", small_files("fsync", count=3, size=3000))
    reg = LayoutRegistry(tmp_path / "layout")
    ref = parse_reference("pull/fsync:1.0.0")
    push_artifact(reg, ref, art)
    store = ModuleStore(tmp_path / "state")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def no_syncfs(fd: int) -> None:
        raise AssertionError("three objects are fsynced one by one")

    monkeypatch.setattr(store_mod, "_syncfs", no_syncfs)
    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    pulled = pull_artifact(reg, ref, store)
    assert pulled.objects_fetched == 3
    partial = [p for p in synced if "/objects/" in p and "/.partial-" in p]
    assert len(partial) == 3  # each object's bytes, under its temporary name
    assert store_files(store.root / "objects") == store_files(art / "objects")
