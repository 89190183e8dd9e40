"""0005_webhook_body_replay: down to 0004 and up again on both databases, rows kept."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from powernode.platform.db.migrate import _config, current_revisions, head_revisions, upgrade
from powernode.platform.db.session import make_engine

UNIQUE = "uq_webhook_deliveries_body"
_ROW = (
    "INSERT INTO webhook_deliveries (id, provider, delivery_id, event, ref, received_at{col}) "
    "VALUES (:id, 'gitea', :id, 'push', 'v1', '2026-01-01 00:00:00+00:00'{val})"
)


def _uniques(engine: object) -> set[str]:
    return {u["name"] or "" for u in inspect(engine).get_unique_constraints("webhook_deliveries")}


def test_down_to_0004_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert UNIQUE in _uniques(engine)
        command.downgrade(_config(engine), "0004_task_lease_index")
        assert UNIQUE not in _uniques(engine)
        assert "0005_webhook_body_replay" not in current_revisions(engine)
        with engine.begin() as c:  # deliveries stored the 0004 way: no body hash
            for i in ("a", "b"):
                c.execute(text(_ROW.format(col="", val="")), {"id": i})
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        assert UNIQUE in _uniques(engine)
        with engine.connect() as c:
            rows = c.execute(
                text("SELECT id, body_sha256 FROM webhook_deliveries ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [("a", "unknown:a"), ("b", "unknown:b")]
        with pytest.raises(IntegrityError), engine.begin() as c:  # the hash is required now
            c.execute(text(_ROW.format(col="", val="")), {"id": "c"})
    finally:
        engine.dispose()
