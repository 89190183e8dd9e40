"""Helpers for the node-command tests: an agent enrolled with the real platform, an operator.

``enrolled`` writes the agent config and runs ``powernode-agent enroll`` (a
process); ``Operator`` calls the platform's operator API over its TLS
listener with a bearer token made in the database, as an operator's CLI would.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from powernode.platform.app import API_PREFIX
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from tests.agent.agentproc import agent_cmd, write_config
from tests.platform.nodeapi.realplatform import RealPlatform


@dataclass
class Enrolled:
    instance_id: str
    config: Path
    state: Path


def enrolled(tmp_path: Path, platform: RealPlatform, hostname: str, **values: Any) -> Enrolled:
    iid = platform.instance(hostname)
    token = tmp_path / f"{hostname}.token"
    token.write_text(platform.token(iid) + "\n")
    state = tmp_path / f"{hostname}-state"
    settings: dict[str, Any] = {
        "platform_url": platform.url,
        "state_dir": state,
        "heartbeat_seconds": 0.2,
        "host_root": tmp_path,
        **values,
    }
    config = write_config(tmp_path / f"{hostname}.toml", **settings)
    out = agent_cmd(
        [
            "enroll",
            "--config",
            str(config),
            "--token-file",
            str(token),
            "--platform-ca",
            str(platform.ca_file),
            "--no-discover",
            "--json",
        ]
    )
    assert json.loads(out)["instance_id"] == iid
    return Enrolled(iid, config, state)


class Operator:
    """The operator API (``/api/v1/system``) over HTTPS with an admin token."""

    def __init__(self, platform: RealPlatform) -> None:
        with Session(platform.engine) as s:
            ctx = Ctx(
                s, Actor("test-setup", None, frozenset(SCOPES)), platform.app.state.platform.clock()
            )
            secret = create_token(ctx, "node-ops", ["write", "promote-live"])[1]
            s.commit()
        self.http = httpx.Client(
            base_url=platform.url + API_PREFIX,
            verify=ssl.create_default_context(cafile=str(platform.ca_file)),
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def close(self) -> None:
        self.http.close()

    def task(self, instance_id: str, kind: str, payload: dict[str, Any]) -> str:
        """Enqueue a task through the API (the platform's own write transaction)."""
        r = self.call("POST", f"/node_instances/{instance_id}/tasks",
                      json={"kind": kind, "payload": payload})  # fmt: skip
        assert r.status_code == 201, r.text
        task_id: str = r.json()["task"]["id"]
        return task_id
