"""0004_task_lease_index: down to 0003 and up again on both databases, rows kept."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from powernode.platform.db.migrate import _config, current_revisions, head_revisions, upgrade
from powernode.platform.db.session import make_engine

INDEX = "ix_tasks_offerable"


def _index_names(engine: object) -> set[str]:
    return {i["name"] or "" for i in inspect(engine).get_indexes("tasks")}


def test_down_to_0003_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert INDEX in _index_names(engine)
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO tasks (id, kind, state, payload, attempts, max_attempts, "
                    "available_at, created_at, updated_at) VALUES ('t1', 'k', 'queued', '{}', "
                    "0, 3, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00', "
                    "'2026-01-01 00:00:00+00:00')"
                )
            )
        command.downgrade(_config(engine), "0003_node_api")
        assert INDEX not in _index_names(engine)
        assert "0004_task_lease_index" not in current_revisions(engine)
        with engine.begin() as c:  # leased the 0003 way: available_at left behind
            c.execute(
                text(
                    "INSERT INTO tasks (id, kind, state, payload, attempts, max_attempts, "
                    "available_at, created_at, updated_at, lease_owner, lease_expires_at) "
                    "VALUES ('t2', 'k', 'leased', '{}', 1, 3, '2026-01-01 00:00:00+00:00', "
                    "'2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00', 'i', "
                    "'2026-01-01 00:05:00+00:00')"
                )
            )
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        assert INDEX in _index_names(engine)
        with engine.connect() as c:
            kinds = c.execute(text("SELECT kind FROM tasks WHERE id = 't1'")).all()
            moved = c.execute(
                text("SELECT available_at = lease_expires_at FROM tasks WHERE id = 't2'")
            ).scalar_one()
        assert [k[0] for k in kinds] == ["k"]
        assert moved  # the lease now reads a leased task's expiry from available_at
    finally:
        engine.dispose()


def test_the_index_is_partial(db_url: str) -> None:
    # Finished tasks stay out of it: the predicate is stored with the index.
    engine = make_engine(db_url)
    try:
        with engine.connect() as c:
            if engine.dialect.name == "sqlite":
                sql = c.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": INDEX}
                ).scalar_one()
            else:
                sql = c.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": INDEX}
                ).scalar_one()
        assert "WHERE" in sql.upper()
        assert "queued" in sql
    finally:
        engine.dispose()
