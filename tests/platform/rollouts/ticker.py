"""Another worker for test_rollout_concurrent: ticks rollouts in a loop, in its own process.

``python ticker.py DB_URL DIR NAME BARRIER_SECONDS``. Each round it reads the
test's clock from ``DIR/clock`` (ISO 8601), runs ``rollout_tick.tick`` in a
write transaction as the worker does (``IngestWorker.run_once``), and writes
the clock it ticked with to ``DIR/ack-NAME``. It stops when ``DIR/stop``
exists (or after MAX_ROUNDS / MAX_SECONDS), writing ``DIR/report-NAME.json``:
compare-and-set attempts won and lost, busy errors, rounds.

Its first compare-and-set waits (up to ``BARRIER_SECONDS``) until every
ticker reached its own first one — so on PostgreSQL two of them hold the
same generation and race on it; on SQLite the second cannot even read until
the first committed (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import OperationalError

from powernode.platform.db.session import is_busy, make_engine, make_sessionmaker
from powernode.platform.services import rollout_tick
from powernode.platform.services.context import Actor, Ctx

MAX_ROUNDS = 100_000
MAX_SECONDS = 600.0
TICKERS = 2


def main(db_url: str, folder: Path, name: str, barrier_seconds: float) -> None:
    stats = {"won": 0, "lost": 0, "busy": 0, "rounds": 0, "barrier_met": False}
    real_cas = rollout_tick.cas
    first = [True]

    def cas(ctx: Ctx, rollout: object, **values: object) -> bool:
        if first[0]:
            first[0] = False
            (folder / f"barrier-{name}").touch()
            deadline = time.monotonic() + barrier_seconds
            while time.monotonic() < deadline:
                if len(list(folder.glob("barrier-*"))) >= TICKERS:
                    stats["barrier_met"] = True
                    break
                time.sleep(0.01)
        won = real_cas(ctx, rollout, **values)  # type: ignore[arg-type]
        stats["won" if won else "lost"] += 1
        return won

    rollout_tick.cas = cas  # type: ignore[assignment]
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    actor = Actor("platform:rollouts", None, frozenset())
    started = time.monotonic()
    try:
        while not (folder / "stop").exists() and stats["rounds"] < MAX_ROUNDS:
            if time.monotonic() - started > MAX_SECONDS:
                break
            now = (folder / "clock").read_text()
            try:
                with sessions.begin() as s:
                    rollout_tick.tick(Ctx(s, actor, datetime.fromisoformat(now)))
            except OperationalError as e:
                if not is_busy(e):
                    raise
                stats["busy"] += 1
                continue
            stats["rounds"] += 1
            ack = folder / f"ack-{name}"
            ack.with_suffix(".tmp").write_text(now)
            ack.with_suffix(".tmp").replace(ack)
            time.sleep(0.005)
    finally:
        engine.dispose()
        (folder / f"report-{name}.json").write_text(json.dumps(stats))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
