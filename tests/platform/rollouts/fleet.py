"""A small fleet driven through the real node API, for the rollout tests.

Each simulated agent does what the real one does in a sync: ``GET
/node_api/modules``, attach what it is served (or report ``module.attach_failed``
and keep running what it had), then heartbeat the digests it runs. Rollout
progress is the worker's tick (services/rollout_tick.py) on the database.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal
from httpx import ASGITransport, AsyncClient
from sqlalchemy.orm import Session

from powernode.platform.api import node_api
from powernode.platform.app import create_app
from powernode.platform.services import desired_cache, rollout_tick
from powernode.platform.services.context import Actor, Ctx
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.services.providers import RecordingProvider
from powernode.platform.settings import Settings
from tests.platform.nodeapi.conftest import Creds, NodePlatform, _test_client_certificate
from tests.platform.test_preview import assign, publish

MODULE = "app"


def digest(version: str) -> str:
    return "sha256:" + hashlib.sha256(f"{MODULE}-{version}".encode()).hexdigest()


@dataclass
class Fleet:
    p: NodePlatform
    nodes: list[Creds]
    running: dict[str, dict[str, str]] = field(default_factory=dict)
    broken: dict[str, set[str]] = field(default_factory=dict)  # digest -> instances it fails on
    # digest -> instances where it attaches but its init action fails (module.init_failed)
    init_broken: dict[str, set[str]] = field(default_factory=dict)

    def served(self) -> dict[str, str]:
        """instance id -> the version of MODULE the platform serves it now."""
        out = {}
        for c in self.nodes:
            r = self.p.node(c, "GET", "/modules")
            assert r.status_code == 200, r.text
            (m,) = [m for m in r.json()["modules"] if m["name"] == MODULE]
            out[c.instance_id] = m["version"]
        return out

    def sync(self) -> None:
        """Every agent syncs and heartbeats once; heartbeats flushed; one worker tick."""
        p = self.p
        p.clock.advance(1)
        for c in self.nodes:
            doc = p.node(c, "GET", "/modules").json()
            want = {m["name"]: m["composefs_digest"] for m in doc["modules"]}
            have = self.running.setdefault(c.instance_id, {})
            for name, d in want.items():
                if have.get(name) == d:
                    continue
                if c.instance_id in self.broken.get(d, set()):
                    event = {
                        "id": str(uuid.uuid4()),
                        "kind": "module.attach_failed",
                        "severity": "error",
                        "occurred_at": p.clock().isoformat(),
                        "payload": {"module": name, "composefs_digest": d},
                    }
                    r = p.node(c, "POST", "/events", json={"events": [event]})
                    assert r.status_code == 200, r.text
                else:
                    have[name] = d
                    if c.instance_id in self.init_broken.get(d, set()):
                        event = {
                            "id": str(uuid.uuid4()),
                            "kind": "module.init_failed",
                            "severity": "error",
                            "occurred_at": p.clock().isoformat(),
                            "payload": {"module": name, "action": "start", "exit_code": 1},
                        }
                        r = p.node(c, "POST", "/events", json={"events": [event]})
                        assert r.status_code == 200, r.text
            body = {"boot_id": "b", "running_module_digests": dict(have)}
            r = p.node(c, "POST", "/status/heartbeat", json=body)
            assert r.status_code == 200, r.text
        p.state.heartbeats.flush()
        self.tick()

    def tick(self) -> int:
        with Session(self.p.engine) as s:
            n = rollout_tick.tick(Ctx(s, Actor("worker", None, frozenset()), self.p.clock()))
            s.commit()
            return n


def make_fleet(p: NodePlatform, count: int = 20) -> Fleet:
    """``count`` enrolled nodes of template base, all running app 1.0.0 (live)."""
    publish(p, MODULE, "1.0.0", files=["/etc/app.conf"], state="live", digest=digest("1.0.0"))
    assign(p, "base", MODULE)
    fleet = Fleet(p, [p.enroll() for _ in range(count)])
    fleet.sync()
    assert set(fleet.served().values()) == {"1.0.0"}
    return fleet


def restart(p: NodePlatform, db_url: str, tmp_path: Path) -> None:
    """Every platform process replaced by a new one on the same database.

    The old app's buffered heartbeats are dropped, as a SIGKILL would drop them
    (its agents say the same again at their next heartbeat).
    """
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, migrate_on_start=False)
    app = create_app(
        settings, provider=RecordingProvider(), clock=p.clock, node_policy=NodeApiPolicy()
    )
    app.dependency_overrides[node_api.client_certificate] = _test_client_certificate
    old_client = p.client
    portal: BlockingPortal = p.portal
    portal.call(old_client.aclose)
    p.app.state.platform.engine.dispose()
    desired_cache.CACHE.clear()  # in-process memory goes with the process
    p.app = app
    p.client = AsyncClient(transport=ASGITransport(app=app), base_url="http://platform.test")


def rollout(p: NodePlatform, rid: str) -> dict[str, Any]:
    r = p.call("GET", f"/rollouts/{rid}", role="read")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["rollout"]
    return body
