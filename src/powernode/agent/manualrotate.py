"""Manual certificate rotation (seed 000): ``powernode-agent rotate`` and the ``agent.rotate`` task.

"Operator can manually rotate via powernode-agent CLI or platform-side POST
/node_api/certificates/rotate proxy." The CLI rotates with its own client;
the platform's proxy (``POST /api/v1/node_instances/{id}/certificates/rotate``)
enqueues an ``agent.rotate`` task, and the running agent's handler rotates
with a client of its own. Either way the new pair is installed on disk (the
old certificate archived) and the running service switches to it on its
next beat (:func:`rotated_on_disk`): until the node presents the new
certificate, the platform keeps accepting the old one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from powernode.agent.certstore import CertInfo, CertStore, Credentials, rfc3339
from powernode.agent.rotation import rotate
from powernode.agent.tasks import TaskContext, TaskError
from powernode.agent.transport import NodeClient
from powernode.errors import PowernodeError
from powernode.node.fields import JSON

# One rotation at a time in this process (the loop's own and a task's).
ROTATION_LOCK = threading.Lock()


def rotate_now(store: CertStore, client: NodeClient, now: datetime) -> dict[str, JSON]:
    """Rotate with ``client``; what changed, as JSON-ready data."""
    with ROTATION_LOCK:
        old = store.info()
        if old is None:
            raise PowernodeError(
                "not enrolled: nothing to rotate (run 'powernode-agent enroll' first)"
            )
        new = rotate(store, client, now)
    return _doc(old, new)


def _doc(old: CertInfo, new: CertInfo) -> dict[str, JSON]:
    return {
        "instance_id": new.instance_id,
        "old_serial": f"{old.serial:x}",
        "new_serial": f"{new.serial:x}",
        "not_after": rfc3339(new.not_after),
    }


def rotate_task(
    store: CertStore,
    creds: Callable[[], Credentials],
    factory: Callable[[Credentials], NodeClient],
    now: Callable[[], datetime],
) -> Callable[[TaskContext], dict[str, JSON]]:
    """The ``agent.rotate`` handler: rotate now with a client of the task's own."""

    def handler(ctx: TaskContext) -> dict[str, JSON]:
        client = factory(creds())
        try:
            return rotate_now(store, client, now())
        except PowernodeError as e:
            raise TaskError(f"rotation failed: {e}", retryable=True) from e
        finally:
            client.close()

    return handler


def rotated_on_disk(store: CertStore, current: Credentials) -> bool:
    """Whether the installed certificate is no longer the one ``current`` holds."""
    info = store.info()
    return info is not None and info.serial != current.info.serial
