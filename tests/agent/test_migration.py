"""Module data migrations on upgrade, with real pulls (an OCI layout, signed) and mounts:
run once each between the old and new version, recorded; a failing one leaves the old
version serving and the module's state byte for byte as it was, and says why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.migration import done_ids, due, parse_migrations, state_dir
from powernode.agent.modules.reconcile import PublishPuller
from powernode.errors import DataError
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem
from tests.agent.test_modules_registry import Node, node
from tests.agent.test_modules_support import big, mounts_under
from tests.publish.artifacts import make_artifact

__all__ = ["node"]

pytestmark = [pytest.mark.mount]
KEY = generate_private_key()


def publish(
    n: Node,
    version: str,
    migrations: list[dict[str, Any]],
    init_actions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    art = make_artifact(n.tmp / f"art-{version}", {"opt/app/version": big(f"app {version}")},
                        name="app", version=version)  # fmt: skip
    cfg_path = art / "module.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["manifest"]["migrations"] = migrations
    if init_actions:
        cfg["manifest"]["init_actions"] = init_actions
    cfg_path.write_text(json.dumps(cfg, sort_keys=True, separators=(",", ":")))
    reg = LayoutRegistry(n.tmp / "layout")
    ref = parse_reference(f"acme/app:{version}")
    push_artifact(reg, ref, art)
    sign_artifact(reg, ref, KEY)
    return {
        "name": "app", "version": version, "composefs_digest": cfg["composefs_digest"],
        "effective_priority": 20, "reference": f"acme/app:{version}",
        "trust_policy": {"cosign_public_key": public_key_pem(KEY).decode()},
    }  # fmt: skip


def sync(n: Node, app: dict[str, Any]) -> Any:
    base = {"name": "base", "version": n.base.version, "composefs_digest": n.base.digest,
            "effective_priority": 10}  # fmt: skip
    n.service.puller = PublishPuller(default_registry=f"oci:{n.tmp / 'layout'}")
    return n.service.sync(lambda: {"modules": [base, app], "composition": None})


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


STEP1 = {"id": "0001-rename", "since": "2.0.0", "script": "mv old.conf new.conf"}
STEP2 = {"id": "0002-append", "since": "2.0.0", "script": "echo v2 >> new.conf"}
LATER = {"id": "0003-three", "since": "3.0.0", "script": "echo v3 >> new.conf"}


def test_migrations_run_once_each_between_versions_and_are_recorded(node: Node) -> None:
    assert sync(node, publish(node, "1.0.0", [])).changed
    data = state_dir(node.layout, "app")
    data.mkdir(parents=True)
    (data / "old.conf").write_text("setting=1\n")
    report = sync(node, publish(node, "2.0.0", [STEP1, STEP2, LATER]))
    assert report.changed and not report.refusals
    assert (data / "new.conf").read_text() == "setting=1\nv2\n"  # 0003 is for 3.0.0
    assert not (data / "old.conf").exists()
    assert done_ids(node.layout, "app") == ["0001-rename", "0002-append"]
    assert (node.layout.root / "opt/app/version").read_bytes() == big("app 2.0.0")
    # 3.0.0 declares all three again: only the one not run yet runs
    assert sync(node, publish(node, "3.0.0", [STEP1, STEP2, LATER])).changed
    assert (data / "new.conf").read_text() == "setting=1\nv2\nv3\n"
    assert done_ids(node.layout, "app") == ["0001-rename", "0002-append", "0003-three"]
    assert not list(data.parent.glob(".app.before-*"))  # the snapshot is gone


def test_a_failed_migration_keeps_the_old_version_and_its_state(node: Node) -> None:
    assert sync(node, publish(node, "1.0.0", [])).changed
    data = state_dir(node.layout, "app")
    data.mkdir(parents=True)
    (data / "old.conf").write_text("setting=1\n")
    (data / "sub").mkdir()
    (data / "sub/keep.bin").write_bytes(b"\0" * 5000)
    before = tree_hash(data)
    mounts = mounts_under(node.layout.state)
    bad = {"id": "0002-breaks", "since": "2.0.0",
           "script": "rm -rf sub; echo half > new.conf; echo 'no disk' >&2; exit 4"}  # fmt: skip
    report = sync(node, publish(node, "2.0.0", [STEP1, bad]))
    assert not report.changed
    ((module, reason),) = [(r.module, r.reason) for r in report.refusals]
    assert (module, reason) == ("app", "migration")
    detail = report.refusals[0].detail
    assert "migration 0002-breaks (1.0.0 -> 2.0.0) exited 4" in detail and "no disk" in detail
    assert tree_hash(data) == before  # 0001 ran, then was undone with the rest
    assert done_ids(node.layout, "app") == []
    assert (node.layout.root / "opt/app/version").read_bytes() == big("app 1.0.0")
    assert node.layout.state_file.load().modules["app"].version == "1.0.0"
    assert mounts_under(node.layout.state) == mounts
    refused = [e for e in node.events if e[0] == "module.refused"]
    assert refused and refused[-1][2]["reason"] == "migration"


def test_timeout_is_a_failure_too(node: Node) -> None:
    assert sync(node, publish(node, "1.0.0", [])).changed
    slow = {"id": "0001-slow", "since": "2.0.0", "script": "sleep 30", "timeout_seconds": 1}
    report = sync(node, publish(node, "2.0.0", [slow]))
    assert not report.changed
    assert "killed after its timeout of 1 s" in report.refusals[0].detail


@pytest.mark.parametrize(
    ("migrations", "message"),
    [
        ([{"id": "a", "since": "x", "script": "true"}], "migrations[0].since"),
        ([{"id": "a", "since": "1.0.0", "script": ""}], "migrations[0].script"),
        ([STEP1, STEP1], "migrations[1].id"),
        ([{"id": "a", "since": "1.0.0", "script": "true", "timeout_seconds": 0}],
         "migrations[0].timeout_seconds"),
    ],
)  # fmt: skip
def test_bad_declarations_name_the_entry(migrations: list[Any], message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_migrations({"migrations": migrations})


def test_due_is_between_old_and_new() -> None:
    ms = parse_migrations({"migrations": [STEP1, LATER]})
    assert [m.id for m in due(ms, "1.0.0", "2.0.0", [])] == ["0001-rename"]
    assert [m.id for m in due(ms, "2.0.0", "3.0.0", [])] == ["0003-three"]
    assert [m.id for m in due(ms, "1.0.0", "3.0.0", ["0001-rename"])] == ["0003-three"]
    assert due(ms, "3.0.0", "2.0.0", []) == []  # a rollback runs nothing
