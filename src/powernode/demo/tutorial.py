"""Seed 004's tutorial, step by step, on embedded defaults.

:func:`run_demo` lays the demo dir out as::

    <workdir>/keys/        cosign.key, cosign.pub, cosign.password
    <workdir>/registry/    the OCI layout the platform ingests from
    <workdir>/artifacts/   one artifact dir per module version (docs/artifact.md)
    <workdir>/platform/    the platform's data dir (SQLite, secret.key, pki/) and platform.log
    <workdir>/src/         a module repo changed for the upgrade (phase 2)
    <workdir>/node/        the node: state/ (store, agent state, pki) and root/ (the union)

and stops the platform and unmounts the node on every exit path
(``ExitStack``), an exception or a Ctrl-C (``KeyboardInterrupt``) included.
The caller owns the directory.

Phase 1 ends with the drift report of an instance whose heartbeat is a
stand-in (:mod:`.nodesim`). Phase 2 (``node_agent``, needs root for the
mounts) serves the platform with TLS and runs the agent's code instead
(:mod:`.tutorial_node`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from powernode.core.priority import SEEDED_CATEGORIES, effective_priority
from powernode.demo import fleet
from powernode.demo.nodesim import record_heartbeat
from powernode.demo.operator import Operator
from powernode.demo.publishing import Published, SigningKey, make_signing_key, publish_module
from powernode.demo.server import START_TIMEOUT, PlatformProcess, create_token
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
    # Phase 2: enroll the agent, mount the union, upgrade a module (root only).
    node_agent: bool = False
    upgrade_module: str = "nginx"
    # Build every module with its Debian packages (slower: mmdebstrap per module,
    # cached across runs) instead of rootfs/ only.
    packages: bool = False


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
    node_agent: bool = False
    upgraded: Published | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(s for _, s in self.timings)


@dataclass
class Demo:
    """What the steps share: the config, the reporter, the operator and the demo's paths."""

    config: DemoConfig
    reporter: Reporter
    steps: Steps
    result: DemoResult
    key: SigningKey | None = None
    op: Operator | None = None
    server: PlatformProcess | None = None
    secrets: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        p = self.config.workdir / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def operator(self) -> Operator:
        assert self.op is not None, "the platform step runs first"
        return self.op

    def publish(self, a: Assignment, repo: Path, version: str) -> Published:
        """Build, push and sign one module version (the module repo's CI)."""
        assert self.key is not None
        out = self.path("artifacts") / f"{a.repo.name}-{version}"
        flag = "" if self.config.packages else " --no-packages"
        self.reporter.command(
            f"powernode module build {repo} --out {out} --version {version}{flag}"
        )
        pub = publish_module(
            repo,
            out,
            self.path("registry"),
            self.key,
            version=version,
            source_date_epoch=self.config.source_date_epoch,
            packages=self.config.packages,
        )
        self.reporter.command(f"powernode module push {out} {pub.reference}")
        self.reporter.command(
            f"powernode module sign {pub.reference} --key {self.key.private_path}"
        )
        return pub

    def ingest(self, pubs: list[Published]) -> dict[str, str]:
        """The CI's webhook for each, then wait until built; version ids by module."""
        for pub in pubs:
            self.operator.ci_webhook(pub.name, pub.tag, self.secrets[pub.name])
        reporter = self.reporter

        def progress(done: int, total: int) -> None:
            reporter.progress("verified and recorded", done, total)

        rows = fleet.wait_built(
            self.operator,
            {p.name: p.tag for p in pubs},
            timeout=self.config.ingest_timeout,
            progress=progress,
        )
        return {n: str(r["version_id"]) for n, r in rows.items()}


def _default_priority(a: Assignment) -> int:
    position = next(c.position for c in SEEDED_CATEGORIES if c.slug == a.category)
    return effective_priority(position, a.variety)


def run_demo(config: DemoConfig, reporter: Reporter) -> DemoResult:
    """Run every step; raises :class:`~.steps.DemoStepError` naming the step that failed."""
    steps = Steps(reporter)
    demo = Demo(config, reporter, steps, DemoResult(timings=steps.timings))
    with ExitStack() as stack:
        assignments = _validate(demo)
        _start_platform(demo, stack)
        _catalog(demo, assignments)
        _instance(demo)
        if config.node_agent:
            from powernode.demo.tutorial_node import run_node_steps  # noqa: PLC0415 - root only

            by_name = {a.repo.name: a for a in assignments}
            run_node_steps(demo, stack, by_name[config.upgrade_module])
        else:
            _standin_heartbeat(demo)
    return demo.result


def _validate(demo: Demo) -> list[Assignment]:
    """Compose every example template (each must resolve); the demo then runs ``template_file``."""
    cfg, reporter = demo.config, demo.reporter
    template_file = cfg.template_file or cfg.examples / "templates" / "base.yaml"
    others = sorted(p for p in (cfg.examples / "templates").glob("*.yaml") if p != template_file)
    chosen: list[Assignment] = []
    with demo.steps.step(f"validate and compose the example templates (then {template_file.name})"):
        for path in [*others, template_file]:
            reporter.command(f"powernode module compose --template {path}")
            name, assignments = load_template(path)
            local = plan(name, assignments)
            order = [c.name for c in local.resolution.order]
            by_name = {a.repo.name: a for a in assignments}
            ordered = [by_name[n] for n in order if n in by_name]
            reporter.note(f"compose template {name!r}: {len(ordered)} modules")
            for a in ordered:
                paths = len(a.repo.shipped())
                reporter.note(f"valid  {a.repo.name:<20} {a.version}  {paths} paths")
            reporter.note("install order: " + " → ".join(order))
            if path == template_file:
                demo.result.template, chosen = name, ordered
    return chosen


