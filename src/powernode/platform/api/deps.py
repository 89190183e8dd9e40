"""What every endpoint needs: the platform state, the caller, a unit of work."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from powernode.platform.db.session import is_busy, single_statement, writer
from powernode.platform.pki import NodeCA
from powernode.platform.problems import AuthenticationError, BusyError, ConflictError
from powernode.platform.sealing import Sealer
from powernode.platform.services import tokens
from powernode.platform.services.context import READ, Actor, Ctx
from powernode.platform.services.nodeapi.heartbeat import HeartbeatBuffer
from powernode.platform.services.nodeapi.identity import NodeApiPolicy
from powernode.platform.services.nodeapi.identity_batch import LiveIdentityReader
from powernode.platform.services.providers import InstanceProvider
from powernode.platform.settings import Settings


@dataclass
class PlatformState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    sealer: Sealer
    provider: InstanceProvider
    clock: Callable[[], datetime]
    # The node API (services/nodeapi): its CA, live-identity reader, heartbeat buffer, limits.
    node_ca: NodeCA
    identities: LiveIdentityReader
    heartbeats: HeartbeatBuffer
    node_policy: NodeApiPolicy

    @contextmanager
    def unit(self, actor: Actor, *, write: bool = True) -> Iterator[Ctx]:
        """A transaction: committed when the block ends, rolled back when it raises.

        A write unit (the default) is a write transaction from its first
        statement on (``BEGIN IMMEDIATE`` on SQLite, db/session.py), so a
        service's read-check-write cannot interleave with another's; on
        PostgreSQL the services lock the rows they check (``FOR UPDATE``).
        ``write=False`` for a unit that only reads.
        """
        opened = self.sessions() if write else Session(self.engine, expire_on_commit=False)
        with opened as session:
            ctx = Ctx(session=session, actor=actor, now=self.clock())
            try:
                yield ctx
                session.commit()
            except (OperationalError, IntegrityError) as e:
                session.rollback()
                translated = _translated(e)
                if translated is e:
                    raise
                raise translated from e
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A unit of work of exactly one (writing) statement, on a Core connection.

        Cheaper than :meth:`unit` for the node API's hot one-statement
        requests: no ORM session, and on PostgreSQL no BEGIN/COMMIT round
        trips (``db.session.single_statement``: the statement is atomic on
        its own). Same errors as :meth:`unit`.
        """
        with _database_errors(), self._one_statement.begin() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction on a Core connection: committed when the block ends,
        rolled back when it raises. For a hot path of a few Core statements that
        must be one unit (no ORM session); same errors as :meth:`unit`."""
        with _database_errors(), self._writer.begin() as conn:
            yield conn

    @functools.cached_property
    def _one_statement(self) -> Engine:
        return single_statement(self.engine, write=True)

    @functools.cached_property
    def _writer(self) -> Engine:
        return writer(self.engine)


@contextmanager
def _database_errors() -> Iterator[None]:
    """The database's refusals as the platform's errors (:func:`_translated`)."""
    try:
        yield
    except (OperationalError, IntegrityError) as e:
        translated = _translated(e)
        if translated is e:
            raise
        raise translated from e


def _translated(e: OperationalError | IntegrityError) -> Exception:
    """What a unit of work raises for a database error it rolled back."""
    if isinstance(e, IntegrityError):
        # The services check uniqueness first; this is the race two
        # concurrent writers can still hit.
        return ConflictError(
            "the change conflicts with another one made at the same time; "
            f"reload and retry ({type(e.orig).__name__})"
        )
    if not is_busy(e):
        return e
    # SQLite: another writer held the write lock past busy_timeout.
    return BusyError(
        "the database is busy with other writes (SQLite's single write lock); "
        "nothing was changed, retry in a moment"
    )


async def get_state(request: Request) -> PlatformState:
    # async: FastAPI runs a plain function dependency in the thread pool, a hop
    # the heartbeat path (thousands per second) should not pay for a lookup.
    state = request.app.state.platform
    assert isinstance(state, PlatformState)
    return state


State = Annotated[PlatformState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False, description="powernode API token (pnt_…)")


def get_actor(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None:
        raise AuthenticationError(
            "no API token: send 'Authorization: Bearer pnt_…' "
            "(create one with: powernode platform token create)"
        )
    with Session(state.engine) as session:  # a read: no write lock on SQLite
        return tokens.authenticate(session, credentials.credentials, state.clock())


CurrentActor = Annotated[Actor, Depends(get_actor)]


def get_reader(actor: CurrentActor) -> Actor:
    actor.require(READ, "reading")
    return actor


Reader = Annotated[Actor, Depends(get_reader)]
