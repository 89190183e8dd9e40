"""The CLI end to end: `platform migrate/token create`, then `system …` against a real server.

The server is uvicorn on 127.0.0.1 in a thread, on SQLite; the REST tests
cover PostgreSQL.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from powernode.cli.platform import app as platform_app
from powernode.cli.system import app as system_app
from powernode.platform.app import create_app
from powernode.platform.db.migrate import head_revisions
from powernode.platform.settings import Settings

runner = CliRunner()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("cli-platform")
    r = runner.invoke(platform_app, ["migrate", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"from": None, "to": ",".join(head_revisions())}
    port = _port()
    app = create_app(Settings(data_dir=data))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", data
    srv.should_exit = True
    thread.join(10)


def token(data: Path, *scopes: str) -> str:
    args = ["token", "create", "--name", f"t-{'-'.join(scopes)}", "--data-dir", str(data)]
    for s in scopes:
        args += ["--scope", s]
    r = runner.invoke(platform_app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    secret: str = json.loads(r.output)["token"]
    return secret


def system(url: str, tok: str, *args: str, code: int = 0) -> Any:
    r = runner.invoke(system_app, ["--url", url, "--token", tok, *args, "--json"])
    assert r.exit_code == code, r.output
    return json.loads(r.stdout) if code == 0 else r.stderr


def test_tutorial_walk_through_the_cli(server: tuple[str, Path]) -> None:
    url, data = server
    admin = token(data, "write", "promote-live")
    m = system(url, admin, "create-module", "my-redis", "--category", "userland",
               "--gitea-repo", "acme/modules/my-redis-module")  # fmt: skip
    assert m["module"]["webhook_secret"]
    system(url, admin, "register-module-version", "my-redis", "0.1.0")
    vs = system(url, admin, "list-module-versions", "my-redis")["versions"]
    vid = vs[0]["id"]
    for to in ("staging", "blessed", "live"):
        v = system(url, admin, "promote-module-version", vid, "--to", to)
        assert v["version"]["promotion_state"] == to
    a = system(url, admin, "assign-module-to-template", "--template", "base",
               "--module", "my-redis", "--metadata", "purpose=edge-cdn-tokyo")  # fmt: skip
    assert a["assignment"]["metadata"] == {"purpose": "edge-cdn-tokyo"}
    u = system(url, admin, "update-module-assignment", a["assignment"]["id"],
               "--effective-priority", "95")  # fmt: skip
    assert u["assignment"]["resolved_priority"] == 95
    n = system(url, admin, "create-node", "--hostname", "redis-test-1", "--template", "base")
    i = system(url, admin, "provision-instance", "--node", n["node"]["hostname"])["instance"]
    got = system(url, admin, "get-instance", i["id"])["instance"]
    assert got["status"] == "provisioning"
    assert system(url, admin, "terminate-instance", i["id"])["instance"]["status"] == "terminated"
    system(
        url, admin, "unassign-module-from-template", "--template", "base", "--module", "my-redis"
    )
    # 0.1.0 is live: refused unless forced (issue 13 item 8).
    err = system(url, admin, "delete-module", "my-redis", "--yes", code=1)
    assert "live version(s) 0.1.0" in err and "--force" in err
    d = system(url, admin, "delete-module", "my-redis", "--yes", "--force")
    assert d["deleted"] == {"module": "my-redis", "versions": 1, "assignments": 0}
    assert system(url, admin, "list-modules")["modules"] == []
    log = system(url, admin, "audit-log", "--limit", "3")["audit_log"]
    assert [e["action"] for e in log] == [
        "module.delete",
        "template.unassign_module",
        "instance.terminate",
    ]


def test_cli_errors_say_what_is_wrong(server: tuple[str, Path]) -> None:
    url, data = server
    reader = token(data, "read")
    err = system(url, reader, "create-module", "x", "--category", "userland", code=1)
    assert "403" in err and "'write' scope" in err
    err = system(url, reader, "get-module", "ghost", code=1)
    assert "404" in err and "'ghost' not found" in err
    err = system("http://127.0.0.1:9", reader, "list-modules", code=1)  # failed, not usage
    assert "cannot reach the platform" in err and "--url" in err
    err = system(url, reader, "list-modules", "--url", "127.0.0.1:8400", code=2)
    assert "not a platform URL: write http://HOST:PORT" in err


def test_url_and_token_work_after_the_command(server: tuple[str, Path]) -> None:
    """Regression (issue 12): `system list-modules --token X` said "No such option"."""
    url, data = server
    r = runner.invoke(system_app, ["list-modules", "--url", url, "--token", token(data, "read")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(system_app, ["--url", "http://127.0.0.1:9", "list-modules", "--url", url])
    assert r.exit_code == 1 and "401" in r.output and "--token or POWERNODE_TOKEN" in r.output


def test_field_names_in_platform_errors_are_the_flags(server: tuple[str, Path]) -> None:
    """Regression (issue 12): create-module errors said category_slug for --category."""
    url, data = server
    err = system(url, token(data, "write"), "create-module", "x", "--category", "nope", code=1)
    assert "--category 'nope' is not a category" in err
    assert "category_slug" not in err


def test_human_output_lists_tables(server: tuple[str, Path]) -> None:
    url, data = server
    r = runner.invoke(system_app, ["--url", url, "--token", token(data, "read"), "list-templates"])
    assert r.exit_code == 0, r.output
    assert "base" in r.stdout and "hardened" in r.stdout


def test_token_create_refuses_unknown_scope(tmp_path: Path) -> None:
    r = runner.invoke(
        platform_app,
        ["token", "create", "--name", "x", "--scope", "root", "--data-dir", str(tmp_path)],
    )
    assert r.exit_code == 1
    assert "choose from read, write, promote-live" in r.stderr