def _start_platform(demo: Demo, stack: ExitStack) -> None:
    """Steps of the tutorial that do not depend on each other run side by side: the
    platform starts (imports, database, keys; docs/platform.md "Start-up") while the
    signing key is made here and ``token create`` runs in a second process (the two
    meet on the new database; db/fresh.py makes it once, under a lock)."""
    reporter, tls = demo.reporter, demo.config.node_agent
    keys, data, registry = demo.path("keys"), demo.path("platform"), demo.path("registry")
    title = "start the platform (SQLite, OCI layout registry" + (", TLS)" if tls else ")")
    with demo.steps.step(title), ThreadPoolExecutor(1) as pool:
        server = PlatformProcess.spawn(data, registry, data / "platform.log", tls=tls)
        stack.callback(server.stop)
        port = server.url.rsplit(":", 1)[1]
        reporter.command(
            f"POWERNODE_REGISTRY={registry} powernode platform serve --data-dir {data} "
            f"--port {port} {'--tls' if tls else '--no-tls'} &"
        )
        reporter.command(
            f"powernode platform token create --data-dir {data} --name demo-operator "
            + " ".join(f"--scope {s}" for s in SCOPES)
        )
        token = pool.submit(create_token, data, "demo-operator", SCOPES, now=datetime.now(UTC))
        reporter.command(f"powernode module generate-key-pair   # in {keys}")
        demo.key = make_signing_key(keys)
        reporter.note(
            f"signing key {demo.key.private_path}; its passphrase (COSIGN_PASSWORD for "
            f"`powernode module sign`) is in {keys / 'cosign.password'}"
        )
        label = "waiting for the platform"
        waited = [0.0]

        def tick(seconds: float) -> None:
            waited[0] = seconds
            reporter.waiting(label, seconds)

        try:
            server.wait_ready(START_TIMEOUT, on_wait=tick)
            secret = token.result(timeout=START_TIMEOUT)
        finally:
            reporter.waited(label, waited[0])
        reporter.note(f"platform pid {server.pid} at {server.url} (log {server.log_path})")
        if server.platform_ca is not None:
            reporter.note(f"platform CA (agents pin it): {server.platform_ca}")
        demo.result.url, demo.result.platform_pid = server.url, server.pid
        demo.server = server
        demo.op = Operator(server.url, secret, reporter, verify=server.verify())
        stack.callback(demo.op.close)
        reporter.note(f"export POWERNODE_URL={server.url} POWERNODE_TOKEN=<the token>")


def _catalog(demo: Demo, assignments: list[Assignment]) -> None:
    op, reporter, result = demo.operator, demo.reporter, demo.result
    name = result.template
    assert demo.key is not None
    with demo.steps.step("register the modules, trusting the demo signing key"):
        for a in assignments:
            demo.secrets[a.repo.name] = fleet.create_module(
                op, a, demo.key.public_path, demo.key.public_pem
            )
        reporter.note(f"{len(demo.secrets)} modules registered; each got its webhook secret once")

    with demo.steps.step("build, push and sign each module (the module repo's CI)"):
        for i, a in enumerate(assignments):
            reporter.progress("build, push, sign", i, len(assignments))
            result.published[a.repo.name] = demo.publish(a, a.repo.path, str(a.version))
        reporter.progress("build, push, sign", len(assignments), len(assignments))
        reporter.table(*_artifacts_table(list(result.published.values())))

    with demo.steps.step("ingest: the CI's webhook, the platform verifies and records `built`"):
        result.version_ids = demo.ingest(list(result.published.values()))
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

    with demo.steps.step("promote built → staging → blessed → live"):
        for n, vid in result.version_ids.items():
            state = fleet.promote_to_live(op, vid)["version"]["promotion_state"]
            reporter.note(f"{n} {result.published[n].version}: {state}")

    with demo.steps.step(f"assign the modules to template {name!r}"):
        for a in assignments:
            fleet.assign(op, name, a, _default_priority(a))

    with demo.steps.step(f"template {name!r}: composition preview"):
        data_c = op.call(
            ["template-composition", name], "GET", f"/node_templates/{name}/composition"
        )
        for t in fleet.composition_tables(data_c):
            _show(reporter, t)


def _instance(demo: Demo) -> None:
    op, cfg, result = demo.operator, demo.config, demo.result
    with demo.steps.step("register a node and provision an instance; drift report"):
        op.call(
            ["create-node", "--hostname", cfg.hostname, "--template", result.template],
            "POST",
            "/nodes",
            {"hostname": cfg.hostname, "node_template_id": result.template},
        )
        inst = op.call(
            ["provision-instance", "--node", cfg.hostname],
            "POST",
            "/node_instances",
            {"node_id": cfg.hostname},
        )["instance"]
        result.instance_id = str(inst["id"])
        drift = fleet.drift_report(op, result.instance_id)
        _show(demo.reporter, fleet.drift_table(drift))
        result.drift_before = bool(drift["drift"])


def _standin_heartbeat(demo: Demo) -> None:
    result, reporter = demo.result, demo.reporter
    with demo.steps.step("the node reports what it runs; drift report again"):
        reporter.note(
            "no agent in this run: the heartbeat a node running the set would send "
            "(running_module_digests) is written into the platform's database"
        )
        running = {n: p.build.composefs_digest for n, p in result.published.items()}
        database = f"sqlite:///{demo.path('platform') / 'platform.db'}"
        record_heartbeat(database, result.instance_id, running, now=datetime.now(UTC))
        drift = fleet.drift_report(demo.operator, result.instance_id)
        _show(reporter, fleet.drift_table(drift))
        result.drift_after = bool(drift["drift"])


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
