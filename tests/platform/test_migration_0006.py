"""0006_priority_scale: stored priorities move to the operator's scale and back (issue 13 item 11).

Down to 0005 and up again on SQLite and PostgreSQL, with assignments whose
stored values cover a computed priority, a config module's and an override.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session

from powernode.platform.db.migrate import _config, current_revisions, head_revisions, upgrade
from powernode.platform.db.session import make_engine
from powernode.platform.sealing import Sealer, load_or_create_key
from powernode.platform.services import catalog, templates
from powernode.platform.services.context import SCOPES, Actor, Ctx


def _priorities(engine: object) -> dict[str, tuple[int, int | None]]:
    with engine.connect() as c:  # type: ignore[attr-defined]
        rows = c.execute(
            text(
                "SELECT m.name, a.priority, a.effective_priority FROM node_module_assignments a "
                "JOIN node_modules m ON m.id = a.module_id"
            )
        ).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_down_to_0005_and_up_again(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    try:
        sealer = Sealer(load_or_create_key(tmp_path / "secret.key"))
        with Session(engine) as s:
            ctx = Ctx(s, Actor("test", None, frozenset(SCOPES)), datetime.now(UTC))
            catalog.create_module(ctx, sealer, name="base-mod", category_slug="system-base")
            catalog.create_module(ctx, sealer, name="chrony", category_slug="userland")
            catalog.create_module(ctx, sealer, name="chrony-no-pool", category_slug="userland",
                                  variety="config", parent_module="chrony")  # fmt: skip
            catalog.create_module(ctx, sealer, name="app", category_slug="userland")
            for name in ("base-mod", "chrony", "chrony-no-pool"):
                templates.assign_module(ctx, "base", name)
            templates.assign_module(ctx, "base", "app", effective_priority_override=95)
            s.commit()
        assert _priorities(engine) == {
            "base-mod": (10, None),
            "chrony": (90, None),
            "chrony-no-pool": (90, None),
            "app": (90, 95),
        }
        command.downgrade(_config(engine), "0005_webhook_body_replay")
        assert "0006_priority_scale" not in current_revisions(engine)
        # The old x10 scale: the variety offset back in, the override's same intent.
        assert _priorities(engine) == {
            "base-mod": (100, None),
            "chrony": (900, None),
            "chrony-no-pool": (903, None),
            "app": (900, 950),
        }
        with engine.begin() as c:  # what a runbook follower typed on the old scale
            c.execute(
                text(
                    "UPDATE node_module_assignments SET effective_priority = 95 WHERE module_id = "
                    "(SELECT id FROM node_modules WHERE name = 'chrony')"
                )
            )
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        assert _priorities(engine) == {
            "base-mod": (10, None),
            "chrony": (90, 9),  # sat below system-base (100) before, still does (10)
            "chrony-no-pool": (90, None),
            "app": (90, 95),
        }
    finally:
        engine.dispose()
