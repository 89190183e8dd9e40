"""Seed 004's tutorial, step by step, on embedded defaults.

:func:`run_demo` lays the demo dir out as::

    <workdir>/keys/        cosign.key, cosign.pub, cosign.password
    <workdir>/registry/    the OCI layout the platform ingests from
    <workdir>/artifacts/   one artifact dir per module (docs/artifact.md)
    <workdir>/platform/    the platform's data dir (SQLite, secret.key) and platform.log

and stops the platform on every exit path (``ExitStack``), an exception or a
Ctrl-C (``KeyboardInterrupt``) included. The caller owns the directory.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from powernode.core.priority import SEEDED_CATEGORIES, effective_priority
from powernode.demo import fleet
from powernode.demo.nodesim import record_heartbeat
from powernode.demo.operator import Operator
from powernode.demo.publishing import Published, make_signing_key, publish_module
from powernode.demo.server import PlatformProcess, create_token
from powernode.demo.steps import Reporter, Steps
from powernode.toolchain.localtemplate import Assignment, load_template, plan

log = logging.getLogger(__name__)

# Fixed so two demo runs build byte-identical artifacts (docs/build.md).
SOURCE_DATE_EPOCH = 1_700_000_000
SCOPES = ("write", "promote-live")


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path
    examples: Path
    template_file: Path | None = None  # default: <examples>/templates/base.yaml
    hostname: str = "demo-node-1"
    source_date_epoch: int = SOURCE_DATE_EPOCH
    ingest_timeout: float = fleet.INGEST_TIMEOUT


@dataclass
class DemoResult:
    """What the demo did, for the summary and for tests."""

    url: str = ""
    platform_pid: int = 0
    template: str = ""
    published: dict[str, Published] = field(default_factory=dict)
    version_ids: dict[str, str] = field(default_factory=dict)
    instance_id: str = ""
    drift_before: bool | None = None
    drift_after: bool | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(s for _, s in self.timings)


def _default_priority(a: Assignment) -> int:
    position = next(c.position for c in SEEDED_CATEGORIES if c.slug == a.category)
    return effective_priority(position, a.variety)


def run_demo(config: DemoConfig, reporter: Reporter) -> DemoResult:
    """Run every step; raises :class:`~.steps.DemoStepError` naming the step that failed."""
    steps = Steps(reporter)
    result = DemoResult(timings=steps.timings)
    work = config.workdir
    keys, registry = work / "keys", work / "registry"
    artifacts, data = work / "artifacts", work / "platform"
    for d in (keys, registry, artifacts, data):
        d.mkdir(parents=True, exist_ok=True)
    template_file = config.template_file or config.examples / "templates" / "base.yaml"

    with steps.step(f"validate and compose the example modules ({template_file.name})"):
        reporter.command(f"powernode module compose --template {template_file}")
        name, assignments = load_template(template_file)
        local = plan(name, assignments)
        order = [c.name for c in local.resolution.order]
        by_name = {a.repo.name: a for a in assignments}
        assignments = [by_name[n] for n in order if n in by_name]
        for a in assignments:
            reporter.note(f"valid  {a.repo.name:<20} {a.version}  {len(a.repo.shipped())} paths")
        reporter.note("install order: " + " → ".join(order))
        result.template = name

    with ExitStack() as stack:
        with steps.step("start the platform (SQLite, OCI layout registry)"):
            reporter.command(f"powernode module generate-key-pair   # in {keys}")
            key = make_signing_key(keys)
            reporter.command(
                f"powernode platform token create --data-dir {data} --name demo-operator "
                + " ".join(f"--scope {s}" for s in SCOPES)
            )
            token = create_token(data, "demo-operator", SCOPES)
            server = PlatformProcess.start(data, registry, data / "platform.log")
            stack.callback(server.stop)
            reporter.command(
                f"POWERNODE_REGISTRY={registry} powernode platform serve --data-dir {data} "
                f"--port {server.url.rsplit(':', 1)[1]} &"
            )
            reporter.note(f"platform pid {server.pid} at {server.url} (log {server.log_path})")
            result.url, result.platform_pid = server.url, server.pid
            op = Operator(server.url, token, reporter)
            stack.callback(op.close)
            reporter.note(f"export POWERNODE_URL={server.url} POWERNODE_TOKEN=<the token>")

        secrets: dict[str, str] = {}
        with steps.step("register the modules, trusting the demo signing key"):
            for a in assignments:
                secrets[a.repo.name] = fleet.create_module(op, a, key.public_path, key.public_pem)
            reporter.note(f"{len(secrets)} modules registered; each got its webhook secret once")

        with steps.step("build, push and sign each module (the module repo's CI)"):
            for i, a in enumerate(assignments):
                reporter.progress("build, push, sign", i, len(assignments))
                out = artifacts / a.repo.name
                reporter.command(
                    f"powernode module build {a.repo.path} --out {out} "
                    f"--version {a.version} --no-packages"
                )
                pub = publish_module(
                    a.repo.path,
                    out,
                    registry,
                    key,
                    version=str(a.version),
                    source_date_epoch=config.source_date_epoch,
                )
                reporter.command(f"powernode module push {out} {pub.reference}")
                reporter.command(f"powernode module sign {pub.reference} --key {key.private_path}")
                result.published[a.repo.name] = pub
            reporter.progress("build, push, sign", len(assignments), len(assignments))
            reporter.table(
                *_artifacts_table(list(result.published.values())),
            )

        with steps.step("ingest: the CI's webhook, the platform verifies and records `built`"):
            for a in assignments:
                pub = result.published[a.repo.name]
                fleet_ans = op.ci_webhook(a.repo.name, pub.tag, secrets[a.repo.name])
                log.debug("webhook answer %s", fleet_ans)
            tags = {n: p.tag for n, p in result.published.items()}
            rows = fleet.wait_built(op, tags, timeout=config.ingest_timeout)
            result.version_ids = {n: str(r["version_id"]) for n, r in rows.items()}
            first = assignments[0].repo.name
            versions = op.call(
                ["list-module-versions", first], "GET", f"/node_modules/{first}/versions"
            )
            _show(
                reporter,
                fleet.table(
                    f"versions of {first}",
                    ("version_string", "promotion_state", "cosign_verified", "composefs_digest"),
                    versions["versions"],
                ),
            )

        with steps.step("promote built → staging → blessed → live"):
            for n, vid in result.version_ids.items():
                state = fleet.promote_to_live(op, vid)["version"]["promotion_state"]
                reporter.note(f"{n} {result.published[n].version}: {state}")

        with steps.step(f"assign the modules to template {name!r}"):
            for a in assignments:
                fleet.assign(op, name, a, _default_priority(a))

        with steps.step(f"template {name!r}: composition preview"):
            data_c = op.call(
                ["template-composition", name], "GET", f"/node_templates/{name}/composition"
            )
            for t in fleet.composition_tables(data_c):
                _show(reporter, t)

        with steps.step("register a node and provision an instance; drift report"):
            op.call(
                ["create-node", "--hostname", config.hostname, "--template", name],
                "POST",
                "/nodes",
                {"hostname": config.hostname, "node_template_id": name},
            )
            inst = op.call(
                ["provision-instance", "--node", config.hostname],
                "POST",
                "/node_instances",
                {"node_id": config.hostname},
            )["instance"]
            result.instance_id = str(inst["id"])
            drift = fleet.drift_report(op, result.instance_id)
            _show(reporter, fleet.drift_table(drift))
            result.drift_before = bool(drift["drift"])

        with steps.step("the node reports what it runs; drift report again"):
            reporter.note(
                "no agent in this phase: the heartbeat the node would send "
                "(running_module_digests) is written into the platform's database"
            )
            running = {n: p.build.composefs_digest for n, p in result.published.items()}
            record_heartbeat(
                f"sqlite:///{data / 'platform.db'}",
                result.instance_id,
                running,
                now=datetime.now(UTC),
            )
            drift = fleet.drift_report(op, result.instance_id)
            _show(reporter, fleet.drift_table(drift))
            result.drift_after = bool(drift["drift"])
    return result


def _artifacts_table(pubs: list[Published]) -> tuple[str, list[str], list[list[str]]]:
    headers = ["module", "version", "files", "objects", "composefs digest"]
    rows = [
        [
            p.name,
            p.version,
            str(p.build.files),
            str(p.build.objects),
            fleet.short(p.build.composefs_digest),
        ]
        for p in pubs
    ]
    return "artifacts (signed, in the OCI layout)", headers, rows


def _show(reporter: Reporter, t: fleet.Table) -> None:
    reporter.table(t.title, t.headers, t.rows)
