"""schemathesis against /openapi.json, in process (ASGI), on SQLite: no 5xx, no schema
violations. Bounded: a few examples per operation, no shrinking, a deadline per call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings

EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]

pytestmark = pytest.mark.slow


@pytest.fixture
def api(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    db = tmp_path / "platform.db"
    db.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{db}"
    app = create_app(Settings(data_dir=tmp_path, database_url=url, migrate_on_start=False))
    engine = make_engine(url)
    with Session(engine) as s:
        ctx = Ctx(s, Actor("schemathesis", None, frozenset(SCOPES)), datetime.now(UTC))
        secret = create_token(ctx, "fuzz", list(SCOPES))[1]
        s.commit()
    engine.dispose()
    yield app, {"Authorization": f"Bearer {secret}"}
    app.state.platform.engine.dispose()


def test_every_operation_survives_generated_input(api: tuple[Any, dict[str, str]]) -> None:
    app, auth = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls: list[int] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 30

    for op in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            calls.append(1)
            try:
                case.call_and_validate(headers=auth, checks=CHECKS)
            except Exception as e:  # collect every operation's failure, then report all
                failures.append(f"{case.method} {case.path}: {str(e)[:800]}")
                raise

        try:
            run()
        except Exception:  # noqa: S112 - recorded above
            continue
    assert not failures, "\n\n".join(failures[:10])
    assert len(calls) >= 3 * len(operations)
