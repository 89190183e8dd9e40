"""schemathesis against the running platform (uvicorn on 127.0.0.1, SQLite), every check.

Issue 13 item 9: not only no 5xx but no failure of any check — status codes,
content types, response schemas and headers, schema-valid requests accepted
and schema-invalid ones refused, 405s with ``Allow``, missing headers, auth
that is not ignored, resources usable after creation and gone after delete.
Once with a token holding every scope and once with no token at all.

Bounded: :data:`EXAMPLES` cases per operation and phase, no shrinking, one
worker, a deadline on the whole run; deterministic generation, so a failure
here fails the same way on the next run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.orm import Session

from powernode.platform.app import create_app
from powernode.platform.db.session import make_engine
from powernode.platform.services.context import SCOPES, Actor, Ctx
from powernode.platform.services.tokens import create_token
from powernode.platform.settings import Settings

EXAMPLES = 8
DEADLINE_S = 240  # the whole run; about 40 s when the machine is idle
MIN_OPERATIONS = 45

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The platform serving on a fresh SQLite database; (base URL, all-scopes token)."""
    db = tmp_path / "platform.db"
    db.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    with Session(engine) as s:
        ctx = Ctx(s, Actor("schemathesis", None, frozenset(SCOPES)), datetime.now(UTC))
        secret = create_token(ctx, "fuzz", list(SCOPES))[1]
        s.commit()
    engine.dispose()
    app = create_app(Settings(data_dir=tmp_path, database_url=url, migrate_on_start=False))
    port = _port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", secret
    srv.should_exit = True
    thread.join(10)


def run_schemathesis(base: str, headers: list[str], report: Path) -> dict[str, Any]:
    """``st run --checks all`` on every operation; the JSON run report."""
    argv = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json"]
    argv += ["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"]
    argv += ["--max-examples", str(EXAMPLES), "--generation-deterministic", "--no-shrink"]
    argv += ["--continue-on-failure", "--workers", "1", "--request-timeout", "20"]
    argv += ["--no-color"]
    argv += ["--report", "json", "--report-json-path", str(report)]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=DEADLINE_S, cwd=report.parent, check=False
    )
    assert report.exists(), out.stdout[-4000:] + out.stderr[-2000:]
    result: dict[str, Any] = json.loads(report.read_text())
    result["_output"] = out.stdout
    return result


@pytest.mark.parametrize("auth", ["all-scopes", "anonymous"])
def test_every_check_passes_on_every_operation(
    live: tuple[str, str], tmp_path: Path, auth: str
) -> None:
    base, token = live
    headers = [f"Authorization: Bearer {token}"] if auth == "all-scopes" else []
    r = run_schemathesis(base, headers, tmp_path / "report.json")
    figures = (
        f"{auth}: {r['operations']['tested']}/{r['operations']['total']} operations, "
        f"{r['test_cases']['generated']} cases, {r['running_time']:.0f} s, "
        f"phases { ({k: v['status'] for k, v in r['phases'].items()}) }"
    )
    print(figures)  # shown with -s; the run's figures for the record
    output = r["_output"]
    failures = output[output.find("=== FAILURES") :][:6000]
    assert r["failures"] == [], f"{figures}\n{failures}"
    assert r["errors"] == [], f"{figures}\n{output[-6000:]}"
    assert r["complete"] and r["stop_reason"] == "completed", figures
    assert r["operations"]["tested"] == r["operations"]["total"] >= MIN_OPERATIONS, figures
    assert r["test_cases"]["generated"] >= 10 * MIN_OPERATIONS, figures
    assert r["phases"]["coverage"]["status"] == "success", figures
    assert r["phases"]["fuzzing"]["status"] == "success", figures
