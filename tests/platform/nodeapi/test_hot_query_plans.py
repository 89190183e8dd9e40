"""The hot paths' statements at fleet volume use indexes (issue 19 line 3), on PostgreSQL.

The database is loaded with 100,000 nodes and instances (and their agent
status), 300,000 tasks, 500,000 fleet events and 200,000 audit rows with
``generate_series``, then ANALYZEd. Each statement the hot requests send
(heartbeat + flush, lease, outcomes, events, desired set, and retention's
batched delete) is captured with its parameters as the app sent it
(tests/platform/nodeapi/test_statement_counts.py) and EXPLAINed: none may
read a large table with a sequential scan.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from powernode.platform.services import retention
from powernode.platform.services.retention import Rule
from tests.platform.nodeapi.conftest import NodePlatform
from tests.platform.nodeapi.test_statement_counts import Sent, counting, hot_requests

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INSTANCES = 100_000
LARGE = {"nodes", "node_instances", "node_agent_status", "tasks", "fleet_events", "audit_log"}

VOLUME = [
    """INSERT INTO nodes (id, account, hostname, template_id, metadata, created_at)
       SELECT 'vn' || g, 'default', 'vol-' || g, :tpl, '{}', now()
       FROM generate_series(1, :n) g""",
    """INSERT INTO node_instances (id, node_id, hostname, template_id, status, provider,
                                   running_module_digests, created_at, cert_serial)
       SELECT 'vi' || g, 'vn' || g, 'vol-' || g, :tpl, 'running', 'recording', '{}', now(),
              'serial' || g
       FROM generate_series(1, :n) g""",
    """INSERT INTO node_agent_status (instance_id, boot_id, agent_version, mounts, load, mem,
                                      reported_at)
       SELECT 'vi' || g, 'boot', '1', '{}', '[]', '{}', now() FROM generate_series(1, :n) g""",
    """INSERT INTO tasks (id, kind, state, instance_id, payload, attempts, created_at,
                          updated_at, max_attempts, available_at)
       SELECT 'vt' || g, 'x', CASE WHEN g % 10 = 0 THEN 'queued' ELSE 'succeeded' END,
              'vi' || (g % :n + 1), '{}', 0, now(), now(), 3, now()
       FROM generate_series(1, 3 * :n) g""",
    """INSERT INTO fleet_events (id, kind, severity, node_id, instance_id, payload,
                                 occurred_at, agent_event_id)
       SELECT 've' || g, 'agent.x', 'info', 'vn' || (g % :n + 1), 'vi' || (g % :n + 1), '{}',
              now() - make_interval(secs => g), 'a' || g
       FROM generate_series(1, 5 * :n) g""",
    """INSERT INTO audit_log (id, at, actor, action, target_type, detail, summary)
       SELECT 'va' || g, now() - make_interval(secs => g), 'x', 'y', 'z', '{}', ''
       FROM generate_series(1, 2 * :n) g""",
]


def _seq_scans(plan: dict[str, Any]) -> list[str]:  # Any: EXPLAIN's JSON
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in LARGE:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_hot_statements_use_indexes_at_100k_nodes(node_platform: NodePlatform) -> None:
    p = node_platform
    with p.engine.begin() as c:
        tpl = c.execute(text("SELECT id FROM node_templates WHERE name = 'base'")).scalar_one()
        for sql in VOLUME:
            c.execute(text(sql), {"tpl": tpl, "n": INSTANCES})
    with p.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("ANALYZE"))
        assert c.execute(text("SELECT count(*) FROM node_instances")).scalar_one() == INSTANCES

    sent: list[tuple[str, Sent]] = [(route, s) for route, ss in hot_requests(p).items() for s in ss]
    now = datetime.now(UTC)
    with counting(p) as purge:
        retention.purge_table(
            p.state.engine, "fleet_events", Rule(timedelta(days=30), 1_000_000), now,
            batch_size=1000, max_batches=1,
        )  # fmt: skip
    sent += [("retention", s) for s in purge]
    assert len(sent) > 15

    bad = []
    with p.state.engine.connect() as c:
        # The check itself: a filter on a column no index leads with is a Seq Scan.
        control = c.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) SELECT id FROM fleet_events WHERE severity = 'nope'"
        ).scalar_one()
        assert _seq_scans(
            (control if isinstance(control, list) else json.loads(control))[0]["Plan"]
        )
        for route, (statement, params) in sent:
            row = c.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
            doc = row if isinstance(row, list) else json.loads(row)
            scans = _seq_scans(doc[0]["Plan"])
            if scans:
                bad.append(f"{route}: Seq Scan on {', '.join(scans)}: {statement[:200]}")
        c.rollback()
    assert not bad, "\n".join(bad)
