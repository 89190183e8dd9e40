"""Fakes for identity tests: cloud metadata servers on 127.0.0.1 and a fake host root.

Each ``FakeMetadataServer`` is a real threaded HTTP server that answers on
the provider's real paths and *refuses* requests that lack what the real
service demands (IMDSv2 token and TTL header, ``Metadata-Flavor: Google``,
``Metadata: true`` + ``api-version`` + ``format=text``), so a passing test
proves the client sends them. ``Behaviour`` makes it misbehave: hang
after accepting, trickle bytes, answer 500, answer non-HTTP garbage, or an
oversized body.

``guard_loopback`` makes any connect() outside 127.0.0.0/8 fail the test, so
no test can reach the real link-local 169.254.169.254.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

# How long a hung or trickling handler may keep its thread; the server's stop() ends it sooner.
HANDLER_BOUND_S = 20.0


class Behaviour(enum.Enum):
    NORMAL = "normal"
    HUNG = "hung"  # accept the connection, read the request, never answer
    TRICKLE = "trickle"  # send headers, then one body byte every 50 ms
    SERVER_ERROR = "server-error"  # HTTP 500 on every request
    RAW_GARBAGE = "raw-garbage"  # bytes that are not an HTTP response, then close
    HUGE = "huge"  # a 200 with a 1 MiB body


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeMetadataServer:
    """One provider's metadata service on 127.0.0.1:<free port>."""

    provider: str  # aws, gcp, azure, digitalocean, hetzner
    answer: str | bytes = ""  # what the identity path returns (garbage bodies go here too)
    behaviour: Behaviour = Behaviour.NORMAL
    gcp_echo_flavor: bool = True  # a genuine GCE server echoes Metadata-Flavor
    aws_expire_first_token: bool = False  # the first token GET answers 401
    requests: list[Recorded] = field(default_factory=list)
    _tokens: set[str] = field(default_factory=set)
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeMetadataServer:
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeMetadataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(r.method, r.path) for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeMetadataServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------

    def _send(self, status: int, body: bytes | str, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        fake = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with fake._lock:
            fake.requests.append(Recorded(method, self.path, headers))
        b = fake.behaviour
        if b is Behaviour.HUNG:
            fake._release.wait(HANDLER_BOUND_S)
            return
        if b is Behaviour.SERVER_ERROR:
            self._send(500, "internal error")
            return
        if b is Behaviour.RAW_GARBAGE:
            self.wfile.write(b"\x00\xff\xfeSSH-2.0-not-http\r\n\x13\x37\r\n\r\n")
            self.close_connection = True
            return
        if b is Behaviour.TRICKLE:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.send_header("Metadata-Flavor", "Google")
            self.end_headers()
            for _ in range(int(HANDLER_BOUND_S / 0.05)):
                if fake._release.wait(0.05):
                    return
                try:
                    self.wfile.write(b"7")
                    self.wfile.flush()
                except OSError:
                    return
            return
        provider = getattr(self, f"_{fake.provider}")
        provider(method, headers)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def _answer(self) -> bytes | str:
        if self.server_state.behaviour is Behaviour.HUGE:
            return b"1" * (1024 * 1024)
        return self.server_state.answer

    # -- providers (paths and rules as IDENTITY_SOURCES.md §3-§7 describe) ----

    def _aws(self, method: str, headers: dict[str, str]) -> None:
        fake = self.server_state
        path = urlsplit(self.path).path
        if method == "PUT":
            if path != "/latest/api/token":
                self._send(403, "Forbidden")  # versioned token paths are refused
                return
            if "x-forwarded-for" in headers:
                self._send(403, "Forbidden")
                return
            ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self._send(400, "Bad Request")
                return
            token = secrets.token_urlsafe(24)
            with fake._lock:
                fake._tokens.add(token)
            self._send(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
            return
        if method != "GET":
            self._send(405, "Method Not Allowed")
            return
        token = headers.get("x-aws-ec2-metadata-token")
        with fake._lock:
            valid = token in fake._tokens
            if valid and fake.aws_expire_first_token:
                fake.aws_expire_first_token = False
                fake._tokens.clear()
                valid = False
        if not valid:  # IMDSv2 required: tokenless or stale requests get 401
            self._send(401, "Unauthorized")
            return
        if path == "/latest/meta-data/instance-id":
            self._send(200, self._answer(), {"Content-Type": "text/plain"})
            return
        self._send(404, "Not Found")

    def _gcp(self, method: str, headers: dict[str, str]) -> None:
        fake = self.server_state
        if headers.get("metadata-flavor") != "Google" or "x-forwarded-for" in headers:
            self._send(403, "Missing Metadata-Flavor:Google header.")
            return
        echo = {"Metadata-Flavor": "Google"} if fake.gcp_echo_flavor else {}
        if method == "GET" and urlsplit(self.path).path == "/computeMetadata/v1/instance/id":
            self._send(200, self._answer(), {"Content-Type": "application/text", **echo})
            return
        self._send(404, "Not Found", echo)

    def _azure(self, method: str, headers: dict[str, str]) -> None:
        if method != "GET":
            self._send(405, json.dumps({"error": "Method not allowed"}))
            return
        if "x-forwarded-for" in headers or headers.get("metadata") != "true":
            self._send(
                400, json.dumps({"error": "Bad request. Required metadata header not specified"})
            )
            return
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if any(len(v) > 1 for v in query.values()):
            self._send(400, json.dumps({"error": "Bad request. Duplicate query parameter"}))
            return
        if query.get("api-version", [""])[0] not in ("2021-02-01", "2021-08-01", "2019-06-01"):
            body = {
                "error": "Bad request. api-version is invalid or was not specified in the request.",
                "newest-versions": ["2021-08-01", "2021-05-01", "2021-03-01"],
            }
            self._send(400, json.dumps(body))
            return
        if parts.path == "/metadata/instance/compute/vmId":
            if query.get("format") != ["text"]:
                self._send(400, json.dumps({"error": "Bad request. Leaf values need format=text"}))
                return
            self._send(200, self._answer(), {"Content-Type": "text/plain; charset=utf-8"})
            return
        self._send(404, json.dumps({"error": "Not found"}))

    def _digitalocean(self, method: str, headers: dict[str, str]) -> None:
        path = urlsplit(self.path).path
        if method == "GET" and path == "/metadata/v1/id":
            self._send(200, self._answer(), {"Content-Type": "text/plain"})
            return
        if method == "GET" and path == "/metadata/v1":
            self._send(301, "", {"Location": "/metadata/v1/"})
            return
        self._send(404, "Not Found")

    def _hetzner(self, method: str, headers: dict[str, str]) -> None:
        if method == "GET" and urlsplit(self.path).path == "/hetzner/v1/metadata/instance-id":
            self._send(200, self._answer(), {"Content-Type": "text/plain"})
            return
        self._send(404, "Not Found")


# -- no test may leave loopback ----------------------------------------------------


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make connect() to anything but 127.0.0.0/8 or ::1 fail; return the refused addresses."""
    refused: list[object] = []
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                refused.append(address)
                raise AssertionError(f"test tried to connect outside loopback: {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return original_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- a fake host root (/proc, /sys, /persist) ------------------------------------------


@dataclass
class FakeHost:
    """Builds the files the identity sources read, under ``root``."""

    root: Path

    def write(self, absolute: str, content: str | bytes, mode: int | None = None) -> Path:
        path = self.root / absolute.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        if mode is not None:
            path.chmod(mode)
        return path

    def cmdline(self, text: str) -> None:
        self.write("/proc/cmdline", text + "\n")

    def dmi(self, **fields: str) -> None:
        for name, value in fields.items():
            self.write(f"/sys/class/dmi/id/{name}", value + "\n")

    def fwcfg(self, value: str | bytes) -> None:
        self.write("/sys/firmware/qemu_fw_cfg/by_name/opt/com.powernode/instance_uuid/raw", value)

    def identity_cfg(self, text: str) -> Path:
        return self.write("/persist/var/lib/powernode/identity.cfg", text)

    def snapshot(self) -> dict[str, bytes]:
        """Every file under root with its content, to prove nothing was changed."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }
