"""NodeScripts on the platform: register (signed, versioned), read, run on an instance.

Registration takes the signed document (signing/nodescript.py) as the operator
made it and stores it unaltered. The platform checks its form and that it is
signed (a signature the right length for its base64); whether the signer is
trusted is the node's decision (its ``nodescript_keys_file``), as a module's
signature is. Versions of a name only grow: the newest is read and the new
row inserted in one write transaction, the unique (name, version) settling
two registrations racing on PostgreSQL.

Running one enqueues an ``agent.exec`` task carrying the document (the node
verifies it before anything runs), one attempt: a script is not retried
behind the operator's back.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from powernode.errors import DataError
from powernode.platform.db import NodeScriptRow, Task
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.context import READ, WRITE, Ctx
from powernode.platform.services.nodeapi import tasks
from powernode.signing.nodescript import NodeScript, parse

EXEC_KIND = "agent.exec"


def _parse(doc: dict[str, object]) -> NodeScript:
    try:
        script = parse(doc)
    except DataError as e:
        field = str(e).split(":", 1)[0] if ":" in str(e) else None
        raise InvalidInputError(str(e), field=field) from e
    if not script.signature or not script.key_fingerprint:
        raise InvalidInputError(
            f"NodeScript {script.name} v{script.version} is unsigned: sign it first "
            "('powernode nodescript sign FILE --key KEY'); nodes refuse unsigned scripts",
            field="signature",
        )
    return script


def register(ctx: Ctx, doc: dict[str, object]) -> NodeScriptRow:
    ctx.actor.require(WRITE, "registering a NodeScript")
    script = _parse(doc)
    newest = ctx.session.scalar(
        select(func.max(NodeScriptRow.version)).where(NodeScriptRow.name == script.name)
    )
    if newest is not None and script.version <= newest:
        raise ConflictError(
            f"NodeScript {script.name}: version {script.version} is not above the newest "
            f"registered, {newest}; sign it again as version {newest + 1}",
            field="version",
        )
    row = NodeScriptRow(
        name=script.name,
        version=script.version,
        script_sha256=hashlib.sha256(script.script.encode()).hexdigest(),
        key_fingerprint=script.key_fingerprint[:64],
        document=script.to_dict(),
        created_by=ctx.actor.name,
        created_at=ctx.now,
    )
    ctx.session.add(row)
    try:
        ctx.session.flush()
    except IntegrityError as e:
        raise ConflictError(
            f"NodeScript {script.name} v{script.version} was registered meanwhile"
        ) from e
    audit.record(
        ctx,
        action="nodescript.register",
        target_type="nodescript",
        target_id=row.id,
        summary=f"registered NodeScript {script.name} v{script.version}",
        detail={"name": script.name, "version": script.version, "key": row.key_fingerprint},
    )
    return row


def get(ctx: Ctx, name: str, version: int | None = None) -> NodeScriptRow:
    """The version asked for, or the newest."""
    ctx.actor.require(READ, "reading NodeScripts")
    q = select(NodeScriptRow).where(NodeScriptRow.name == name)
    if version is not None:
        q = q.where(NodeScriptRow.version == version)
    row = ctx.session.scalars(q.order_by(NodeScriptRow.version.desc()).limit(1)).first()
    if row is None:
        which = f"v{version}" if version is not None else "any version"
        raise NotFoundError(f"no NodeScript {name!r} ({which}) is registered")
    return row


def list_versions(ctx: Ctx, name: str) -> list[NodeScriptRow]:
    ctx.actor.require(READ, "reading NodeScripts")
    q = select(NodeScriptRow).where(NodeScriptRow.name == name)
    return list(ctx.session.scalars(q.order_by(NodeScriptRow.version.desc()).limit(1000)))


def run(ctx: Ctx, instance_id: str, name: str, version: int | None = None) -> Task:
    """Enqueue the NodeScript on the instance: an ``agent.exec`` task, one attempt."""
    row = get(ctx, name, version)
    return tasks.enqueue(ctx, instance_id, EXEC_KIND, {"nodescript": row.document}, 1)
