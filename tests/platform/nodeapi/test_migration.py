"""0003_node_api goes down to 0002_ingest and up again on both databases, rows kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from powernode.errors import ConfigError
from powernode.platform.app import create_app
from powernode.platform.db.migrate import _config, current_revisions, head_revisions, upgrade
from powernode.platform.db.session import make_engine
from powernode.platform.settings import Settings


def test_downgrade_to_0002_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO fleet_events (id, kind, severity, payload, occurred_at, "
                    "agent_event_id) VALUES ('e1', 'x.y', 'info', '{}', "
                    "'2026-01-01 00:00:00+00:00', 'a1')"
                )
            )
        command.downgrade(_config(engine), "0002_ingest")
        names = set(inspect(engine).get_table_names())
        assert "bootstrap_tokens" not in names
        assert "node_certificates" not in names
        assert "agent_event_id" not in {
            c["name"] for c in inspect(engine).get_columns("fleet_events")
        }
        assert "available_at" not in {c["name"] for c in inspect(engine).get_columns("tasks")}
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        with engine.connect() as c:
            kinds = c.execute(text("SELECT kind FROM fleet_events WHERE id = 'e1'")).all()
        assert [k[0] for k in kinds] == ["x.y"]  # the row survived the table rebuilds
    finally:
        engine.dispose()


def test_app_on_an_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'empty.db'}", migrate_on_start=False
    )
    with pytest.raises(ConfigError, match="run powernode platform migrate"):
        create_app(settings)
