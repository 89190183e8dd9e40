"""`powernode demo`: seed 004's tutorial end to end, and its failure and clean-up paths.

The end-to-end run is a real child process (the demo starts the platform as
its own child), so the tests can check that no process and no temporary
directory outlives it, on success, on a failing step and on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from powernode.cli.main import app
from powernode.demo import fleet
from powernode.demo.node import mounts_under
from powernode.demo.operator import Operator, OperatorError
from powernode.demo.steps import DemoStepError, Steps
from powernode.errors import DataError
from tests.conftest import require_root

ROOT = Path(__file__).resolve().parents[2]
POWERNODE = [sys.executable, "-c", "from powernode.cli.main import main; main()"]
BASE = ("system-base", "chrony", "chrony-no-pool", "security-hardening", "my-redis", "nginx")


class Recorder:
    """A Reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, number: int, title: str) -> None:
        self.lines.append(f"step {number} {title}")

    def done(self, number: int, title: str, seconds: float) -> None:
        self.lines.append(f"done {number}")

    def command(self, line: str) -> None:
        self.lines.append(f"$ {line}")

    def note(self, text: str) -> None:
        self.lines.append(text)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.lines.append(f"table {title}")

    def progress(self, label: str, done: int, total: int) -> None:
        pass


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _env(tmpdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TMPDIR": str(tmpdir), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    return env


def _gone(pid: int, marker: str) -> bool:
    """No process ``pid`` (or the pid was reused by something not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return marker.encode() not in cmdline


def _ours(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the demo dir)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                continue
    return out


# --- the end-to-end run -----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    mode: str  # "agent" (phase 2, root) or "standin" (--no-agent)
    work: Path
    tmpd: Path
    out: str
    rc: int


@pytest.fixture(scope="module", params=[pytest.param("agent", marks=pytest.mark.mount), "standin"])
def demo_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    mode = request.param
    if mode == "agent":
        require_root()
    base = tmp_path_factory.mktemp(f"demo-{mode}")
    tmpd = base / "tmp"
    tmpd.mkdir()
    work = base / "kept"
    argv = [*POWERNODE, "demo", "--dir", str(work)]
    if mode == "standin":
        argv.append("--no-agent")
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=_env(tmpd), timeout=300, check=False
    )
    return Run(mode, work, tmpd, proc.stdout + proc.stderr, proc.returncode)


@pytest.mark.slow
def test_demo_prints_the_tutorial(demo_run: Run) -> None:
    work, out, rc = demo_run.work, demo_run.out, demo_run.rc
    assert rc == 0, out
    for expected in (
        "powernode platform token create",
        "powernode system create-module nginx --category userland",
        "powernode module build",
        "powernode module sign oci:",
        "X-Gitea-Signature",
        "--to live",
        "powernode system assign-module-to-template --template base --module my-redis",
        "powernode system template-composition base",
        "composition of base",
        "/etc/chrony/chrony.conf",
        "powernode system drift-report --instance",
        "drift of demo-node-1: drift true",
        "drift of demo-node-1: drift false",
        "demo finished",
        "drift true → false",
    ):
        assert expected in out, expected
    # Steps in the tutorial's order.
    titles = re.findall(r"^─* ?(\d+)\. ", out, flags=re.M)
    assert titles == [str(i) for i in range(1, len(titles) + 1)] and len(titles) >= 9
    assert out.index("drift true") < out.index("drift false")
    assert f"files kept in {work}" in out
    if demo_run.mode == "standin":
        assert "phase 2 (the agent mounts the modules) skipped: --no-agent" in out
        assert "(heartbeat stand-in)" in out
        return
    # Phase 2: the agent enrolled, read files through the union, upgraded nginx.
    for expected in (
        "powernode system create-bootstrap-token ",
        "powernode-agent enroll --token-file",
        "powernode-agent modules sync",
        "generation 1: attach chrony, attach chrony-no-pool",
        "generation 2: upgrade nginx",
        "/var/www/healthz/index.html now reads 'ok (upgraded by the demo)'",
        "(agent, union mounted and torn down)",
    ):
        assert expected in out, expected
    union_table = out[out.index("read through the union") :].split("└", 1)[0]
    cells = [
        squash(line).strip("│ ").split(" │ ")
        for line in union_table.splitlines()
        if line.startswith("│ /")
    ]
    rows = {c[0]: c[1:] for c in cells}
    assert rows["/etc/nginx/conf.d/00-security.conf"][:2] == [
        "nginx",
        "ssl_protocols TLSv1.2 TLSv1.3;",
    ]
    assert rows["/etc/chrony/chrony.conf"][0] == "chrony-no-pool"  # the config module's takeover
    assert rows["/etc/motd"][0] == "security-hardening"
    assert rows["/usr/lib/os-release"][0] == "system-base"
    assert rows["/etc/redis/redis.conf"][0] == "my-redis"
    assert out.rindex("drift false") > out.index("generation 2: upgrade nginx")


def check_command_line(line: str) -> None:
    """``line`` names an existing command, its options and as many arguments as it takes."""
    import typer.main

    from powernode.cli.agent import app as agent_app

    words = shlex.split(line)
    roots = {"powernode": app, "powernode-agent": agent_app}
    # Typer's command classes are its own click's: duck-typed, not isinstance.
    cmd: Any = typer.main.get_command(roots[words[0]])
    rest = words[1:]
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    assert not hasattr(cmd, "commands"), f"{line}: no such command"
    options = [p for p in cmd.params if p.param_type_name == "option"]
    known = {o for p in options for o in p.opts + p.secondary_opts}
    takes_value = {o for p in options if not p.is_flag for o in p.opts}
    given = [w for w in rest if w.startswith("--")]
    assert set(given) <= known, f"{line}: unknown option(s) {set(given) - known}"
    args = [
        w
        for i, w in enumerate(rest)
        if not w.startswith("--") and not (i and rest[i - 1] in takes_value)
    ]
    wanted = [p for p in cmd.params if p.param_type_name == "argument"]
    least = sum(1 for p in wanted if p.required)
    most = 10**6 if any(p.nargs == -1 for p in wanted) else len(wanted)
    assert least <= len(args) <= most, (
        f"{line}: {len(args)} argument(s), the command takes {least} to {most}"
    )


@pytest.mark.slow
def test_every_command_line_the_demo_prints_exists(demo_run: Run) -> None:
    # The demo teaches the tutorial by its command lines: each must run as printed.
    lines = [
        ln.removeprefix("$ ").strip()
        for ln in demo_run.out.splitlines()
        if ln.startswith("$ powernode")
    ]
    assert len(lines) > 40
    for line in lines:
        check_command_line(line.split("   #", 1)[0])  # a comment may follow


@pytest.mark.slow
def test_demo_leaves_the_platform_state_the_tutorial_describes(demo_run: Run) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from powernode.platform.db import (
        NodeInstance,
        NodeModule,
        NodeModuleAssignment,
        NodeModuleVersion,
        NodeTemplate,
    )
    from powernode.platform.db.session import make_engine
    from powernode.platform.services.context import Actor, Ctx
    from powernode.platform.services.drift import instance_drift

    work, out, rc = demo_run.work, demo_run.out, demo_run.rc
    assert rc == 0, out
    engine = make_engine(f"sqlite:///{work / 'platform' / 'platform.db'}")
    try:
        with Session(engine) as s:
            versions = s.scalars(select(NodeModuleVersion)).all()
            by_module = {
                v.module.name: v for v in sorted(versions, key=lambda v: v.created_at)
            }  # the newest version of each
            assert sorted(by_module) == sorted(BASE)
            upgraded = "1.26.1" if demo_run.mode == "agent" else "1.26.0"
            assert by_module["nginx"].version_string == upgraded
            assert len(versions) == len(BASE) + (demo_run.mode == "agent")
            assert {v.promotion_state for v in versions} == {"live"}
            assert all(v.cosign_verified and v.composefs_digest for v in versions)
            base = s.scalars(select(NodeTemplate).where(NodeTemplate.name == "base")).one()
            assigned = s.scalars(
                select(NodeModule.name)
                .join(NodeModuleAssignment, NodeModuleAssignment.module_id == NodeModule.id)
                .where(NodeModuleAssignment.template_id == base.id)
            ).all()
            assert sorted(assigned) == sorted(BASE)
            (instance,) = s.scalars(select(NodeInstance)).all()
            assert instance.hostname == "demo-node-1"
            assert instance.running_module_digests == {
                n: v.composefs_digest for n, v in by_module.items()
            }
            actor = Actor("test", None, frozenset({"read"}))
            _, report = instance_drift(Ctx(s, actor, datetime.now(UTC)), instance.id)
            assert not report.drift
            assert {m.status for m in report.modules} == {"ok"}
    finally:
        engine.dispose()
    # The artifacts the platform verified are the ones in the demo's layout.
    index = json.loads((work / "registry" / "index.json").read_text())
    assert index["manifests"]


@pytest.mark.slow
def test_demo_leaves_no_process_no_mount_and_no_temp_dir(demo_run: Run) -> None:
    work, tmpd, out, rc = demo_run.work, demo_run.tmpd, demo_run.out, demo_run.rc
    assert rc == 0, out
    assert mounts_under(work) == []
    pid = int(re.search(r"platform pid (\d+)", out).group(1))  # type: ignore[union-attr]
    assert _gone(pid, str(work))
    assert _ours(str(work)) == []
    assert list(tmpd.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "trigger"),
    [
        (["--no-agent"], "platform pid"),  # the platform is up
        pytest.param([], "heartbeat:", marks=pytest.mark.mount),  # phase 2: union mounted
    ],
    ids=["platform-up", "union-mounted"],
)
def test_sigterm_stops_the_platform_unmounts_and_removes_the_temp_dir(
    tmp_path: Path, flags: list[str], trigger: str
) -> None:
    if not flags:
        require_root()
    tmpd = tmp_path / "tmp"
    tmpd.mkdir()
    proc = subprocess.Popen(
        [*POWERNODE, "demo", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmpd),
    )
    assert proc.stdout is not None
    seen = ""
    triggered = False
    deadline = time.monotonic() + 180
    while not triggered and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            triggered = trigger in line
    try:
        assert triggered, seen
        pid = int(re.search(r"platform pid (\d+)", seen).group(1))  # type: ignore[union-attr]
        workdir = re.search(r"demo dir: (\S+)", seen).group(1)  # type: ignore[union-attr]
        assert Path(workdir).parent == tmpd
        if not flags:
            assert mounts_under(Path(workdir)) != []  # the signal comes while mounted
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest
    assert _gone(pid, workdir)
    assert mounts_under(tmpd) == []
    assert list(tmpd.iterdir()) == []


def test_a_failing_step_exits_non_zero_naming_it(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    tpl = examples / "templates" / "base.yaml"
    tpl.write_text(tpl.read_text().replace("../modules/nginx", "../modules/no-such-module"))
    tmpd = tmp_path / "tmp"
    tmpd.mkdir()
    proc = subprocess.run(
        [*POWERNODE, "demo", "--examples", str(examples)],
        capture_output=True,
        text=True,
        env=_env(tmpd),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "demo failed: step 1 (validate and compose the example templates" in proc.stderr
    assert "no-such-module" in proc.stderr
    assert list(tmpd.iterdir()) == []


@pytest.mark.slow
def test_a_step_failing_while_the_platform_runs_stops_it_and_cleans_up(tmp_path: Path) -> None:
    # A module repo whose rootfs/ is a symlink validates, but module build refuses it (step 4).
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    rootfs = examples / "modules" / "my-redis" / "rootfs"
    rootfs.rename(tmp_path / "redis-rootfs")
    rootfs.symlink_to(tmp_path / "redis-rootfs")
    tmpd = tmp_path / "tmp"
    tmpd.mkdir()
    proc = subprocess.run(
        [*POWERNODE, "demo", "--no-agent", "--examples", str(examples)],
        capture_output=True,
        text=True,
        env=_env(tmpd),
        timeout=180,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "demo failed: step 4 (build, push and sign each module" in squash(proc.stderr)
    assert "rootfs: is a symlink" in squash(proc.stderr)
    pid = int(re.search(r"platform pid (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert _gone(pid, str(tmpd))
    assert list(tmpd.iterdir()) == []


def test_dir_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not an empty directory" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# --- the pieces ------------------------------------------------------------------------------


def test_steps_name_the_failing_step_and_time_the_others() -> None:
    rec = Recorder()
    ticks = iter([0.0, 1.5, 2.0, 3.0])
    steps = Steps(rec, clock=lambda: next(ticks))
    with steps.step("first"):
        pass
    with pytest.raises(DemoStepError) as e, steps.step("second"):
        raise DataError("the thing at fault")
    assert str(e.value) == "step 2 (second) failed: the thing at fault"
    assert e.value.number == 2
    with (
        pytest.raises(DemoStepError, match=r"step 3 \(third\) failed: unexpected answer: KeyError"),
        steps.step("third"),
    ):
        {}["webhook_secret"]
    assert steps.timings == [("first", 1.5)]
    assert rec.lines == ["step 1 first", "done 1", "step 2 second", "step 3 third"]


def test_ci_webhook_is_signed_as_the_platform_checks_it() -> None:
    from powernode.platform.services.webhooks import (
        check_signature,
        parse_payload,
        parse_sender,
        signature_of,
    )

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"accepted": True})

    op = Operator(
        "http://platform", "pnt_x", Recorder(), httpx.MockTransport(handler), clock=lambda: 1e9
    )
    assert op.ci_webhook("nginx", "v1.26.0", "s3cret") == {"accepted": True}
    (req,) = seen
    assert "authorization" not in req.headers  # the webhook carries an HMAC, not a token
    headers = {k.lower(): v for k, v in req.headers.items()}
    claimed = signature_of("gitea", headers)
    assert check_signature(req.content, "s3cret", claimed)
    assert not check_signature(req.content, "other", claimed)
    payload = parse_payload(parse_sender(req.content), "push")
    assert (payload.module, payload.tag) == ("nginx", "v1.26.0")


def test_operator_error_carries_the_problem_detail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer pnt_x"
        return httpx.Response(409, json={"detail": "module 'nginx' exists"})

    rec = Recorder()
    op = Operator("http://platform", "pnt_x", rec, httpx.MockTransport(handler))
    with pytest.raises(OperatorError) as e:
        op.call(["create-module", "nginx"], "POST", "/node_modules", {})
    assert "HTTP 409" in str(e.value) and "module 'nginx' exists" in str(e.value)
    assert rec.lines == ["$ powernode system create-module nginx"]


def _ingests(rows_by_module: dict[str, list[dict[str, Any]]]) -> Operator:
    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.split("/")[-2]
        return httpx.Response(200, json={"ingests": rows_by_module.get(name, [])})

    return Operator("http://platform", "t", Recorder(), httpx.MockTransport(handler))


def test_wait_built_names_a_rejected_tag_and_its_reason() -> None:
    op = _ingests({"nginx": [{"tag": "v1.0.0", "state": "rejected", "reason": "wrong key"}]})
    with pytest.raises(fleet.IngestError, match=r"rejected nginx:v1\.0\.0: wrong key"):
        fleet.wait_built(op, {"nginx": "v1.0.0"}, sleep=lambda s: None)


def test_wait_built_gives_up_in_time_saying_what_is_missing() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    op = _ingests(
        {
            "nginx": [{"tag": "v1.0.0", "state": "built", "version_id": "v1"}],
            "chrony": [{"tag": "v2.0.0", "state": "failed", "reason": "registry away"}],
        }
    )
    with pytest.raises(fleet.IngestError) as e:
        fleet.wait_built(
            op,
            {"nginx": "v1.0.0", "chrony": "v2.0.0", "redis": "v3.0.0"},
            timeout=2,
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert "chrony:v2.0.0 failed (registry away)" in str(e.value)
    assert "redis:v3.0.0 not queued" in str(e.value)
    assert "nginx" not in str(e.value).split("within")[1]


def test_mounts_under_lists_only_that_tree_deepest_first(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /tmp/demo/node/state/run rw - tmpfs tmpfs rw\n"
        "41 40 0:51 / /tmp/demo/node/root rw - overlay overlay rw\n"
        "42 40 0:52 / /tmp/demo/node/state/run/gen-1/layers/my\\040mod ro - erofs x ro\n"
        "43 22 0:53 / /tmp/demo-other rw - tmpfs tmpfs rw\n"
    )
    assert mounts_under(Path("/tmp/demo"), info) == [
        Path("/tmp/demo/node/state/run/gen-1/layers/my mod"),
        Path("/tmp/demo/node/state/run"),
        Path("/tmp/demo/node/root"),
    ]


def test_wait_drift_gives_up_in_time_naming_what_differs() -> None:
    from powernode.demo.tutorial_node import DriftError, wait_drift

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        report = {"drift": True, "modules": [{"name": "nginx", "status": "digest_differs"}]}
        return httpx.Response(200, json=report)

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    op = Operator("http://platform", "t", Recorder(), httpx.MockTransport(handler))
    with pytest.raises(DriftError, match="still drifts after 2 s: nginx digest_differs"):
        wait_drift(op, "i-1", timeout=2, clock=lambda: now[0], sleep=sleep)
    assert 2 <= len(calls) <= 12  # asked again while waiting, and stopped
