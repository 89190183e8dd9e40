"""`powernode platform worker --once` and `system list-module-ingests` / `ingest-module-version`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from powernode.cli.platform import app as platform_app
from powernode.cli.system import Remote
from powernode.cli.system import app as system_app
from tests.platform.conftest import Platform
from tests.platform.test_drift_cli import PortalTransport
from tests.platform.test_preview import publish

runner = CliRunner()


def test_worker_once_runs_the_sensor_without_a_registry(
    platform: Platform, db_url: str, tmp_path: Path
) -> None:
    # Promoted at the fixture's fixed time, long before the worker's real clock: overdue.
    publish(platform, "my-redis", state="staging")
    args = ["worker", "--once", "--json", "--database", db_url, "--data-dir", str(tmp_path)]
    r = runner.invoke(platform_app, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {
        "queued": 0,
        "built": 0,
        "rejected": 0,
        "failed": 0,
        "warnings": 1,
        "rollouts": 0,
        "purged": 0,  # no row of the fixture is past its default retention
    }


def test_queue_and_list_ingests(platform: Platform) -> None:
    publish(platform, "my-redis", state="built")
    remote = Remote("http://platform.test", platform.tokens["write"])
    remote.transport = PortalTransport(platform.portal, platform.app)
    r = runner.invoke(
        system_app, ["ingest-module-version", "my-redis", "v2.0.0", "--json"], obj=remote
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ingest"]["state"] == "queued"
    r = runner.invoke(system_app, ["list-module-ingests", "my-redis"], obj=remote)
    assert r.exit_code == 0, r.output
    assert "v2.0.0" in r.output
    assert "queued" in r.output
    r = runner.invoke(system_app, ["ingest-module-version", "my-redis", "latest"], obj=remote)
    assert r.exit_code == 1
    assert "not a SemVer version" in r.output
