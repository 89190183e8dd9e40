"""A real uvicorn server built by tlsserve.build_server, run in a thread on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from powernode.platform.settings import Settings
from powernode.platform.tlsserve import build_server


@contextmanager
def running(app: Any, settings: Settings, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port; yields the base URL; stops the server on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = build_server(app, settings, access_log=False, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 15 s (see the log above)")
        time.sleep(0.02)
    scheme = "https" if settings.tls else "http"
    try:
        yield f"{scheme}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
