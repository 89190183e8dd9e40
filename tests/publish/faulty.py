"""A misbehaving registry for tests: a proxy on 127.0.0.1 in front of the real one.

Each request is forwarded to the real registry; a ``Fault`` function may
instead answer it badly (500s, a stall mid-body, a truncated body, another
blob's bytes, a tampered manifest, Range ignored). Bounded: the stall waits
at most ``STALL_SECONDS`` or until the server stops.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

STALL_SECONDS = 10.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    send_only: int | None = None  # send this many body bytes, then stall or close
    stall: bool = False


Fault = Callable[[str, str, dict[str, str], Answer], Answer]


def _passthrough(method: str, path: str, headers: dict[str, str], real: Answer) -> Answer:
    del method, path, headers
    return real


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        fwd = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in {"host", "content-length", "connection", "accept-encoding"}
        }
        with httpx.Client(timeout=30) as client:
            resp = client.request(
                self.command, self.server.upstream + self.path, headers=fwd, content=body
            )
        headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() not in {"content-length", "transfer-encoding", "connection", "date"}
        }
        if "location" in {k.lower() for k in headers}:
            for k in list(headers):
                if k.lower() == "location":
                    headers[k] = headers[k].replace(self.server.upstream, self.server.url)
        real = Answer(resp.status_code, headers, resp.content)
        answer = self.server.fault(self.command, self.path, dict(self.headers.items()), real)
        self.server.requests.append((self.command, self.path, answer.status))
        self.send_response(answer.status)
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if answer.send_only is None:
            self.wfile.write(answer.body)
            return
        self.wfile.write(answer.body[: answer.send_only])
        self.wfile.flush()
        if answer.stall:
            self.server.stopping.wait(STALL_SECONDS)
        self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: str
    url: str
    fault: Fault
    requests: list[tuple[str, str, int]]
    stopping: threading.Event


@contextlib.contextmanager
def faulty_registry(upstream: str, fault: Fault = _passthrough) -> Iterator[_Server]:
    """Serve on a free 127.0.0.1 port until the block ends; ``server.url`` is its base."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.upstream = upstream
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.fault = fault
    server.requests = []
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def is_blob_get(method: str, path: str, digest: str | None = None) -> bool:
    return method == "GET" and "/blobs/sha256:" in path and (digest is None or digest in path)
