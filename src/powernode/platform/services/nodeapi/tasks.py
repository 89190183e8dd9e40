"""The per-instance task queue: enqueue (operator), lease, ack, fail (node).

Leasing is one statement on both databases::

    UPDATE tasks SET state='leased', attempts=attempts+1, lease_owner=:me,
                     lease_expires_at=:until, available_at=:until, …
    WHERE id IN (SELECT id FROM tasks WHERE instance_id=:me
                 AND state IN ('queued', 'leased') AND available_at <= :now
                 ORDER BY available_at, created_at, id LIMIT :n FOR UPDATE SKIP LOCKED)
    RETURNING …

On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets concurrent lessees take
disjoint rows without waiting (READ COMMITTED re-checks the WHERE on a row
changed under it, so a row is never leased twice); SQLite has no row locks
(SQLAlchemy drops the clause) and runs the statement as one write
transaction, which serialises lessees. *Offerable* is queued and due
(``available_at`` passed), or leased with the lease expired — the
visibility timeout that re-offers a dead node's tasks; a lease sets
``available_at`` to its expiry, so both are ``available_at <= now``. A task
whose lease expired on its last attempt is failed instead of offered again.

Outcomes are recorded once: ack/fail of a task in a final state answers 200
and changes nothing; of a task not leased (queued again, or another
instance's) 409. An outcome naming the ``attempt`` its lease was given is
refused (409) when the task has since been leased again: the lease it
answers expired and the task is another lease's now (an agent that names no
attempt is judged by the lessee alone, as before).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    JSON,
    Connection,
    Integer,
    Select,
    String,
    Table,
    Update,
    any_,
    bindparam,
    case,
    column,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, TextClause

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
    payload: dict[str, object]
    attempt: int
    lease_expires_at: datetime


def enqueue(
    ctx: Ctx, instance_id: str, kind: str, payload: dict[str, object], max_attempts: int
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


_DEAD_ERROR = "lease expired on the last attempt (the node did not ack or fail in time)"


@functools.cache
def _lease_statement() -> Update:
    """The lease, built once (Core, bound parameters me, n, now, until).

    Building it per call through the ORM cost about as much CPU as the
    database spent on it (services profile, PostgreSQL, one task a lease).
    """
    return _lease_update()


def _lease_update(
    exclude: Select[tuple[str]] | None = None, only_if: ColumnElement[bool] | None = None
) -> Update:
    """The lease UPDATE … RETURNING; ``exclude``: a SELECT of ids it must not pick;
    ``only_if``: a condition without which it picks nothing."""
    t = cast(Table, Task.__table__)
    at = t.c.available_at.type
    offerable: list[ColumnElement[bool] | TextClause] = [
        t.c.instance_id == bindparam("me"),
        # Literal, as the partial index's predicate is written: an IN of a
        # list is a "post-compile" parameter SQLAlchemy renders on every call.
        text(f"tasks.state IN ('{TaskState.QUEUED.value}', '{TaskState.LEASED.value}')"),
        t.c.available_at <= bindparam("now", type_=at),
    ]
    if exclude is not None:
        offerable.append(t.c.id.not_in(exclude))
    if only_if is not None:
        offerable.append(only_if)
    pick = (
        select(t.c.id)
        .where(*offerable)
        .order_by(t.c.available_at, t.c.created_at, t.c.id)
        .limit(bindparam("n"))
        .with_for_update(skip_locked=True)
    )
    # Only an expired lease can be at max_attempts here: a queued task has
    # attempts < max_attempts (fail requeues only then; enqueue starts at 0).
    dead = t.c.attempts >= t.c.max_attempts

    def unless_dead(alive: Any, when_dead: Any) -> Any:  # Any: SQL expression
        return case((dead, when_dead), else_=alive)

    until = bindparam("until", type_=at)
    return (
        update(t)
        .where(t.c.id.in_(pick.scalar_subquery()))
        .values(
            # Every right-hand side reads the row as it was (SQL UPDATE semantics).
            state=unless_dead(TaskState.LEASED.value, TaskState.FAILED.value),
            attempts=unless_dead(t.c.attempts + 1, t.c.attempts),
            lease_owner=unless_dead(bindparam("me"), None),
            lease_expires_at=unless_dead(until, None),
            available_at=unless_dead(until, t.c.available_at),
            error=unless_dead(t.c.error, _DEAD_ERROR),
            finished_at=unless_dead(None, bindparam("now", type_=at)),
            updated_at=bindparam("now", type_=at),
        )
        .returning(t.c.id, t.c.state, t.c.kind, t.c.payload, t.c.attempts, t.c.created_at)
    )


def lease(
    db: Session | Connection, instance_id: str, n: int, now: datetime, policy: NodeApiPolicy
) -> list[Leased]:
    """Lease up to ``n`` of the instance's offerable tasks, in one statement; the caller commits.

    A leased task's ``available_at`` is its lease's expiry, so "offerable" is
    one range, ``state IN (queued, leased) AND available_at <= now``, read in
    order from the partial index ``ix_tasks_offerable`` (migration 0004)
    and stopped after ``n`` rows. An OR of a queued and an expired-lease
    branch kept PostgreSQL from using any index in that order (a scan and
    sort of every due task per lease). A picked task whose lease expired on
    its last attempt (a dead node's) is failed by the same statement instead
    of leased, so a lease may answer fewer than ``n`` while such tasks remain.
    Being one statement, it may run alone (autocommit: ``PlatformState.statement``).
    """
    until = now + policy.visibility_timeout
    conn = db.connection() if isinstance(db, Session) else db
    rows = conn.execute(
        _lease_statement(), {"me": instance_id, "n": n, "now": now, "until": until}
    ).all()
    return _leased(instance_id, rows, until)


def _leased(instance_id: str, rows: Sequence[_Row], until: datetime) -> list[Leased]:
    """The lease's answer from its rows (a dead last attempt's task is failed, not leased)."""
    leased = sorted(
        (r for r in rows if r.state == TaskState.LEASED.value), key=lambda r: (r.created_at, r.id)
    )
    if len(leased) < len(rows):
        dead_n = len(rows) - len(leased)
        log.info(
            "instance %s: %d task(s) failed: lease expired on the last attempt", instance_id, dead_n
        )
    return [Leased(r.id, r.kind, r.payload, r.attempts, until) for r in leased]


@dataclass(frozen=True)
class Outcome:
    """One outcome a node reports: ``verb`` "ack" (with ``result``) or "fail"."""

    task_id: str
    verb: str
    result: dict[str, object] = field(default_factory=dict)
    error: str = ""
    retryable: bool = False
    attempt: int | None = None  # the lease's attempt number, as the lease answered it


@dataclass(frozen=True)
class Recorded:
    """The answer for one outcome: the task's state after, or why it was refused.

    ``status`` is 200 (recorded, or already final: nothing changed), 404 (no
    such task) or 409 (not leased by this instance); ``detail`` says why.
    """

    task_id: str
    status: int
    state: str = ""
    detail: str = ""


_Row = Any  # Any: a SQLAlchemy Row (id, instance_id, state, lease_owner, attempts, max)


def record(
    session: Session | Connection,
    instance_id: str,
    outcomes: list[Outcome],
    *,
    now: datetime,
    policy: NodeApiPolicy,
) -> list[Recorded]:
    """Record several outcomes in one transaction: one locking read, one write per verb.

    Each outcome is judged on its own; a refused one changes nothing and does
    not stop the others. The caller commits.
    """
    ids = sorted({o.task_id for o in outcomes})
    conn = session.connection() if isinstance(session, Session) else session
    # Locked in id order, so two batches sharing tasks cannot deadlock.
    rows = {r.id: r for r in conn.execute(_locking_read(), {"ids": ids})}
    answers: list[Recorded] = []
    after: dict[str, str] = {}  # the state each task of this batch was given
    writes: dict[str, list[dict[str, object]]] = {"ack": [], "retry": [], "final": []}
    for o in outcomes:
        if o.task_id in after:
            answers.append(Recorded(o.task_id, 200, after[o.task_id], "reported twice; first kept"))
            continue
        row = rows.get(o.task_id)
        if row is None:
            answers.append(Recorded(o.task_id, 404, detail=f"task {o.task_id} not found"))
            continue
        refusal = _judge(instance_id, o, row)
        if refusal is not None:
            answers.append(refusal)
            continue
        if o.verb == "ack":
            writes["ack"].append({"b_id": o.task_id, "b_result": o.result})
            state = TaskState.SUCCEEDED.value
        elif o.retryable and row.attempts < row.max_attempts:
            delay = min(policy.retry_cap, policy.retry_base * 2 ** max(row.attempts - 1, 0))
            writes["retry"].append({"b_id": o.task_id, "b_error": o.error, "b_at": now + delay})
            state = TaskState.QUEUED.value
        else:
            writes["final"].append({"b_id": o.task_id, "b_error": o.error})
            state = TaskState.FAILED.value
        after[o.task_id] = state
        answers.append(Recorded(o.task_id, 200, state))
    _write(conn, writes, now)
    return answers


def _write(conn: Connection, writes: dict[str, list[dict[str, object]]], now: datetime) -> None:
    """One executemany per kind of change (psycopg pipelines it: one round trip)."""
    for kind, params in writes.items():
        if params:
            conn.execute(_write_statement(kind), [{**p, "b_now": now} for p in params])


@functools.cache
def _locking_read() -> Select[Any]:  # Any: the rows of a select, typed by SQLAlchemy
    """The outcomes' tasks, locked in id order (built once; bound parameter ``ids``)."""
    t = cast(Table, Task.__table__)
    return (
        select(t.c.id, t.c.instance_id, t.c.state, t.c.lease_owner, t.c.attempts, t.c.max_attempts)
        .where(t.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(t.c.id)
        .with_for_update()
    )


@functools.cache
def _write_statement(kind: str) -> Update:
    """The UPDATE for one kind of change, built once.

    Core statements on the table: an ORM update with a parameter list would be
    SQLAlchemy's "bulk UPDATE by primary key", which cannot carry the WHERE.
    """
    table = cast(Table, Task.__table__)
    now = bindparam("b_now", type_=table.c.updated_at.type)
    released = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    changes = {
        "ack": {
            "state": TaskState.SUCCEEDED.value,
            "result": bindparam("b_result", type_=table.c.result.type),
            "lease_expires_at": None,
            "finished_at": now,
            "updated_at": now,
        },
        "retry": {
            **released,
            "state": TaskState.QUEUED.value,
            "error": bindparam("b_error"),
            "available_at": bindparam("b_at", type_=table.c.available_at.type),
        },
        "final": {
            **released,
            "state": TaskState.FAILED.value,
            "error": bindparam("b_error"),
            "finished_at": now,
        },
    }
    return update(table).where(table.c.id == bindparam("b_id")).values(**changes[kind])


@functools.cache
def _ack_if_leased() -> Update:
    """An ack as one compare-and-set (built once): recorded only when the task is
    leased by ``b_me`` — and, when ``b_attempt`` is not NULL, on that attempt —
    which is every condition :func:`_judge` lets through, checked on the row the
    UPDATE locks (PostgreSQL re-checks them on a row changed under it)."""
    t = cast(Table, Task.__table__)
    ack = _write_statement("ack")
    attempt = bindparam("b_attempt", type_=t.c.attempts.type)
    return ack.where(
        t.c.instance_id == bindparam("b_me"),
        t.c.state == TaskState.LEASED.value,
        t.c.lease_owner == bindparam("b_me"),
        or_(attempt.is_(None), t.c.attempts == attempt),
    ).returning(t.c.id)


def ack_leased(
    conn: Connection,
    instance_id: str,
    task_id: str,
    result: dict[str, object],
    now: datetime,
    *,
    attempt: int | None = None,
) -> bool:
    """Record success of a task this instance holds, in one statement; whether it was.

    False changed nothing: the task is not (or no longer) this lease's — the
    caller answers with :func:`ack`, which judges and words why. Being one
    statement it may run alone (autocommit: ``PlatformState.statement``).
    """
    params = {"b_id": task_id, "b_me": instance_id, "b_result": result, "b_now": now}
    done = conn.execute(_ack_if_leased(), {**params, "b_attempt": attempt}).first()
    return done is not None


def _judge(instance_id: str, o: Outcome, row: _Row) -> Recorded | None:
    """The refusal (or no-op answer) for ``o``, or None when it is to be recorded."""
    tid = o.task_id
    if row.instance_id != instance_id:
        return Recorded(
            tid,
            409,
            detail=f"task {tid} is not leased by this instance ({instance_id}); a node "
            "reports only the tasks it leased",
        )
    if row.state in _FINAL:
        log.info("%s of task %s ignored: already %s", o.verb, tid, row.state)
        return Recorded(tid, 200, row.state, f"already {row.state}; nothing changed")
    if row.state != TaskState.LEASED.value or row.lease_owner != instance_id:
        return Recorded(
            tid,
            409,
            row.state,
            f"task {tid} is {row.state}, not leased: it failed and is queued for a "
            "retry, or was never leased; lease it before reporting an outcome",
        )
    if o.attempt is not None and o.attempt != row.attempts:
        # Tasks are per instance, so the lessee alone cannot tell an expired
        # lease from the one given since: the attempt number can.
        return Recorded(
            tid,
            409,
            row.state,
            f"task {tid}: this outcome is for attempt {o.attempt}, whose lease expired; the "
            f"task was leased again (attempt {row.attempts}) and only that lease's outcome "
            "counts; nothing was recorded",
        )
    return None


def _one(answer: Recorded) -> str:
    if answer.status == 404:
        raise NotFoundError(answer.detail, task_id=answer.task_id)
    if answer.status == 409:
        if answer.state:
            raise ConflictError(answer.detail, task_id=answer.task_id, state_now=answer.state)
        raise ConflictError(answer.detail, task_id=answer.task_id)
    return answer.state


def ack(
    session: Session,
    instance_id: str,
    task_id: str,
    result: dict[str, object],
    now: datetime,
    *,
    attempt: int | None = None,
) -> str:
    """Record success; the task's state after (unchanged when it was final)."""
    outcome = Outcome(task_id, "ack", result, attempt=attempt)
    (answer,) = record(session, instance_id, [outcome], now=now, policy=NodeApiPolicy())
    return _one(answer)


def fail(
    session: Session,
    instance_id: str,
    task_id: str,
    error: str,
    retryable: bool,
    *,
    now: datetime,
    policy: NodeApiPolicy,
    attempt: int | None = None,
) -> str:
    """Record a failure: queued again after a backoff while attempts remain, else failed."""
    outcome = Outcome(task_id, "fail", error=error, retryable=retryable, attempt=attempt)
    (answer,) = record(session, instance_id, [outcome], now=now, policy=policy)
    return _one(answer)


# -- outcomes carried by a lease -------------------------------------------------------------

Begin = Callable[[], AbstractContextManager[Connection]]


def report_and_lease(
    begin: Begin,
    instance_id: str,
    outcomes: list[Outcome],
    n: int,
    *,
    now: datetime,
    policy: NodeApiPolicy,
    one_statement: Begin | None = None,
) -> tuple[list[Recorded], list[Leased]]:
    """Record the outcomes of earlier leases and lease up to ``n`` tasks, in ONE transaction.

    ``begin()`` opens the transaction (committed when its block ends, rolled
    back when it raises). All or nothing: an outcome refused (a task not
    found, not leased by this instance, or leased again since the attempt it
    names) raises :class:`NotFoundError` or :class:`ConflictError` naming
    every refused outcome, and nothing is recorded or leased. An outcome
    already recorded (a resend after a lost answer) answers 200 and changes
    nothing, as ``POST /tasks/outcomes`` does. The caller refuses duplicated
    ids before (each task has one outcome).

    ``one_statement`` (PostgreSQL only: a unit of exactly one statement,
    autocommit): when every outcome is an ack, the acks and the lease are
    first tried as one statement (:func:`_ack_and_lease_statement`) — one
    round trip, one commit for a task's outcome and the next lease. It
    changes nothing unless every ack takes; when one does not (already
    final, or refused) the outcomes are judged one by one as :func:`record`
    does, in a transaction of ``begin()``.
    """
    until = now + policy.visibility_timeout
    acks = [o for o in outcomes if o.verb == "ack"]
    if one_statement is not None and len(acks) == len(outcomes):
        with one_statement() as conn:
            done = _ack_and_lease(conn, instance_id, acks, n, now=now, until=until)
        if done is not None:
            return done
    with begin() as conn:
        return _judged_then_leased(conn, instance_id, outcomes, n, now=now, policy=policy)


def _judged_then_leased(
    conn: Connection,
    instance_id: str,
    outcomes: list[Outcome],
    n: int,
    *,
    now: datetime,
    policy: NodeApiPolicy,
) -> tuple[list[Recorded], list[Leased]]:
    answers = record(conn, instance_id, outcomes, now=now, policy=policy)
    refused = [a for a in answers if a.status != 200]
    if refused:
        raise _refusal(refused)
    return answers, lease(conn, instance_id, n, now, policy)


def _refusal(refused: list[Recorded]) -> NotFoundError | ConflictError:
    """The error refusing a lease whose outcomes include ``refused`` (all named)."""
    named = "; ".join(a.detail for a in refused)
    detail = (
        f"{len(refused)} of the outcomes sent with this lease refused, so none was recorded "
        f"and nothing was leased: {named}. Report the others without them "
        "(POST /node_api/tasks/outcomes answers each on its own) and lease again"
    )
    answers = [{"id": a.task_id, "status": a.status, "detail": a.detail} for a in refused]
    if all(a.status == 404 for a in refused):
        return NotFoundError(detail, outcomes=answers)
    return ConflictError(detail, outcomes=answers)


def _ack_and_lease(
    conn: Connection,
    instance_id: str,
    acks: list[Outcome],
    n: int,
    *,
    now: datetime,
    until: datetime,
) -> tuple[list[Recorded], list[Leased]] | None:
    """The acks and the lease as one statement; None: not every ack took, nothing changed."""
    doc = [{"id": o.task_id, "result": o.result, "attempt": o.attempt} for o in acks]
    sql, constants = _ack_and_lease_sql(conn.dialect)
    params = constants | {
        "acks": json.dumps(doc, separators=(",", ":")),
        "ids": [o.task_id for o in acks],
        "k": len(acks),
        "me": instance_id,
        "n": n,
        "now": now.astimezone(UTC),
        "until": until.astimezone(UTC),
    }
    rows = conn.exec_driver_sql(sql, params).all()
    if rows[0].acked != len(acks):
        assert rows[0].acked == 0 and rows[0].id is None, "all or nothing"
        return None
    leased = [r for r in rows if r.id is not None]
    answers = [Recorded(o.task_id, 200, TaskState.SUCCEEDED.value) for o in acks]
    return answers, _leased(instance_id, leased, until)


_VARIABLE = ("acks", "ids", "k", "me", "n", "now", "until")


@functools.cache
def _ack_and_lease_sql(dialect: Dialect) -> tuple[str, dict[str, Any]]:  # Any: parameters
    """:func:`_ack_and_lease_statement` written out for the driver once, with the values
    of its constant parameters. Sent with ``exec_driver_sql`` (still one statement on the
    engine's events): SQLAlchemy's compile-cache lookup and parameter and row processing
    per call cost about a sixth of the request's database CPU in this process."""
    compiled = _ack_and_lease_statement().compile(dialect=dialect)
    fixed = compiled.construct_params(dict.fromkeys(_VARIABLE))
    return str(compiled), {k: v for k, v in fixed.items() if k not in _VARIABLE}


@functools.cache
def _ack_and_lease_statement() -> Select[Any]:  # Any: the rows of a select
    """PostgreSQL: the acks of tasks this instance holds, then the lease, as one statement
    that changes nothing unless every ack takes::

        WITH a AS (SELECT … FROM json_to_recordset(:acks) AS a(id, result, attempt)),
             held AS (SELECT tasks.id FROM tasks, a WHERE tasks.id = a.id AND <leased by
                      me, on the attempt named> FOR UPDATE OF tasks),
             ok AS (SELECT count(*) = :k AS ok FROM held),
             acked AS (UPDATE tasks … FROM a WHERE tasks.id = a.id AND (SELECT ok FROM ok)
                       RETURNING tasks.id),
             leased AS (the lease, WHERE (SELECT ok FROM ok) AND id NOT IN (SELECT id FROM a))
        SELECT n_acked.acked, leased.* FROM (SELECT count(*) FROM acked) n_acked
        LEFT JOIN leased ON true

    ``held`` locks each acked task and re-checks :func:`_ack_if_leased`'s
    condition on its newest version (READ COMMITTED's recheck of a locked
    row), so ``ok`` cannot change before the UPDATE. A row for each task
    leased, or one row of NULLs; every row carries the number of acks
    recorded (``:k`` or 0). The lease never picks an acked id: one statement
    must not change a row twice (a task acked after its lease expired is
    offerable to the lease too).
    """
    t = cast(Table, Task.__table__)
    src = (
        func.json_to_recordset(bindparam("acks", type_=JSON))
        .table_valued(column("id", String), column("result", JSON), column("attempt", Integer))
        .render_derived(name="src", with_types=True)
    )
    a = select(src.c.id, src.c.result, src.c.attempt).cte("a")
    # Also "id = ANY(:ids)", the same ids as an array: the index scan on the primary
    # key. A join on a.id alone is planned for json_to_recordset's guess of 100 rows:
    # a hash join over a sequential scan of every task (bench/bench_leases.py, in
    # PostgreSQL's CPU per task).
    by_key = t.c.id == any_(bindparam("ids", type_=ARRAY(String)))
    held = (
        select(t.c.id)
        .where(
            by_key,
            t.c.id == a.c.id,
            t.c.instance_id == bindparam("me"),
            t.c.state == TaskState.LEASED.value,
            t.c.lease_owner == bindparam("me"),
            or_(a.c.attempt.is_(None), t.c.attempts == a.c.attempt),
        )
        .with_for_update(of=t)
        .cte("held")
    )
    ok = select((func.count() == bindparam("k")).label("ok")).select_from(held).cte("ok")
    every_ack_takes = select(ok.c.ok).scalar_subquery()
    now = bindparam("now", type_=t.c.updated_at.type)
    acked = (
        update(t)
        .where(by_key, t.c.id == a.c.id, every_ack_takes)
        .values(
            state=TaskState.SUCCEEDED.value,
            result=a.c.result,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        .returning(t.c.id)
        .cte("acked")
    )
    leased = _lease_update(select(a.c.id), every_ack_takes).cte("leased")
    count = select(func.count().label("acked")).select_from(acked).subquery("n_acked")
    return select(count.c.acked, *leased.c).select_from(count.outerjoin(leased, true()))
