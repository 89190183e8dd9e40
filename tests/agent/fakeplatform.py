"""An in-memory platform that implements docs/node-api.md, for the agent's unit tests.

It is the seam fake (python-tuf's repository simulator, httpx.MockTransport):
a node CA, bootstrap tokens, tasks with leases and a visibility timeout,
events deduplicated by id, certificate rotation. ``transport_for(instance)``
gives an httpx transport that calls it as that instance (standing in for the
mTLS identity). Faults: ``down`` (connection refused), ``lose_responses``
(the platform commits, the answer is lost: the agent must resend), and
``fail_5xx``. The end-to-end and fault tests run against the real platform.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from powernode.agent.lifecycle import Clock
from powernode.node.records import HeartbeatRequest


def make_ca(name: str, now: datetime) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    key = Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, None)
    )
    return key, cert


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Task:
    id: str
    instance_id: str
    kind: str
    payload: dict[str, Any]
    max_attempts: int = 3
    state: str = "queued"  # queued, leased, done, failed
    attempt: int = 0
    lease_expires_at: datetime | None = None
    outcomes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class FakePlatform:
    def __init__(
        self,
        clock: Clock,
        *,
        cert_lifetime: timedelta = timedelta(days=90),
        visibility_timeout: timedelta = timedelta(seconds=300),
    ) -> None:
        self.clock = clock
        self.cert_lifetime = cert_lifetime
        self.visibility_timeout = visibility_timeout
        self.ca_key, self.ca_cert = make_ca("fake node CA", clock.now())
        self.lock = threading.Lock()
        self.tokens: dict[str, tuple[str, bool]] = {}  # token -> (instance, used)
        self.tasks: dict[str, Task] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.event_posts: list[int] = []
        self.duplicates = 0
        self.heartbeats: list[tuple[str, dict[str, Any]]] = []
        self.certs_issued: list[x509.Certificate] = []
        self.requests: list[str] = []
        self.down = False
        self.fail_5xx = 0  # answer this many requests with 503
        self.batch_outcomes = True  # False: a platform without POST /tasks/outcomes
        self.outcome_posts: list[int] = []  # outcomes per POST /tasks/outcomes
        self.lease_outcomes = True  # False: a platform whose lease takes no outcomes
        self.lease_carried: list[int] = []  # outcomes per lease that carried some
        self.attempts_reported: list[int | None] = []  # the "attempt" of each outcome
        self.lose_responses = 0  # commit, then drop this many answers
        self.lose_path = ""  # ...only answers to this path, when set
        self.events_delay = 0.0  # seconds between storing a batch and answering
        self.received: list[str] = []  # every event id posted, duplicates included
        # GET /node_api/modules answers, by instance (docs/agent-modules.md, desired.py)
        self.desired_modules: dict[str, dict[str, Any]] = {}

    # -- operator side ----------------------------------------------------------------

    def token(self, instance_id: str) -> str:
        token = "pnb_" + uuid.uuid4().hex
        self.tokens[token] = (instance_id, False)
        return token

    def add_task(self, instance_id: str, kind: str, payload: dict[str, Any] | None = None) -> str:
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = Task(task_id, instance_id, kind, payload or {})
        return task_id

    def issue(self, csr_pem: str, instance_id: str) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        public = csr.public_key()
        assert isinstance(public, Ed25519PublicKey)
        now = self.clock.now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, instance_id)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + self.cert_lifetime)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:powernode:instance:{instance_id}")]
                ),
                critical=False,
            )
            .sign(self.ca_key, None)
        )
        self.certs_issued.append(cert)
        return cert

    # -- transport --------------------------------------------------------------------

    def transport_for(self, instance_id: str | None) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            return self.handle(request, instance_id)

        return httpx.MockTransport(handler)

    def handle(self, request: httpx.Request, instance_id: str | None) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused (fake platform down)", request=request)
        if self.fail_5xx:
            self.fail_5xx -= 1
            return httpx.Response(503, json={"detail": "try later"})
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        body = json.loads(request.content) if request.content else {}
        with self.lock:
            status, answer = self._route(request.method, path, body, instance_id)
        if path == "/node_api/events" and self.events_delay:
            import time

            time.sleep(self.events_delay)  # a window where the batch is stored, not yet answered
        if self.lose_responses and self.lose_path in ("", path):
            self.lose_responses -= 1
            raise httpx.ReadError("connection reset after commit (fake)", request=request)
        return httpx.Response(status, json=answer)

    def _route(
        self, method: str, path: str, body: dict[str, Any], instance: str | None
    ) -> tuple[int, dict[str, Any]]:
        now = self.clock.now()
        if path == "/node_api/enroll":
            entry = self.tokens.get(body.get("bootstrap_token", ""))
            if entry is None or entry[1]:
                return 401, {"detail": "bootstrap token unknown or already used"}
            self.tokens[body["bootstrap_token"]] = (entry[0], True)
            cert = self.issue(body["csr_pem"], entry[0])
            return 201, {
                "instance_id": entry[0],
                "certificate_pem": pem(cert),
                "ca_pem": pem(self.ca_cert),
                "not_after": cert.not_valid_after_utc.isoformat(),
            }
        if instance is None:
            return 401, {"detail": "client certificate required"}
        if path == "/node_api/status/heartbeat":
            self.heartbeats.append((instance, body))
            return 200, {"server_time": now.isoformat()}
        if path == "/node_api/tasks/lease":
            carried = body.get("outcomes")
            if carried is None:
                return 200, {"tasks": self._lease(instance, int(body["max"]), now)}
            if not self.lease_outcomes:
                return 422, {"detail": "outcomes: Extra inputs are not permitted"}
            self.lease_carried.append(len(carried))
            # All or nothing, as the platform: judged first, recorded only if none is refused.
            refused = [
                o["id"] for o in carried if self._refusal(instance, o["id"], o.get("attempt"))
            ]
            if refused:
                return 409, {"detail": f"outcomes refused: {', '.join(refused)}; none recorded"}
            answers = []
            for sent in carried:
                item = dict(sent)
                verb = item.pop("outcome")
                status, answer = self._outcome(instance, item.pop("id"), verb, item)
                answers.append({"id": answer["id"], "status": status, **answer})
            return 200, {"tasks": self._lease(instance, int(body["max"]), now), "outcomes": answers}
        if path == "/node_api/tasks/outcomes" and self.batch_outcomes:
            self.outcome_posts.append(len(body["outcomes"]))
            answers = []
            for item in body["outcomes"]:
                verb = item.pop("outcome")
                status, answer = self._outcome(instance, item.pop("id"), verb, item)
                answers.append({"id": answer["id"], "status": status, **answer})
            return 200, {"outcomes": answers}
        if path.startswith("/node_api/tasks/") and path.count("/") == 4:
            _, _, _, task_id, verb = path.split("/")
            return self._outcome(instance, task_id, verb, body)
        if path == "/node_api/events":
            self.event_posts.append(len(body["events"]))
            accepted = 0
            for event in body["events"]:
                self.received.append(event["id"])
                if event["id"] in self.events:
                    self.duplicates += 1
                else:
                    self.events[event["id"]] = event
                    accepted += 1
            return 200, {"accepted": accepted, "duplicates": len(body["events"]) - accepted}
        if path == "/node_api/modules" and method == "GET":
            return 200, self.desired_modules.get(instance, {"modules": [], "composition": None})
        if path == "/node_api/certificates/rotate":
            cert = self.issue(body["csr_pem"], instance)
            return 200, {
                "certificate_pem": pem(cert),
                "not_after": cert.not_valid_after_utc.isoformat(),
            }
        return 404, {"detail": f"no route {method} {path}"}

    def _lease(self, instance: str, n: int, now: datetime) -> list[dict[str, Any]]:
        out = []
        for task in self.tasks.values():
            if len(out) >= n:
                break
            expired = (
                task.state == "leased"
                and task.lease_expires_at is not None
                and (task.lease_expires_at <= now)
            )
            if task.instance_id != instance or not (task.state == "queued" or expired):
                continue
            task.state = "leased"
            task.attempt += 1
            task.lease_expires_at = now + self.visibility_timeout
            out.append(
                {
                    "id": task.id,
                    "kind": task.kind,
                    "payload": task.payload,
                    "attempt": task.attempt,
                    "lease_expires_at": task.lease_expires_at.isoformat(),
                }
            )
        return out

    def _refusal(self, instance: str, task_id: str, attempt: int | None) -> bool:
        """Whether :meth:`_outcome` would refuse this outcome (404/409), changing nothing."""
        task = self.tasks.get(task_id)
        if task is None or task.instance_id != instance:
            return True
        if task.state in ("done", "failed"):
            return False
        return task.state != "leased" or (attempt is not None and attempt != task.attempt)

    def _outcome(
        self, instance: str, task_id: str, verb: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        task = self.tasks.get(task_id)
        if task is None or task.instance_id != instance:
            return 404, {"id": task_id, "detail": f"task {task_id} not found"}
        if task.state in ("done", "failed"):
            return 200, {"id": task_id, "state": task.state}
        if task.state != "leased":
            return 409, {"id": task_id, "detail": "task not leased"}
        body = dict(body)
        attempt = body.pop("attempt", None)  # checked like the platform, not recorded
        self.attempts_reported.append(attempt)
        if attempt is not None and attempt != task.attempt:
            return 409, {"id": task_id, "detail": f"attempt {attempt} is not the lease's"}
        # What the platform reads of each verb (an outcome of the batch carries both sets).
        kept = ("result",) if verb == "ack" else ("error", "retryable")
        task.outcomes.append((verb, {k: body[k] for k in kept if k in body}))
        if verb == "ack":
            task.state = "done"
        elif body.get("retryable") and task.attempt < task.max_attempts:
            task.state = "queued"
        else:
            task.state = "failed"
        return 200, {"id": task_id, "state": task.state}


# -- helpers the agent tests share ---------------------------------------------------------

URL = "https://platform.test:8400"


def client_for(platform: FakePlatform, instance: str | None, **kw: Any) -> Any:
    import random

    from powernode.agent.transport import NodeClient

    kw.setdefault("rng", random.Random(7))  # noqa: S311 - reproducible jitter
    return NodeClient(URL, transport=platform.transport_for(instance), clock=platform.clock, **kw)


def enrolled_agent(
    tmp_path: Any, platform: FakePlatform, instance: str = "11111111-2222-4333-8444-555555555555"
) -> Any:
    """A state dir enrolled with ``platform``; returns the AgentConfig."""
    from powernode.agent.certstore import CertStore
    from powernode.agent.config import AgentConfig
    from powernode.agent.enroll import enroll

    config = AgentConfig(platform_url=URL, state_dir=tmp_path / "state", host_root=tmp_path)
    with client_for(platform, None) as client:
        enroll(
            CertStore(config.pki_dir),
            client,
            platform.token(instance),
            platform_ca_pem=pem(platform.ca_cert).encode(),
            now=platform.clock.now(),
        )
    return config


def make_runtime(config: Any, platform: FakePlatform, **kw: Any) -> Any:
    import random

    from powernode.agent.certstore import CertStore
    from powernode.agent.lifecycle import StopSignal
    from powernode.agent.runtime import Runtime
    from powernode.agent.spool import Spool
    from powernode.agent.tasks import InlineExecutor, default_registry

    spool = kw.pop("spool", None) or Spool(config.spool_file)
    executor = kw.pop("executor", None) or InlineExecutor(default_registry())
    stop = kw.pop("stop", None) or StopSignal()
    return Runtime(
        config,
        store=CertStore(config.pki_dir),
        spool=spool,
        client_factory=lambda creds: client_for(platform, creds.info.instance_id, stop=stop.event),
        executor=executor,
        clock=platform.clock,
        stop=stop,
        facts=lambda: HeartbeatRequest(boot_id="b", agent_version="t"),
        rng=random.Random(3),  # noqa: S311 - reproducible jitter
        **kw,
    )


# -- the fake over real TLS, for agent processes ---------------------------------------------


def server_cert(platform: FakePlatform, hosts: list[str]) -> tuple[bytes, bytes]:
    """A TLS server certificate for ``hosts`` (IP addresses) from the fake's CA: (cert, key) PEM."""
    import ipaddress
    from datetime import UTC

    key = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)  # OpenSSL checks the server certificate against real time
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake platform")]))
        .issuer_name(platform.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]),
            critical=False,
        )
        .sign(platform.ca_key, None)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TlsServer:
    """Serves a FakePlatform over HTTPS with optional client certificates, in a thread."""

    def __init__(self, platform: FakePlatform, host: str, workdir: Any, port: int = 0) -> None:
        import ssl
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from pathlib import Path

        workdir = Path(workdir)
        if not (workdir / "server.pem").exists():
            cert, key = server_cert(platform, [host])
            (workdir / "server.pem").write_bytes(cert)
            (workdir / "server.key").write_bytes(key)
            (workdir / "ca.pem").write_text(pem(platform.ca_cert))
        self.ca_file = workdir / "ca.pem"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(workdir / "server.pem", workdir / "server.key")
        ctx.load_verify_locations(self.ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # enroll comes without a client certificate
        fake = platform
        peers: set[str] = set()
        self.peers = peers
        conns: set[Any] = set()
        self._conns = conns

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                conns.add(self.connection)

            def finish(self) -> None:
                conns.discard(self.connection)
                super().finish()

            def _serve(self) -> None:
                peers.add(self.client_address[0])
                peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                instance = None
                for kind, value in (peer or {}).get("subjectAltName", ()):
                    if kind == "URI" and value.startswith("urn:powernode:instance:"):
                        instance = value.rsplit(":", 1)[1]
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = httpx.Request(self.command, self.path, content=raw)
                try:
                    answer = fake.handle(request, instance)
                    status, body = answer.status_code, answer.content
                except httpx.HTTPError:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _serve
            do_POST = _serve

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop listening and cut every open connection, as a stopped platform would."""
        import socket

        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
