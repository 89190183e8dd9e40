"""Run `powernode-agent` as a process (optionally inside a network namespace) for e2e/fault tests.

``Netns`` creates a namespace and a veth pair with a /30 from 10.213.0.0/16,
the host end outside, the node end inside, and removes both. Nothing is
ever sent from the host to the namespace side: the agent inside connects out
to the platform listening on the host end.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from powernode.run import run

AGENT = str(Path(sys.executable).with_name("powernode-agent"))


class Netns:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"pn-agent-{tag}"
        self.host_if = f"pnh{tag}"
        self.node_if = f"pnn{tag}"
        used = run(["ip", "-o", "-4", "addr"]).stdout.decode()
        for _ in range(100):
            third, fourth = random.randrange(256), random.randrange(0, 256, 4)  # noqa: S311
            self.host_ip = f"10.213.{third}.{fourth + 1}"
            self.node_ip = f"10.213.{third}.{fourth + 2}"
            if f"10.213.{third}.{fourth}" not in used and self.host_ip not in used:
                break
        run(["ip", "netns", "add", self.name])
        try:
            run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if])
            run(["ip", "link", "set", self.node_if, "netns", self.name])
            run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
            run(["ip", "link", "set", self.host_if, "up"])
            inside = ["ip", "netns", "exec", self.name]
            run([*inside, "ip", "addr", "add", f"{self.node_ip}/30", "dev", self.node_if])
            run([*inside, "ip", "link", "set", self.node_if, "up"])
            run([*inside, "ip", "link", "set", "lo", "up"])
        except BaseException:
            self.remove()
            raise

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def remove(self) -> None:
        run(["ip", "link", "del", self.host_if], check=False)
        run(["ip", "netns", "del", self.name], check=False)


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("POWERNODE_AGENT_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def agent_cmd(args: list[str], prefix: list[str] | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        [*(prefix or []), AGENT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=agent_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"powernode-agent {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


class AgentProcess:
    """`powernode-agent service` in the background; stopped by the test or the fixture."""

    def __init__(self, config: Path, log: Path, prefix: list[str] | None = None) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [*(prefix or []), AGENT, "service", "--config", str(config)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=agent_env(),
        )

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 30, every: float = 0.05
) -> None:
    """Poll ``check`` until true; fail saying ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def write_config(path: Path, **values: object) -> Path:
    lines = []
    for key, value in values.items():
        if isinstance(value, str | Path):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path
