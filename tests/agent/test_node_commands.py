"""Seed 000's top-level commands: the surface, ``version``, ``verify <path>``, ``rotate``
(CLI and the platform's proxy), and SIGTERM unmounting the union.

``rotate`` and the SIGTERM test run the real agent process against the real
platform (SQLite, mTLS on 127.0.0.1), as tests/agent/test_e2e.py does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode import buildinfo
from powernode.agent.certstore import CertStore
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.union import serving_union
from powernode.cli.agent import app
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem
from tests.agent.agentproc import AgentProcess, agent_cmd, wait_for
from tests.agent.nodecmds import Operator, enrolled
from tests.agent.test_modules_support import big, build_module, cleaned, mounts_under
from tests.platform.nodeapi.realplatform import real_platform
from tests.publish.artifacts import make_artifact

SEED_COMMANDS = ("attach", "detach", "update", "sync", "status", "verify", "version",
                 "enroll", "introspect", "service", "rotate")  # fmt: skip


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_seed_commands_are_at_the_top_level_and_modules_stays() -> None:
    code, out, _ = cli("--help")
    assert code == 0
    for name in (*SEED_COMMANDS, "modules"):
        assert f"  {name} " in out, name
    for name in ("attach", "detach", "update", "sync", "verify"):
        code, out, _ = cli(name, "--help")
        assert code == 0 and "Usage:" in out, name
    code, out, _ = cli("modules", "attach", "--help")
    assert code == 0


def test_version_reports_sha_date_python(tmp_path: Path) -> None:
    code, out, _ = cli("version", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["version"] and doc["python"].startswith("3.")
    # From a checkout (this test's), the SHA is git's HEAD.
    assert doc["source"] in ("git", "build")
    assert len(doc["git_sha"]) == 40
    code, out, _ = cli("version")
    assert f"git {doc['git_sha']}" in out and "Python 3." in out
    # Build time: the file scripts/write-buildinfo.py writes wins over git.
    recorded = tmp_path / "_buildinfo.json"
    written = buildinfo.write(recorded)
    got = buildinfo.read(recorded)
    assert got.source == "build" and got.git_sha == written.git_sha
    assert got.build_date == written.build_date
    # Neither a build file nor a checkout: said, not guessed.
    none = buildinfo.read(tmp_path / "missing.json", checkout=tmp_path)
    assert (none.source, none.git_sha, none.build_date) == ("none", "unknown", "unknown")


@pytest.fixture
def signed_layout(tmp_path: Path) -> tuple[Path, bytes]:
    art = make_artifact(tmp_path / "art", {"etc/motd": big("motd")}, name="motd")
    layout = tmp_path / "oci"
    reg = LayoutRegistry(layout)
    key = generate_private_key()
    push_artifact(reg, parse_reference("motd:1.0.0"), art)
    sign_artifact(reg, parse_reference("motd:1.0.0"), key)
    # another version, never signed (a tag of the signed one would share its signature)
    other = make_artifact(
        tmp_path / "art2", {"etc/motd": big("motd 2")}, name="motd", version="2.0.0"
    )
    push_artifact(reg, parse_reference("motd:unsigned"), other)
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(public_key_pem(key))
    return layout, public_key_pem(generate_private_key())


def test_verify_oci_signature_is_the_verdict(
    signed_layout: tuple[Path, bytes], tmp_path: Path
) -> None:
    layout, other_pub = signed_layout
    pub = tmp_path / "cosign.pub"
    where = ["--state-dir", str(tmp_path / "state"), "--root", str(tmp_path / "root")]
    code, out, _ = cli("verify", f"oci:{layout}:motd:1.0.0", "--policy", str(pub), *where)
    assert code == 0, out
    assert "signature: signed by key" in out and "verified: 1 module(s)" in out
    wrong = tmp_path / "other.pub"
    wrong.write_bytes(other_pub)
    code, out, _ = cli("verify", f"oci:{layout}:motd:1.0.0", "--policy", str(wrong), *where)
    assert code == 1 and "signature: REFUSED" in out and "FAILED" in out
    code, out, _ = cli(
        "verify", f"oci:{layout}:motd:unsigned", "--policy", str(pub), *where, "--json"
    )
    doc = json.loads(out)
    assert code == 1 and not doc["ok"] and doc["signature"].startswith("REFUSED")
    code, _, err = cli("verify", f"oci:{layout}:motd:1.0.0", *where)
    assert code == 1 and "pass --policy FILE" in err


def test_verify_artifact_directory_digests(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", {"etc/motd": big("motd")}, name="motd")
    where = ["--state-dir", str(tmp_path / "state"), "--root", str(tmp_path / "root")]
    code, out, _ = cli("verify", str(art), *where)
    assert code == 0 and "verified: 1 module(s)" in out
    assert "files on disk carry no signature" in out  # said, not implied
    obj = next(p for p in (art / "objects").rglob("*") if p.is_file())
    data = bytearray(obj.read_bytes())
    data[0] ^= 1
    obj.write_bytes(bytes(data))
    code, out, _ = cli("verify", str(art), *where)
    assert code == 1 and "BAD motd" in out and "object-digest" in out


@pytest.mark.slow
def test_rotate_by_cli_and_by_the_platform_proxy(tmp_path: Path) -> None:
    # two rotations back to back: the platform's one-per-minute limit lifted
    policy = NodeApiPolicy(rotate_min_interval=timedelta(0))
    with real_platform(tmp_path, policy=policy) as platform:
        node = enrolled(tmp_path, platform, "rotating")
        store = CertStore(node.state / "pki")
        first = store.info()
        assert first is not None
        out = json.loads(agent_cmd(["rotate", "--config", str(node.config), "--json"]))
        second = store.info()
        assert second is not None and second.serial != first.serial
        assert out["instance_id"] == node.instance_id
        assert (out["old_serial"], out["new_serial"]) == (f"{first.serial:x}", f"{second.serial:x}")
        assert len(store.archived()) == 1
        op = Operator(platform)
        agent = AgentProcess(node.config, tmp_path / "agent.log")
        try:
            r = op.call("POST", f"/node_instances/{node.instance_id}/certificates/rotate")
            assert r.status_code == 202, r.text
            task_id = r.json()["task"]["id"]
            assert r.json()["task"]["kind"] == "agent.rotate"
            wait_for("the rotate task", lambda: platform.tasks()[task_id].state == "succeeded")
            result = platform.tasks()[task_id].result
            third = store.info()
            assert third is not None and result["new_serial"] == f"{third.serial:x}"
            assert result["old_serial"] == f"{second.serial:x}"
            # The service switched: its heartbeats go on with the third certificate.
            before = platform.row(node.instance_id).last_heartbeat_at
            wait_for(
                "a heartbeat with the new certificate",
                lambda: platform.row(node.instance_id).last_heartbeat_at != before,
            )
            assert platform.row(node.instance_id).cert_serial == f"{third.serial:x}"
            r = op.call("POST", "/node_instances/no-such-instance/certificates/rotate")
            assert r.status_code == 404
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.close()
            op.close()


@pytest.fixture
def lay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeLayout]:
    monkeypatch.delenv("POWERNODE_AGENT_CONFIG", raising=False)
    layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "node-state")
    with cleaned(tmp_path, layout):
        yield layout


@pytest.mark.mount
@pytest.mark.slow
def test_sigterm_drains_and_unmounts_the_union(lay: NodeLayout, tmp_path: Path) -> None:
    spec = build_module(lay, "base", {"etc/motd": big("base")}, priority=10)
    desired = tmp_path / "desired.json"
    entry = {"name": spec.name, "version": spec.version, "composefs_digest": spec.digest,
             "effective_priority": spec.priority}  # fmt: skip
    desired.write_text(json.dumps({"modules": [entry]}))
    with real_platform(tmp_path) as platform:
        node = enrolled(tmp_path, platform, "draining", modules_root=lay.root)
        # the agent's state is the layout's: enroll made pki/ there too
        lay.state.mkdir(parents=True, exist_ok=True)
        (node.state / "pki").rename(lay.state / "pki")
        cfg = node.config.read_text().replace(str(node.state), str(lay.state))
        node.config.write_text(cfg)
        agent = AgentProcess(node.config, tmp_path / "agent.log")
        try:
            # The agent's first reconcile (the platform assigns nothing) comes and goes;
            # the next is a minute away (modules_sync_seconds): attach by hand meanwhile.
            def synced_once() -> bool:  # a heartbeat after the GET: that beat's sync is over
                log = agent.output()
                return "node_api/status/heartbeat" in log.partition("GET")[2].partition(
                    "node_api/modules")[2]  # fmt: skip

            wait_for("the agent's first module sync", synced_once)
            code, _out, err = cli("sync", "--desired", str(desired), "--state-dir", str(lay.state),
                                 "--root", str(lay.root))  # fmt: skip
            assert code == 0, err
            assert serving_union(lay) and (lay.root / "etc/motd").read_bytes() == big("base")
            assert agent.terminate() == 0, agent.output()
        finally:
            agent.close()
        assert not serving_union(lay), agent.output()
        assert mounts_under(lay.state) == [], "the run tmpfs stayed mounted"
        assert "SIGTERM: unmounted the module union" in agent.output()
