"""`powernode mcp serve` as a process: the SDK's client over stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.slow

MANIFEST = "name: hello\nversion: 1.0.0\ncategory: userland\nfile_spec: ['etc/../x']\n"
READS = {
    "system_list_modules", "system_list_module_versions", "system_get_instance",
    "system_drift_report", "system_template_composition", "system_validate_module_manifest",
    "list_gitea_workflow_runs",
}  # fmt: skip


async def _exercise(client: Client) -> tuple[set[str], dict[str, Any]]:
    tools = {t.name for t in (await client.list_tools()).tools}
    result = await client.call_tool("system_validate_module_manifest", {"manifest_yaml": MANIFEST})
    assert not result.is_error
    body = result.structured_content
    if body is None:
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        body = json.loads(text.text)
    return tools, dict(body)


def test_stdio_serves_the_read_tools() -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "powernode.cli.main", "mcp", "serve", "--url", "http://127.0.0.1:9"],
        env=dict(os.environ),
    )

    async def go() -> tuple[set[str], dict[str, Any]]:
        async with Client(params) as client:
            return await _exercise(client)

    tools, body = anyio.run(go)
    assert tools == READS  # read-only by default
    assert body["valid"] is False and "'..'" in " ".join(body["problems"])


def test_streamable_http_with_writes_lists_every_tool() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "powernode.cli.main", "mcp", "serve", "--transport", "http",
         "--port", str(port), "--allow-writes", "--url", "http://127.0.0.1:9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)

        async def go() -> tuple[set[str], dict[str, Any]]:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                return await _exercise(client)

        tools, body = anyio.run(go)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert tools > READS and "system_delete_module" in tools
    assert body["valid"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--transport", "tcp"], "stdio or http"), (["--url", "platform:8400"], "http://HOST:PORT")],
    ids=["transport", "url"],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "powernode.cli.main", "mcp", "serve", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert message in run.stderr
