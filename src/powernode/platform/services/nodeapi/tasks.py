"""The per-instance task queue: enqueue (operator), lease, ack, fail (node).

Leasing is one statement on both databases::

    UPDATE tasks SET state='leased', attempts=attempts+1, lease_owner=:me, …
    WHERE id IN (SELECT id FROM tasks WHERE instance_id=:me AND <offerable>
                 ORDER BY available_at, created_at LIMIT :n FOR UPDATE SKIP LOCKED)
    RETURNING …

On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets concurrent lessees take
disjoint rows without waiting (READ COMMITTED re-checks the WHERE on a row
changed under it, so a row is never leased twice); SQLite has no row locks
(SQLAlchemy drops the clause) and runs the statement as one write
transaction, which serialises lessees. *Offerable* is queued and due
(``available_at`` passed), or leased with ``lease_expires_at`` passed — the
visibility timeout that re-offers a dead node's tasks. A task whose lease
expired on its last attempt is failed instead of offered again.

Outcomes are recorded once: ack/fail of a task in a final state answers 200
and changes nothing; of a task not leased (queued again, or another
instance's) 409.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from powernode.platform.db import Task, TaskState
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.context import WRITE, Ctx
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.services.nodes import get_instance

log = logging.getLogger(__name__)

_FINAL = frozenset({TaskState.SUCCEEDED.value, TaskState.FAILED.value, TaskState.CANCELLED.value})
MAX_LIST = 1000


@dataclass(frozen=True)
class Leased:
    id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    lease_expires_at: datetime


def enqueue(
    ctx: Ctx, instance_id: str, kind: str, payload: dict[str, Any], max_attempts: int
) -> Task:
    ctx.actor.require(WRITE, "enqueueing a task")
    if not 1 <= max_attempts <= 100:
        raise InvalidInputError(f"max_attempts {max_attempts}: use 1 to 100", field="max_attempts")
    instance = get_instance(ctx, instance_id)
    task = Task(
        kind=kind,
        state=TaskState.QUEUED.value,
        instance_id=instance.id,
        payload=payload,
        attempts=0,
        max_attempts=max_attempts,
        available_at=ctx.now,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(task)
    ctx.session.flush()
    audit.record(
        ctx,
        action="task.enqueue",
        target_type="task",
        target_id=task.id,
        summary=f"enqueued task {kind} for instance {instance.id}",
        detail={"kind": kind, "instance_id": instance.id, "max_attempts": max_attempts},
    )
    return task


def list_tasks(ctx: Ctx, instance_id: str, limit: int = 100) -> list[Task]:
    """Newest first."""
    instance = get_instance(ctx, instance_id)
    q = (
        select(Task)
        .where(Task.instance_id == instance.id)
        .order_by(Task.created_at.desc(), Task.id)
        .limit(min(limit, MAX_LIST))
    )
    return list(ctx.session.scalars(q))


def lease(
    session: Session, instance_id: str, n: int, now: datetime, policy: NodeApiPolicy
) -> list[Leased]:
    """Lease up to ``n`` of the instance's offerable tasks; the caller commits."""
    expired = and_(
        Task.state == TaskState.LEASED.value,
        Task.lease_expires_at <= now,
    )
    # A dead node's last attempt: failed, not offered a (max_attempts + 1)th time.
    session.execute(
        update(Task)
        .where(Task.instance_id == instance_id, expired, Task.attempts >= Task.max_attempts)
        .values(
            state=TaskState.FAILED.value,
            error="lease expired on the last attempt (the node did not ack or fail in time)",
            lease_owner=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    offerable = or_(
        and_(Task.state == TaskState.QUEUED.value, Task.available_at <= now),
        and_(expired, Task.attempts < Task.max_attempts),
    )
    pick = (
        select(Task.id)
        .where(Task.instance_id == instance_id, offerable)
        .order_by(Task.available_at, Task.created_at, Task.id)
        .limit(n)
        .with_for_update(skip_locked=True)
    )
    until = now + policy.visibility_timeout
    rows = session.execute(
        update(Task)
        .where(Task.id.in_(pick.scalar_subquery()))
        .values(
            state=TaskState.LEASED.value,
            attempts=Task.attempts + 1,
            lease_owner=instance_id,
            lease_expires_at=until,
            updated_at=now,
        )
        .returning(Task.id, Task.kind, Task.payload, Task.attempts, Task.created_at)
        .execution_options(synchronize_session=False)
    ).all()
    rows = sorted(rows, key=lambda r: (r.created_at, r.id))
    return [Leased(r.id, r.kind, r.payload, r.attempts, until) for r in rows]


def _owned(session: Session, instance_id: str, task_id: str, verb: str) -> Task | None:
    """The task to record an outcome on; None when it is final already (nothing to do)."""
    task = session.scalar(select(Task).where(Task.id == task_id).with_for_update())
    if task is None:
        raise NotFoundError(f"task {task_id} not found", task_id=task_id)
    if task.instance_id == instance_id and task.state in _FINAL:
        log.info("%s of task %s ignored: already %s", verb, task_id, task.state)
        return None
    if task.instance_id != instance_id:
        raise ConflictError(
            f"task {task_id} is not leased by this instance ({instance_id}); a node "
            "reports only the tasks it leased",
            task_id=task_id,
        )
    if task.state != TaskState.LEASED.value or task.lease_owner != instance_id:
        raise ConflictError(
            f"task {task_id} is {task.state}, not leased: it failed and is queued for a "
            "retry, or was never leased; lease it before reporting an outcome",
            task_id=task_id,
            state_now=task.state,
        )
    return task


def ack(
    session: Session, instance_id: str, task_id: str, result: dict[str, Any], now: datetime
) -> str:
    """Record success; the task's state after (unchanged when it was final)."""
    task = _owned(session, instance_id, task_id, "ack")
    if task is None:
        return _state(session, task_id)
    task.state = TaskState.SUCCEEDED.value
    task.result = result
    task.lease_expires_at = None
    task.finished_at = now
    task.updated_at = now
    return task.state


def fail(
    session: Session,
    instance_id: str,
    task_id: str,
    error: str,
    retryable: bool,
    *,
    now: datetime,
    policy: NodeApiPolicy,
) -> str:
    """Record a failure: queued again after a backoff while attempts remain, else failed."""
    task = _owned(session, instance_id, task_id, "fail")
    if task is None:
        return _state(session, task_id)
    task.error = error
    task.lease_owner = None
    task.lease_expires_at = None
    task.updated_at = now
    if retryable and task.attempts < task.max_attempts:
        delay = min(policy.retry_cap, policy.retry_base * 2 ** max(task.attempts - 1, 0))
        task.state = TaskState.QUEUED.value
        task.available_at = now + delay
    else:
        task.state = TaskState.FAILED.value
        task.finished_at = now
    return task.state


def _state(session: Session, task_id: str) -> str:
    return session.scalar(select(Task.state).where(Task.id == task_id)) or ""
