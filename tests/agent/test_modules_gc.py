"""``modules gc``: what no attached, mounted or rollback version uses goes; the rest stays and
the union keeps serving (real mounts); a dry run changes nothing; a pull in progress holds it
off; a kept image it cannot read stops it before anything is removed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.agent.modules.attach import attach, detach
from powernode.agent.modules.gc import collect
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import PublishPuller
from powernode.agent.modules.state import AttachState, ModuleSpec, StateFile
from powernode.agent.modules.verify import verify_attached
from powernode.cli.agent import app
from powernode.errors import ConfigError, DataError
from powernode.signing import generate_private_key
from tests.agent.test_modules_layout_source import push
from tests.agent.test_modules_registry import Node, node
from tests.agent.test_modules_support import big, build_module, cleaned, object_of

__all__ = ["node"]

pytestmark = pytest.mark.mount

SHARED = {f"usr/lib/app/lib{i}.so": big(f"lib{i}") for i in range(5)}


def app_files(version: str) -> dict[str, bytes]:
    return {**SHARED, "usr/bin/app": big(f"app {version}"), "etc/app.conf": big(version)}


@pytest.fixture
def lay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeLayout]:
    monkeypatch.delenv("POWERNODE_AGENT_CONFIG", raising=False)
    layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state", boot_id="b1")
    with cleaned(tmp_path, layout):
        yield layout


def snapshot(layout: NodeLayout) -> dict[str, int]:
    """Every file of the store (images, objects, blobs) with its inode."""
    out = {}
    for top in ("images", "objects", "blobs"):
        for dirpath, _, files in os.walk(layout.state / top):
            for f in files:
                p = Path(dirpath) / f
                out[str(p.relative_to(layout.state))] = p.stat().st_ino
    return out


def three_versions(layout: NodeLayout) -> list[ModuleSpec]:
    """base; app 1, 2, 3 attached in turn (3 attached, 2 its rollback); ``old`` detached."""
    attach(layout, build_module(layout, "base", {"etc/motd": big("base")}, priority=10))
    attach(layout, build_module(layout, "old", {"opt/old/x": big("old")}, priority=30))
    detach(layout, "old")
    apps = [build_module(layout, "app", app_files(v), priority=20, version=v)
            for v in ("1", "2", "3")]  # fmt: skip
    for a in apps:
        attach(layout, a)
    return apps


def test_keeps_attached_mounted_and_rollback_removes_the_rest(lay: NodeLayout) -> None:
    v1, v2, v3 = three_versions(lay)
    (old,) = [Path(k).stem for k in snapshot(lay) if k.startswith("images/")
              and Path(k).stem not in {m.digest[7:] for m in (v1, v2, v3)}
              and Path(k).stem != lay.state_file.load().modules["base"].digest[7:]]  # fmt: skip
    v1_only = [object_of(lay, v1, r) for r in ("usr/bin/app", "etc/app.conf")]
    v2_bin = object_of(lay, v2, "usr/bin/app")
    state = lay.state_file.load()
    assert state.previous["app"] == v2 and "old" not in state.previous
    before = snapshot(lay)
    report = collect(lay)
    after = snapshot(lay)
    assert sorted(report.images) == sorted([v1.digest[7:], old])  # app 1 and the detached old
    assert not lay.store.has_image(v1.composefs) and lay.store.has_image(v2.composefs)
    assert lay.store.has_image(v3.composefs)
    # app 1's own binary and config and old's file went; the shared libraries stayed.
    assert report.objects == 3 and report.blobs == 0 and report.bytes_freed > 0
    assert not any(p.exists() for p in v1_only) and v2_bin.exists()
    assert set(after) < set(before) and all(after[k] == before[k] for k in after)
    # The union still serves, every kept module verifies deeply, the rollback is one attach.
    assert (lay.root / "usr/bin/app").read_bytes() == big("app 3")
    assert (lay.root / "usr/lib/app/lib4.so").read_bytes() == big("lib4")
    assert verify_attached(lay).ok
    attach(lay, v2)
    assert (lay.root / "etc/app.conf").read_bytes() == big("2")
    assert lay.state_file.load().previous["app"] == v3
    assert collect(lay).images == []  # 3 is now the rollback version


def test_dry_run_removes_nothing_and_says_what_the_real_run_does(lay: NodeLayout) -> None:
    three_versions(lay)
    before = snapshot(lay)
    dry = collect(lay, dry_run=True)
    assert snapshot(lay) == before
    real = collect(lay)
    assert (dry.images, dry.objects, dry.blobs, dry.bytes_freed) == (
        real.images, real.objects, real.blobs, real.bytes_freed)  # fmt: skip
    assert dry.dry_run and not real.dry_run and real.objects > 0


def test_partials_older_than_the_grace_period_go(lay: NodeLayout) -> None:
    three_versions(lay)
    young = lay.store.objects_dir / "ab" / ".partial-young"
    stale = lay.store.images_dir / ".partial-stale.cfs"
    for p in (young, stale):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
    os.utime(stale, (1_000, 1_000))
    report = collect(lay, grace_seconds=3600, now=lambda: 10_000.0)
    assert report.partials == 1 and not stale.exists() and young.exists()


def test_a_kept_image_that_cannot_be_parsed_stops_gc_before_anything_goes(
    lay: NodeLayout,
) -> None:
    _, _, v3 = three_versions(lay)
    image = lay.store.image_path(v3.composefs)
    image.write_bytes(b"\0" * 100)
    before = snapshot(lay)
    with pytest.raises(DataError) as e:
        collect(lay)
    assert str(image) in str(e.value) and "app 3 (attached)" in str(e.value)
    assert "nothing was removed" in str(e.value)
    assert snapshot(lay) == before


def test_a_pull_in_progress_holds_gc_off(lay: NodeLayout) -> None:
    three_versions(lay)
    before = snapshot(lay)
    with (
        lay.state_file.store_locked(exclusive=False),
        pytest.raises(ConfigError, match=r"store\.lock: .*the store lock \(a pull or gc\)"),
    ):
        collect(lay, lock_timeout=0.2)
    assert snapshot(lay) == before


def test_previous_round_trips_and_old_state_files_load(tmp_path: Path) -> None:
    f = StateFile(tmp_path)
    a1 = ModuleSpec("app", "sha256:" + "1" * 64, 5, "1")
    a2 = ModuleSpec("app", "sha256:" + "2" * 64, 5, "2")
    f.save(AttachState({"app": a2}, 3, ("2" * 64,), {}, {"app": a1}))
    got = f.load()
    assert got.previous == {"app": a1}
    assert got.retained() == {"1" * 64: "app 1 (rollback)", "2" * 64: "app 2 (attached)"}
    doc = json.loads(f.path.read_text())
    del doc["previous"]  # written before rollback versions were recorded
    f.path.write_text(json.dumps(doc))
    assert f.load().previous == {}


def test_pulled_versions_blobs_go_with_their_image_and_rollback_fetches_no_object(
    node: Node,
) -> None:
    layout_dir, key = node.tmp / "layout", generate_private_key()
    pushed = [
        push(
            layout_dir,
            node.tmp,
            "acme/app",
            signer=key,
            version=v,
            tag=v,
            files={**SHARED, "opt/app/v": big(v)},
        )
        for v in ("1.0.0", "1.0.1", "1.0.2")
    ]
    puller = PublishPuller(default_registry=f"oci:{layout_dir}")
    node.service.puller = puller
    for p in pushed:
        doc = node.desired(p.ref, p.digest, p.pub)
        assert node.service.sync(lambda doc=doc: doc).changed
    lay = node.layout
    blobs = lay.store.blobs_dir / "sha256"
    assert all((blobs / p.manifest_digest.hex).exists() for p in pushed)
    report = collect(lay)
    assert report.images == [pushed[0].digest[7:]]
    assert not (blobs / pushed[0].manifest_digest.hex).exists()
    assert all((blobs / p.manifest_digest.hex).exists() for p in pushed[1:])
    assert report.blobs >= 2  # 1.0.0's manifest and module.json (its index and SBOM too)
    assert (lay.root / "opt/app/v").read_bytes() == big("1.0.2")
    back = node.desired(pushed[1].ref, pushed[1].digest, pushed[1].pub)  # 1.0.2 demoted
    assert node.service.sync(lambda: back).changed
    assert puller.last["app"].objects_fetched == 0
    assert (lay.root / "opt/app/v").read_bytes() == big("1.0.1")


def test_cli_gc_dry_run_then_gc(lay: NodeLayout) -> None:
    three_versions(lay)
    where = ["--state-dir", str(lay.state), "--root", str(lay.root)]
    before = snapshot(lay)
    dry = CliRunner().invoke(app, ["modules", "gc", "--dry-run", "--json", *where])
    assert dry.exit_code == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] and len(doc["images_removed"]) == 2 and doc["objects_removed"] == 3
    assert sorted(r["why"] for r in doc["retained"]) == [
        "app 2 (rollback)", "app 3 (attached)", "base 1.0.0 (attached)"]  # fmt: skip
    assert snapshot(lay) == before
    real = CliRunner().invoke(app, ["modules", "gc", *where])
    assert real.exit_code == 0, real.stderr
    assert "keep sha256:" in real.stdout and "app 2 (rollback)" in real.stdout
    assert "gc: removed 2 image(s), 3 object(s), 0 blob(s)" in real.stdout
    again = CliRunner().invoke(app, ["modules", "gc", *where])
    assert "gc: removed 0 image(s), 0 object(s)" in again.stdout
