"""0007_instance_identity: down to 0006 and up again on both databases; live identities filled."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from powernode.platform.db.migrate import _config, current_revisions, head_revisions, upgrade
from powernode.platform.db.session import make_engine

_T = "2026-01-01 00:00:0{}+00:00"


def _columns(engine: object) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("node_instances")}


def _instance(c: object, iid: str, status: str) -> None:
    c.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO node_instances (id, node_id, hostname, template_id, status, provider, "
            "running_module_digests, created_at) SELECT :iid, n.id, :iid, n.template_id, "
            ":status, 'recording', '{}', '2026-01-01 00:00:00+00:00' FROM nodes n "
            "WHERE n.hostname = 'n0'"
        ),
        {"iid": iid, "status": status},
    )


def _cert(c: object, iid: str, serial: str, second: int, revoked: bool = False) -> None:
    at = _T.format(second)
    c.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO node_certificates (id, instance_id, serial, fingerprint, issued_at, "
            "not_after, reason, revoked_at) VALUES (:s, :iid, :s, :s, :at, :at, 'enroll', :rev)"
        ),
        {"iid": iid, "s": serial, "at": at, "rev": at if revoked else None},
    )


def test_down_to_0006_and_up_again_fills_the_live_identities(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert {"cert_serial", "new_cert_serial", "cert_rotated_at"} <= _columns(engine)
        command.downgrade(_config(engine), "0006_priority_scale")
        assert "cert_serial" not in _columns(engine)
        assert "node_rate_buckets" not in inspect(engine).get_table_names()
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO nodes (id, account, hostname, template_id, metadata, created_at) "
                    "SELECT 'n0', 'default', 'n0', id, '{}', '2026-01-01 00:00:00+00:00' "
                    "FROM node_templates WHERE name = 'base'"
                )
            )
            _instance(c, "rotated", "running")  # enrolled, rotated twice
            for second, serial in enumerate(["r1", "r2", "r3"]):
                _cert(c, "rotated", serial, second)
            _instance(c, "one", "running")
            _cert(c, "one", "o1", 0)
            _instance(c, "revoked", "running")
            _cert(c, "revoked", "v1", 0, revoked=True)
            _instance(c, "ended", "terminated")
            _cert(c, "ended", "e1", 0)
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        with engine.connect() as c:
            rows = c.execute(
                text("SELECT id, cert_serial, new_cert_serial FROM node_instances ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [
            ("ended", None, None),
            ("one", "o1", None),
            ("revoked", None, None),
            ("rotated", "r2", "r3"),  # the newest, or the one before if its answer was lost
        ]
    finally:
        engine.dispose()
