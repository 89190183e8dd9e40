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
from collections.abc import Iterator
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
