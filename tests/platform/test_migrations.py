"""Migrations: upgrade from empty on both databases, match the models, seed the catalog."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from powernode.core.priority import SEEDED_CATEGORIES
from powernode.platform.db import Base
from powernode.platform.db.migrate import current_revisions, head_revisions, upgrade
from powernode.platform.db.session import make_engine


def test_upgrade_from_empty_creates_every_table_and_seeds(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert current_revisions(engine) == ()
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        with engine.connect() as c:
            cats = c.execute(
                text("SELECT slug, position FROM node_module_categories ORDER BY position")
            ).all()
            tpls = c.execute(text("SELECT name FROM node_templates ORDER BY name")).all()
        assert [(r[0], r[1]) for r in cats] == [(c.slug, c.position) for c in SEEDED_CATEGORIES]
        assert [r[0] for r in tpls] == ["base", "hardened"]
    finally:
        engine.dispose()


def test_migration_matches_models(db_url: str) -> None:
    # Autogenerate finds nothing to do: the hand-kept migration and the
    # models describe the same schema on this database.
    engine = make_engine(db_url)
    try:
        with engine.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as c:
            n = c.execute(text("SELECT count(*) FROM node_module_categories")).scalar_one()
        assert n == len(SEEDED_CATEGORIES)
    finally:
        engine.dispose()
