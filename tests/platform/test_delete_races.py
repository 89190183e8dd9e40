"""Issue 13 item 8 under concurrency: delete-module and assign sent together, two processes.

Without force, a delete must never cascade over an assignment: of the two
requests at most one succeeds, and if the delete succeeded no assignment of
the module exists. 30 rounds on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.platform.processes import Platforms, two_platforms
from tests.platform.test_promotion_races import ROUNDS, together

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(db_url: str, tmp_path: Path) -> Iterator[Platforms]:
    with two_platforms(db_url, tmp_path) as p:
        yield p


def test_delete_and_assign_at_once_never_cascade_silently(procs: Platforms) -> None:
    for i in range(ROUNDS):
        name = f"held-{i}"
        body = {"name": name, "category_slug": "userland"}
        assert procs.call(0, "POST", "/node_modules", json=body).status_code == 201
        d, a = together(
            partial(procs.call, 0, "DELETE", f"/node_modules/{name}", role="write"),
            partial(
                procs.call,
                1,
                "POST",
                "/node_templates/base/assignments",
                role="write",
                json={"module_name": name},
            ),
        )
        assert d.status_code in {200, 409}, d.text
        assert a.status_code in {201, 404, 409}, a.text
        assert not (d.status_code == 200 and a.status_code == 201), (d.text, a.text)
        got = procs.call(0, "GET", "/node_templates/base", role="read").json()["template"]
        assigned = {x["module_name"] for x in got["assignments"]}
        exists = procs.call(0, "GET", f"/node_modules/{name}", role="read").status_code == 200
        assert (name in assigned) == (a.status_code == 201)
        assert exists == (d.status_code != 200)
        if d.status_code == 409:
            assert d.json()["templates"] == ["base"], d.text
