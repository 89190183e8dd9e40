"""A stand-in for a node's heartbeat when no agent runs (phase 1 of the demo).

An agent reports the digests it runs in its heartbeat (docs/node-api.md,
``running_module_digests``); without the node API or without root (no
mounts), the demo writes what a heartbeat of a node running the desired set
would carry straight into the platform's database, the only writer being
this function, and says so. The drift report then reads it as it reads any
heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from powernode.errors import DataError
from powernode.platform.db import NodeInstance
from powernode.platform.db.session import make_engine, write_session

log = logging.getLogger(__name__)


def record_heartbeat(
    database_url: str, instance_id: str, digests: Mapping[str, str], *, now: datetime
) -> None:
    """Set ``running_module_digests`` and ``last_heartbeat_at`` of one instance."""
    engine = make_engine(database_url)
    try:
        with write_session(engine) as session, session.begin():
            instance = session.get(NodeInstance, instance_id)
            if instance is None:
                raise DataError(f"instance {instance_id} is not in {database_url}")
            instance.running_module_digests = dict(digests)
            instance.last_heartbeat_at = now
        log.info("heartbeat stand-in: instance %s runs %d modules", instance_id, len(digests))
    finally:
        engine.dispose()
