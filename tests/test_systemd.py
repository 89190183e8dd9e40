"""systemd integration: sd_notify, journald's native protocol, and the unit files."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from powernode import logsetup
from powernode.systemd import Notifier

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "packaging" / "systemd"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield s, path
    s.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False


def test_ready_status_and_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("serving on 127.0.0.1:8443")
    assert s.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:8443"
    assert n.stopping()
    assert s.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address() -> None:
    name = f"powernode-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert s.recv(100) == b"READY=1"


def test_watchdog_pings_at_half_the_interval(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})  # 10 s
    assert n.watchdog_interval == 10.0
    assert n.watchdog(now=100.0)
    assert not n.watchdog(now=104.9)  # within half the interval: nothing sent
    assert n.watchdog(now=105.0)
    assert s.recv(100) == b"WATCHDOG=1"
    assert s.recv(100) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "x"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
    ],
    ids=["zero", "garbage", "other-pid", "this-pid"],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval == interval


def test_a_vanished_socket_is_not_fatal(tmp_path: Path) -> None:
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False


def parse_journal(data: bytes) -> dict[str, str]:
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            fields[line.decode()] = data[nl + 9 : nl + 9 + n].decode()
            i = nl + 9 + n + 1
    return fields


def test_journal_fields(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    logsetup.configure("journal", journal=path)
    try:
        log = logging.getLogger("powernode.test")
        log.warning("pulled %s", "nginx", extra={"instance": "i-1", "digest": "sha256:ab"})
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("failed")
        first = parse_journal(s.recv(65536))
        second = parse_journal(s.recv(65536))
    finally:
        logsetup.reset()
    assert first["MESSAGE"] == "pulled nginx"
    assert first["PRIORITY"] == "4"
    assert first["POWERNODE_LOGGER"] == "powernode.test"
    assert first["POWERNODE_INSTANCE"] == "i-1"
    assert first["POWERNODE_DIGEST"] == "sha256:ab"
    assert first["CODE_FUNC"] == "test_journal_fields"
    assert second["PRIORITY"] == "3"
    assert "ValueError: bad\nthing" in second["MESSAGE"]  # a multi-line value, length-framed


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logsetup.configure("json")
    try:
        logging.getLogger("powernode.x").info("hello %d", 3, extra={"node": "n1"})
    finally:
        logsetup.reset()
    doc = json.loads(capsys.readouterr().err.strip())
    assert doc["msg"] == "hello 3"
    assert doc["level"] == "info"
    assert doc["logger"] == "powernode.x"
    assert doc["node"] == "n1"


def test_journal_without_a_socket_falls_back_to_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logsetup.configure("journal", journal=str(tmp_path / "none"))
    try:
        logging.getLogger("p").warning("w")
    finally:
        logsetup.reset()
    assert json.loads(capsys.readouterr().err)["msg"] == "w"


def test_unknown_log_format() -> None:
    with pytest.raises(ValueError, match="use one of text, json, journal"):
        logsetup.configure("xml")


# -- the unit files ------------------------------------------------------------------

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this environment's commands.

    `systemd-analyze verify` checks that the command exists; the units name the
    documented install path /opt/powernode/bin, which a test machine lacks.
    """
    bindir = Path(sys.executable).parent
    assert (bindir / "powernode").exists()
    for unit in UNITS.glob("*.service"):
        (tmp_path / unit.name).write_text(
            unit.read_text().replace("/opt/powernode/bin", str(bindir))
        )
    return tmp_path


@needs_analyze
def test_units_verify_clean(installed_units: Path) -> None:
    units = sorted(str(p) for p in installed_units.glob("*.service"))
    assert len(units) == 3
    run = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr  # no warning either (unknown keys, missing man pages)


@needs_analyze
@pytest.mark.parametrize(
    ("unit", "ceiling"),
    [("powernode-platform.service", 3.0), ("powernode-worker.service", 3.0)],
)
def test_exposure_of_the_platform_units(installed_units: Path, unit: str, ceiling: float) -> None:
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed_units / unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert m, run.stdout[-500:] + run.stderr
    assert float(m.group(1)) <= ceiling


def test_units_declare_notify_and_watchdog() -> None:
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert "Type=notify" in text
        assert re.search(r"^WatchdogSec=\d+s$", text, re.M), unit.name
        assert "Restart=" in text and "RestartSec=" in text


def test_agent_unit_lists_why_it_keeps_each_capability() -> None:
    text = (UNITS / "powernode-agent.service").read_text()
    kept = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    assert kept
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for cap in kept.group(1).split():
        assert cap in comments, f"{cap} is kept without a reason in the unit's comments"


# -- the real processes under a stand-in for systemd's notify socket -------------------


def _collect(s: socket.socket, until: Callable[[list[str]], bool], seconds: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until(got):
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            break
    return got


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_platform_serve_reports_ready_pings_the_watchdog_and_logs_json(
    tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    s, path = listener
    port = _free_port()
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}  # 1 s
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "powernode.cli.main", "platform", "serve", "--no-tls",
         "--data-dir", str(tmp_path / "data"), "--port", str(port), "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        got = _collect(s, lambda m: m.count("WATCHDOG=1") >= 3, 60)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    got += _collect(s, lambda m: "STOPPING=1" in m, 5)
    ready = [m for m in got if m.startswith("READY=1")]
    assert ready == [f"READY=1\nSTATUS=serving on 127.0.0.1:{port}"], (got, err[-2000:])
    assert got.index(ready[0]) < got.index("WATCHDOG=1")
    assert got.count("WATCHDOG=1") >= 3  # every half second from the event loop's tick
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err[-2000:]
    assert all({"ts", "level", "logger", "msg"} <= set(doc) for doc in lines)
    # A graceful stop: STOPPING told, then uvicorn re-raises SIGTERM, which systemd
    # counts as a clean exit for a service.
    assert "STOPPING=1" in got
    assert proc.returncode in (0, -15)


@pytest.mark.slow
def test_platform_worker_reports_ready_after_its_first_round(
    tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    s, path = listener
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "powernode.cli.main", "platform", "worker",
         "--data-dir", str(tmp_path / "data")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        got = _collect(s, lambda m: m.count("WATCHDOG=1") >= 2, 60)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert any(m.startswith("READY=1") for m in got), (got, err[-2000:])
    assert got.count("WATCHDOG=1") >= 2


@pytest.mark.parametrize(
    "argv",
    [["platform", "serve"], ["platform", "worker"]],
    ids=["serve", "worker"],
)
def test_an_unknown_log_format_is_a_usage_error(argv: list[str], tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "powernode.cli.main", *argv, "--data-dir", str(tmp_path),
         "--log-format", "xml"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--log-format" in run.stderr and "text, json, journal" in run.stderr
    assert not (tmp_path / "platform.db").exists()  # refused before anything was made


def test_a_receiver_that_does_not_read_never_blocks_the_sender(
    listener: tuple[socket.socket, str],
) -> None:
    """The queue of an AF_UNIX datagram socket holds ~10 datagrams: past that a
    message is dropped (False), the service's loop is never stuck on it."""
    _s, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    results = [n.status(f"message {i}") for i in range(200)]
    assert results[0] is True
    assert results[-1] is False  # dropped, not blocked
