"""`powernode mcp serve`: the operator's actions for assistants (docs/operations.md).

Talks to the platform's REST API with the operator's token; read-only unless
``--allow-writes``; stdio (an assistant starts it) or streamable HTTP.
"""

from __future__ import annotations

from typing import Annotated

import typer

from powernode.cli.base import App, LogFormatOpt, configure_logging

app = App(name="mcp", help="The MCP server: fleet operations for assistants.")

DEFAULT_URL = "http://127.0.0.1:8400"


@app.command()
def serve(
    *,
    url: Annotated[
        str,
        typer.Option("--url", envvar="POWERNODE_URL", metavar="URL", help="Platform base URL."),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="POWERNODE_TOKEN", help="API token (pnt_…)."),
    ] = None,
    allow_writes: Annotated[
        bool,
        typer.Option(
            "--allow-writes",
            help="List and allow the write tools (destructive and fleet-wide ones still "
            "show their plan and ask for confirmation).",
        ),
    ] = False,
    transport: Annotated[
        str, typer.Option("--transport", metavar="KIND", help="stdio or http.")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="Listen address for --transport http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port for --transport http.")] = 8410,
    log_format: str = LogFormatOpt,
) -> None:
    """Serve the seed's operator actions as MCP tools over stdio or streamable HTTP."""
    if transport not in ("stdio", "http"):
        raise typer.BadParameter("use stdio or http", param_hint="--transport")
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("write the platform as http://HOST:PORT", param_hint="--url")
    configure_logging(log_format)
    from powernode.mcp.server import Connection, build_server  # noqa: PLC0415

    server = build_server(Connection(url.rstrip("/"), token), allow_writes=allow_writes)
    if transport == "stdio":
        server.run("stdio")
        return
    import uvicorn  # noqa: PLC0415

    uvicorn.run(server.streamable_http_app(host=host), host=host, port=port, log_level="warning")
