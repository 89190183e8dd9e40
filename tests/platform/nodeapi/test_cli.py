"""`powernode system` commands for the node API, against a real (plain HTTP) server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from powernode.cli.system import app as system_app
from powernode.platform.app import create_app
from powernode.platform.settings import Settings
from tests.platform.nodeapi.conftest import csr_pem
from tests.platform.nodeapi_tls.tlsserver import running
from tests.platform.test_cli import token

runner = CliRunner()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Any]]:
    settings = Settings(data_dir=tmp_path / "data")
    app = create_app(settings)
    with running(app, settings) as url:
        yield url, token(settings.data_dir, "write", "read"), app


def system(url: str, tok: str, *args: str, code: int = 0, as_json: bool = True) -> Any:
    extra = ["--json"] if as_json else []
    r = runner.invoke(system_app, ["--url", url, "--token", tok, *args, *extra])
    assert r.exit_code == code, r.output
    return json.loads(r.stdout) if as_json and code == 0 else r


def test_token_enroll_task_events_and_revoke(server: tuple[str, str, Any]) -> None:
    url, tok, _app = server
    system(url, tok, "create-node", "--hostname", "n1", "--template", "base")
    iid = system(url, tok, "provision-instance", "--node", "n1")["instance"]["id"]
    r = system(url, tok, "create-bootstrap-token", iid, "--ttl-seconds", "600", as_json=False)
    secret = r.stdout.strip()
    assert secret.startswith("pnb_")
    assert "shown only now" in r.stderr
    # The token works (the agent's side, over the API).
    enrolled = httpx.post(
        f"{url}/node_api/enroll", json={"bootstrap_token": secret, "csr_pem": csr_pem()}
    )
    assert enrolled.status_code == 201, enrolled.text
    task = system(url, tok, "enqueue-task", iid, "--kind", "agent.echo", "--payload", '{"n": 1}')
    assert task["task"]["state"] == "queued" and task["task"]["payload"] == {"n": 1}
    listed = system(url, tok, "list-instance-tasks", iid)["tasks"]
    assert [t["id"] for t in listed] == [task["task"]["id"]]
    events = system(url, tok, "list-instance-events", iid, "--kind", "instance.enrolled")
    assert [e["kind"] for e in events["events"]] == ["instance.enrolled"]
    certs = system(url, tok, "list-instance-certificates", iid)["certificates"]
    assert len(certs) == 1 and certs[0]["revoked_at"] is None
    revoked = system(url, tok, "revoke-instance-certificates", iid)
    assert revoked == {"revoked": [certs[0]["serial"]]}
    after = system(url, tok, "list-instance-certificates", iid)["certificates"]
    assert after[0]["revoked_at"] is not None
    bad = system(url, tok, "enqueue-task", iid, "--kind", "x.y", "--payload", "{", code=2)
    assert "--payload is not JSON" in bad.output
