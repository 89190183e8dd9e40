"""``powernode-agent modules …`` offline (a desired file, modules already in the store), with
real mounts: human and JSON output, refusals printed with their reason, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.state import ModuleSpec
from powernode.cli.agent import app
from tests.agent.test_modules_support import big, build_module, cleaned, mounts_under, object_of
from tests.agent.test_modules_tamper import flip_byte

pytestmark = pytest.mark.mount


@pytest.fixture
def lay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeLayout]:
    monkeypatch.delenv("POWERNODE_AGENT_CONFIG", raising=False)
    layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state")
    with cleaned(tmp_path, layout):
        yield layout


def run(layout: NodeLayout, *args: str) -> tuple[int, str, str]:
    where = ["--state-dir", str(layout.state), "--root", str(layout.root)]
    result = CliRunner().invoke(app, ["modules", *args, *where])
    return result.exit_code, result.stdout, result.stderr


def desired_file(layout: NodeLayout, *specs: ModuleSpec) -> str:
    doc = {
        "modules": [
            {
                "name": s.name,
                "version": s.version,
                "composefs_digest": s.digest,
                "effective_priority": s.priority,
            }
            for s in specs
        ]
    }
    path = layout.state.parent / "desired.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_sync_status_verify_detach_restore(lay: NodeLayout) -> None:
    base = build_module(lay, "base", {"etc/motd": big("base")}, priority=10)
    app_ = build_module(lay, "app", {"etc/motd": big("app"), "opt/a": big("a")}, priority=20)
    want = desired_file(lay, base, app_)
    code, out, _ = run(lay, "sync", "--desired", want)
    assert code == 0, out
    assert "attach app" in out and "attach base" in out and "generation 1" in out
    assert (lay.root / "etc/motd").read_bytes() == big("app")  # the higher priority wins

    code, out, _ = run(lay, "status", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["app"]["mounted"] and rows["app"]["verified"]
    assert rows["app"]["digest"] == app_.digest
    code, out, _ = run(lay, "status")
    assert "app 1.0.0 priority 20: attached, pulled, verified, mounted" in out

    code, out, _ = run(lay, "verify", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["objects"] == 3
    code, out, _ = run(lay, "verify", "app")
    assert code == 0 and "verified: 1 module(s)" in out

    code, out, _ = run(lay, "detach", "app")
    assert code == 0 and "detached app: union generation 2" in out
    assert (lay.root / "etc/motd").read_bytes() == big("base")
    code, _, err = run(lay, "detach", "app")
    assert code == 1 and "module 'app' is not attached (attached: base)" in err

    code, out, _ = run(lay, "restore", "--json")
    assert code == 0 and json.loads(out)["generation"] == 3
    assert (lay.root / "etc/motd").read_bytes() == big("base")


def test_refusals_are_printed_with_reason_and_exit_1(lay: NodeLayout) -> None:
    base = build_module(lay, "base", {"etc/motd": big("base")}, priority=10)
    assert run(lay, "sync", "--desired", desired_file(lay, base))[0] == 0
    mounts = mounts_under(lay.state)
    app_ = build_module(lay, "app", {"opt/a": big("a")}, priority=20)
    obj = object_of(lay, app_, "opt/a")
    flip_byte(obj)
    code, out, err = run(lay, "sync", "--desired", desired_file(lay, base, app_))
    assert code == 1
    assert "sync: union unchanged" in out
    assert f"refused: app {app_.digest}: object-digest ({obj})" in err
    assert "delete it and pull the module again" in err
    assert mounts_under(lay.state) == mounts
    code, out, _ = run(lay, "status", "--desired", desired_file(lay, base, app_))
    assert "refused: app" in out and "object-digest" in out
    # verify of a path: the store image, deeply
    code, out, _ = run(lay, "verify", str(lay.store.image_path(app_.composefs)))
    assert code == 1 and f"BAD {app_.digest[7:]} {app_.digest}: object-digest" in out
    assert "FAILED: 0 module(s)" in out


def test_bad_input_says_what_and_where(lay: NodeLayout) -> None:
    bad = lay.state.parent / "bad.json"
    entry = {"name": "x", "composefs_digest": "sha256:1", "effective_priority": 1}
    bad.write_text(json.dumps({"modules": [entry]}))
    code, _, err = run(lay, "sync", "--desired", str(bad))
    assert code == 1 and f"error: {bad}: modules.0.composefs_digest: invalid digest" in err
    code, _, err = run(lay, "attach", "127.0.0.1:1/acme/x:1")
    assert code == 1 and "no trust policy: pass --policy FILE" in err
    code, _, err = run(lay, "verify", "nothing")
    assert code == 1 and "module 'nothing' is not attached" in err
    assert not lay.state_file.path.exists(), "a refused command wrote attach state"
