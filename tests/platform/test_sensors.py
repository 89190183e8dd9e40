"""The staging sensor (seed 003): one warning per version left in staging over 24 h."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from powernode.platform.db import FleetEvent
from powernode.platform.services.sensors import STAGING_OVERDUE, staging_sensor
from powernode.platform.worker import IngestWorker
from tests.platform.conftest import Platform
from tests.platform.test_preview import publish


def warnings(p: Platform) -> list[dict[str, Any]]:
    with Session(p.engine) as s:
        rows = s.scalars(select(FleetEvent).where(FleetEvent.kind == STAGING_OVERDUE)).all()
        return [{"severity": e.severity, **e.payload} for e in rows]


def run(p: Platform, now: datetime) -> int:
    with Session(p.engine) as s, s.begin():
        return len(staging_sensor(s, now))


def test_warns_once_after_24_hours_in_staging(platform: Platform, fixed_now: datetime) -> None:
    v = publish(platform, "my-redis", state="staging")
    since = datetime.fromisoformat(v["promoted_at"])
    assert run(platform, since + timedelta(hours=23, minutes=59)) == 0
    assert run(platform, since + timedelta(hours=25)) == 1
    [w] = warnings(platform)
    assert (w["severity"], w["module"], w["version_id"], w["hours"]) == (
        "warning",
        "my-redis",
        v["id"],
        25,
    )
    assert "promote it to blessed or demote it" in w["message"]
    # Later rounds do not repeat the warning.
    assert run(platform, since + timedelta(hours=48)) == 0
    assert len(warnings(platform)) == 1


def test_versions_that_moved_on_do_not_warn(platform: Platform, fixed_now: datetime) -> None:
    publish(platform, "built-only", state="built")
    publish(platform, "blessed", state="blessed")
    assert run(platform, fixed_now + timedelta(days=3)) == 0


def test_back_in_staging_warns_again(platform: Platform, fixed_now: datetime) -> None:
    v = publish(platform, "my-redis", state="staging")
    assert run(platform, fixed_now + timedelta(days=2)) == 1
    path = f"/node_module_versions/{v['id']}"
    assert platform.call("POST", f"{path}/promote", json={"to": "blessed"}).status_code == 200
    assert platform.call("POST", f"{path}/demote", json={}).status_code == 200
    assert run(platform, fixed_now + timedelta(days=4)) == 1
    assert len(warnings(platform)) == 2


def test_the_worker_runs_the_sensor_without_a_registry(
    platform: Platform, fixed_now: datetime
) -> None:
    publish(platform, "my-redis", state="staging")
    worker = IngestWorker(
        platform.app.state.platform.sessions, None, clock=lambda: fixed_now + timedelta(days=2)
    )
    report = worker.run_once()
    assert (report.queued, report.warnings) == (0, 1)
    # The loop form: bounded by max_rounds, the warning is not repeated.
    worker.poll_seconds = 0.01
    worker.run(max_rounds=2)
    assert len(warnings(platform)) == 1
