"""Phase 2 of the demo (issue 7): the agent enrolls, mounts the union, reports, upgrades.

Runs after the instance exists (:func:`.tutorial.run_demo`), as root: the
platform is served with TLS (the node API), the operator creates a bootstrap
token, ``powernode-agent enroll`` exchanges it for the node's certificate,
``powernode-agent modules sync`` (a child process, configured to pull from the
platform's OCI layout directory: ``modules_registry = "oci:<dir>"``) pulls,
verifies and mounts the template's modules on ``<workdir>/node/root``, a few
files are read through the union, the heartbeat carries the running digests
and the drift report says false. Then a new version of one module is built,
ingested, promoted and reconciled the same way, and the drift report says
false again with the new digest. The node is torn down (every mount under the
node dir) on every exit path.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack

from powernode.client import JsonObject
from powernode.demo import fleet
from powernode.demo.node import DemoNode, mounts_under
from powernode.demo.operator import Operator
from powernode.demo.tutorial import Demo
from powernode.errors import PowernodeError
from powernode.toolchain.localtemplate import Assignment

# Files read through the union, one from each module that wins a file (chrony's only
# file is taken over by chrony-no-pool); each shows a different composition rule.
SHOW = (
    "/etc/nginx/conf.d/00-security.conf",  # nginx's protected file
    "/etc/chrony/chrony.conf",  # a config module taking over its parent's protected file
    "/etc/motd",  # security-hardening stacked over system-base
    "/etc/redis/redis.conf",
    "/usr/lib/os-release",  # system-base, at the bottom of the stack
    "/var/www/healthz/index.html",  # changed by the upgrade
)
DRIFT_TIMEOUT = 15.0  # the platform flushes coalesced heartbeats every ~0.5 s


class DriftError(PowernodeError):
    """The drift report did not reach the expected verdict in time."""


def wait_drift(
    op: Operator,
    instance_id: str,
    *,
    timeout: float = DRIFT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JsonObject:
    """Ask for the drift report until it says no drift; the last report (shown once)."""
    deadline = clock() + timeout
    report = op.call(
        ["drift-report", "--instance", instance_id], "GET", f"/node_instances/{instance_id}/drift"
    )
    for _ in range(int(timeout / 0.25) + 1):  # bounded in count and time
        if not report["drift"] or clock() > deadline:
            break
        sleep(0.25)
        report = op.get(f"/node_instances/{instance_id}/drift")
    if report["drift"]:
        differs = ", ".join(
            f"{m['name']} {m['status']}" for m in report["modules"] if m["status"] != "ok"
        )
        raise DriftError(f"instance {instance_id} still drifts after {timeout:.0f} s: {differs}")
    return report


def run_node_steps(demo: Demo, stack: ExitStack, upgrade: Assignment) -> None:
    op, reporter, result = demo.operator, demo.reporter, demo.result
    assert demo.server is not None and demo.server.platform_ca is not None
    result.node_agent = True
    node_dir = demo.path("node")
    iid = result.instance_id

    with demo.steps.step("enroll the node's agent (bootstrap token, mTLS certificate)"):
        token = op.call(
            ["create-bootstrap-token", iid],
            "POST",
            f"/node_instances/{iid}/bootstrap_tokens",
            {},
        )["token"]
        reporter.command(
            f"powernode-agent enroll --token-file {node_dir / 'bootstrap-token'} "
            f"--platform-ca {demo.server.platform_ca} --config {node_dir / 'agent.toml'} "
            "--no-discover"
        )
        node, info = DemoNode.enroll(
            node_dir,
            python=sys.executable,
            url=demo.server.url,
            platform_ca=demo.server.platform_ca,
            bootstrap_token=str(token),
            registry_dir=demo.path("registry"),
        )
        stack.callback(node.teardown)
        reporter.note(
            f"{node.config}: modules_registry = oci:{demo.path('registry')} "
            "(the platform's OCI layout directory)"
        )
        reporter.note(
            f"enrolled instance {info.get('instance_id', iid)}; certificate valid until "
            f"{info.get('not_after', '?')}"
        )

    with demo.steps.step("the agent syncs: pull, verify, mount the union; heartbeat; drift"):
        reporter.command(f"powernode-agent modules sync --config {node.config} --json")
        report = node.sync()
        actions = ", ".join(f"{a.kind} {a.module}" for a in report.actions)
        reporter.note(f"generation {report.generation}: {actions}")
        reporter.table(
            f"read through the union at {node.layout.root}",
            ("path", "winner (composition)", "first line"),
            [(f.path, f.winner, f.first_line) for f in node.read(list(SHOW))],
        )
        running = node.heartbeat()
        reporter.note(f"heartbeat: {len(running)} running module digests reported")
        drift = wait_drift(op, iid)
        _show_drift(demo, drift)
        result.drift_after = bool(drift["drift"])

    with demo.steps.step(f"upgrade: a new {upgrade.repo.name} version, promoted and reconciled"):
        repo = demo.path("src") / upgrade.repo.name
        shutil.copytree(upgrade.repo.path, repo)
        page = repo / "rootfs" / "var" / "www" / "healthz" / "index.html"
        page.write_text("ok (upgraded by the demo)\n", encoding="utf-8")
        version = _next_patch(str(upgrade.version))
        reporter.note(f"changed {page.relative_to(demo.config.workdir)}; tagging v{version}")
        pub = demo.publish(upgrade, repo, version)
        vid = demo.ingest([pub])[pub.name]
        fleet.promote_to_live(op, vid)
        result.upgraded = pub
        reporter.command(f"powernode-agent modules sync --config {node.config} --json")
        report = node.sync()
        actions = ", ".join(f"{a.kind} {a.module}" for a in report.actions if a.kind != "keep")
        reporter.note(f"generation {report.generation}: {actions}")
        (healthz,) = node.read(["/var/www/healthz/index.html"])
        reporter.note(f"/var/www/healthz/index.html now reads {healthz.first_line!r}")
        running = node.heartbeat()
        drift = wait_drift(op, iid)
        _show_drift(demo, drift)
        reporter.note(
            f"{pub.name} running {fleet.short(running.get(pub.name))} = v{version} "
            f"{fleet.short(pub.build.composefs_digest)}"
        )
        result.drift_after = bool(drift["drift"])

    with demo.steps.step("tear down the node (unmount the union and the store's tmpfs)"):
        node.teardown()
        left = mounts_under(node_dir)
        reporter.note(f"mounts left under {node_dir}: {len(left)}")
        if left:
            raise PowernodeError(f"still mounted: {', '.join(map(str, left))}")


def _next_patch(version: str) -> str:
    core = version.split("+", 1)[0].split("-", 1)[0]
    major, minor, patch = core.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def _show_drift(demo: Demo, drift: JsonObject) -> None:
    t = fleet.drift_table(drift)
    demo.reporter.table(t.title, t.headers, t.rows)
