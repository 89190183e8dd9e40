"""The real platform (SQLite, migrated) served over mTLS by tlsserve in a thread.

For end-to-end tests with the real agent: ``token(instance)`` and
``add_task`` act as the operator (services, in process), ``tasks()``,
``events()`` and ``instance()`` read the database. Real time throughout:
OpenSSL checks the server certificate against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.platform.app import create_app
from powernode.platform.db import FleetEvent, NodeCertificate, NodeInstance, Task
from powernode.platform.db.session import make_engine, write_session
from powernode.platform.services import nodes
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.nodeapi import enroll, tasks
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.settings import Settings
from powernode.platform.tlsserve import server_identity
from tests.platform.nodeapi_tls.tlsserver import running

ADMIN = Actor("test-operator", None, frozenset(SCOPES))


@dataclass
class RealPlatform:
    url: str
    ca_file: Path  # the platform CA the agent pins
    app: Any
    engine: Any

    def _ctx(self, session: Session) -> Ctx:
        # The platform's own clock: a test may run it behind real time.
        return Ctx(session, ADMIN, self.app.state.platform.clock())

    def instance(self, hostname: str) -> str:
        with write_session(self.engine) as s:
            ctx = self._ctx(s)
            nodes.create_node(ctx, hostname, "base")
            iid = nodes.provision_instance(ctx, self.app.state.platform.provider, hostname).id
            s.commit()
            return iid

    def token(self, instance_id: str) -> str:
        with write_session(self.engine) as s:
            _, secret = enroll.create_bootstrap_token(
                self._ctx(s), instance_id, timedelta(minutes=10)
            )
            s.commit()
            return secret

    def add_task(self, instance_id: str, kind: str, payload: dict[str, Any] | None = None) -> str:
        with write_session(self.engine) as s:
            task = tasks.enqueue(self._ctx(s), instance_id, kind, payload or {}, 3)
            s.commit()
            return task.id

    def tasks(self) -> dict[str, Task]:
        with Session(self.engine) as s:
            return {t.id: t for t in s.scalars(select(Task))}

    def certificates(self) -> int:
        with Session(self.engine) as s:
            return len(s.scalars(select(NodeCertificate)).all())

    def events(self, instance_id: str) -> list[FleetEvent]:
        with Session(self.engine) as s:
            q = select(FleetEvent).where(
                FleetEvent.instance_id == instance_id, FleetEvent.agent_event_id.is_not(None)
            )
            return list(s.scalars(q))

    def row(self, instance_id: str) -> NodeInstance:
        self.app.state.platform.heartbeats.flush()
        with Session(self.engine) as s:
            found = s.get(NodeInstance, instance_id)
            assert found is not None
            return found


@contextlib.contextmanager
def real_platform(
    tmp_path: Path, host: str = "127.0.0.1", policy: NodeApiPolicy | None = None
) -> Iterator[RealPlatform]:
    data = tmp_path / "platform"
    settings = Settings(data_dir=data, host=host, port=8400, tls=True)
    app = create_app(settings, node_policy=policy)
    _, _, ca = server_identity(settings, now=datetime.now(UTC))
    assert ca is not None
    engine = make_engine(settings.effective_database_url)
    try:
        with running(app, settings, host) as url:
            yield RealPlatform(url, ca, app, engine)
    finally:
        engine.dispose()
