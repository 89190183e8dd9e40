"""The agent's HTTP client for ``/node_api/*`` (docs/node-api.md), over mutual TLS.

Trust is pinned: the server must chain to the platform CA saved at
enrollment, and the system's CA store is never loaded. The client presents
the node certificate on every call but enroll. The httpx transport is the
test seam (``transport=``): tests pass an in-memory fake platform.

Failures split in three (errors.py): :class:`PlatformUnreachable`
(connection refused, timeout, 5xx, 429: retried with exponential backoff and
full jitter, bounded in attempts, then raised for the loop to back off),
:class:`PlatformRefused` (a 4xx problem: retrying will not help) and
:class:`PlatformUntrusted` (the server's certificate does not chain to the
pinned CA). Full jitter is "delay = uniform(0, min(cap, base * 2**n))"
(AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): it spreads a
fleet's reconnects after an outage instead of synchronising them.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from powernode.agent.lifecycle import Clock, SystemClock
from powernode.errors import DataError, TransportError, VerificationError
from powernode.node.fields import JSON
from powernode.node.records import (
    AckRequest,
    CommitAnswer,
    CommitRequest,
    DesiredModules,
    EnrollAnswer,
    EnrollRequest,
    Event,
    EventsAnswer,
    EventsRequest,
    FailRequest,
    HeartbeatAnswer,
    HeartbeatRequest,
    LeaseAnswer,
    LeasedTask,
    LeaseRequest,
    Outcome,
    OutcomeResult,
    OutcomesAnswer,
    OutcomesRequest,
    Record,
    RotateAnswer,
    RotateRequest,
)

log = logging.getLogger(__name__)

API = "/node_api"


class PlatformUnreachable(TransportError):
    """The platform could not be reached or answered 5xx/429; try again later."""


class PlatformRefused(DataError):
    """The platform answered 4xx; ``status`` and ``detail`` say why."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {path}: platform refused ({status}): {detail}")


class PlatformUntrusted(VerificationError):
    """The server's TLS certificate does not chain to the pinned platform CA."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter."""

    base: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * 2.0 ** min(attempt, 32)))


R = TypeVar("R", bound=Record)


def tls_context(
    platform_ca: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context trusting only ``platform_ca``, presenting ``cert``/``key`` if given."""
    try:
        # With cafile given, create_default_context loads no system roots: the pin.
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(platform_ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None and key is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise TransportError(f"cannot set up TLS from {platform_ca}, {cert}, {key}: {e}") from e
    return ctx


class NodeClient:
    """One node's client for the node API. Not thread-safe: the runtime loop owns it."""

    def __init__(
        self,
        base_url: str,
        *,
        tls: ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
        attempts: int = 3,
        timeout: float = 10.0,
        max_response_bytes: int = 4 << 20,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._clock = clock or SystemClock()
        self._stop = stop or threading.Event()
        self._backoff = backoff or Backoff()
        self._attempts = attempts
        self._max_bytes = max_response_bytes
        self._rng = rng or random.SystemRandom()
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=tls if tls is not None else True,
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"user-agent": "powernode-agent"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the contract, one method per endpoint ----------------------------------------

    def enroll(self, bootstrap_token: str, csr_pem: str) -> EnrollAnswer:
        # The token is single use: a lost answer must not be retried blindly.
        body = EnrollRequest(bootstrap_token=bootstrap_token, csr_pem=csr_pem)
        return self._call("POST", "/enroll", body, EnrollAnswer, idempotent=False)

    def heartbeat(self, body: HeartbeatRequest) -> HeartbeatAnswer:
        return self._call("POST", "/status/heartbeat", body, HeartbeatAnswer, idempotent=True)

    def lease(self, max_tasks: int) -> list[LeasedTask]:
        # Not retried after it was sent: a lost answer's tasks come back after the
        # visibility timeout anyway, a retry would only lease more.
        body = LeaseRequest(max=max_tasks)
        return self._call("POST", "/tasks/lease", body, LeaseAnswer, idempotent=False).tasks

    def lease_reporting(self, max_tasks: int, outcomes: list[Outcome]) -> LeaseAnswer:
        """Lease up to ``max_tasks`` and report up to 100 ``outcomes`` of earlier leases,
        in one request and one transaction on the platform (all or nothing: one refused
        outcome refuses the whole request, 404 or 409, and nothing was recorded or leased).

        Not retried after it was sent, as :meth:`lease`: a lost answer's outcomes are
        sent again later (recorded once), its tasks come back after the visibility timeout.
        """
        body = LeaseRequest(max=max_tasks, outcomes=outcomes)
        return self._call("POST", "/tasks/lease", body, LeaseAnswer, idempotent=False)

    def ack(self, task_id: str, result: dict[str, JSON], attempt: int | None = None) -> None:
        # attempt None: an outcome buffered by an older agent carries none
        body = AckRequest(result=result, attempt=attempt)
        self._request("POST", f"/tasks/{_seg(task_id)}/ack", body, idempotent=True)

    def fail(self, task_id: str, error: str, retryable: bool, attempt: int | None = None) -> None:
        body = FailRequest(error=error, retryable=retryable, attempt=attempt)
        self._request("POST", f"/tasks/{_seg(task_id)}/fail", body, idempotent=True)

    def outcomes(self, items: list[Outcome]) -> list[OutcomeResult]:
        """Report up to 100 outcomes (acks and fails) in one call.

        Idempotent: the platform records an outcome once, so a resend is safe.
        """
        body = OutcomesRequest(outcomes=items)
        return self._call("POST", "/tasks/outcomes", body, OutcomesAnswer, True).outcomes

    def post_events(self, events: list[Event]) -> EventsAnswer:
        # Idempotent by event id (the platform dedups), so a resend is safe.
        body = EventsRequest(events=events)
        return self._call("POST", "/events", body, EventsAnswer, idempotent=True)

    def rotate(self, csr_pem: str) -> RotateAnswer:
        body = RotateRequest(csr_pem=csr_pem)
        return self._call("POST", "/certificates/rotate", body, RotateAnswer, True)

    def modules(self) -> DesiredModules:
        return self._call("GET", "/modules", None, DesiredModules, idempotent=True)

    def commit_version(self, body: CommitRequest) -> CommitAnswer:
        # Idempotent: the same announcement again is answered with what was recorded.
        return self._call("POST", "/module_versions", body, CommitAnswer, idempotent=True)

    # -- plumbing ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Record | None,
        model: type[R],
        idempotent: bool,
    ) -> R:
        raw = self._request(method, path, body, idempotent=idempotent)
        where = f"{method} {API}{path}: unexpected answer from the platform"
        return model.from_json(_json(raw, f"{method} {path}"), where)

    def _request(self, method: str, path: str, body: Record | None, *, idempotent: bool) -> bytes:
        attempt = 0
        while True:
            try:
                return self._once(method, path, body, idempotent)
            except _Retry as e:
                attempt += 1
                if attempt >= self._attempts or (e.sent and not idempotent):
                    raise PlatformUnreachable(str(e)) from e.__cause__
                delay = self._backoff.delay(attempt - 1, self._rng)
                log.info("%s; retrying in %.1f s (attempt %d)", e, delay, attempt + 1)
                if self._clock.wait(self._stop, delay):
                    raise PlatformUnreachable(f"{e} (stopping, not retried)") from e.__cause__

    def _once(self, method: str, path: str, body: Record | None, idempotent: bool) -> bytes:
        url = f"{API}{path}"
        where = f"{method} {self.base_url}{url}"
        content = None if body is None else json.dumps(body.to_json(), separators=(",", ":"))
        headers = {"content-type": "application/json"} if content is not None else {}
        try:
            request = self._http.build_request(method, url, content=content, headers=headers)
            response = self._http.send(request, stream=True)
        except httpx.ConnectError as e:
            _raise_tls(e, where)
            raise _Retry(f"{where}: cannot connect: {e}", sent=False) from e
        except httpx.TimeoutException as e:
            raise _Retry(f"{where}: timed out: {e}", sent=True) from e
        except httpx.TransportError as e:
            _raise_tls(e, where)
            raise _Retry(f"{where}: {type(e).__name__}: {e}", sent=True) from e
        try:
            raw = self._read_capped(response, where)
        except httpx.TransportError as e:
            raise _Retry(f"{where}: connection lost reading the answer: {e}", sent=True) from e
        finally:
            response.close()
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Retry(f"{where}: platform answered {status}", sent=True)
        if status >= 400:
            raise PlatformRefused(method, url, status, _problem_detail(raw))
        if status >= 300:
            raise PlatformRefused(method, url, status, "unexpected redirect; check platform_url")
        return raw

    def _read_capped(self, response: httpx.Response, where: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise DataError(f"{where}: answer larger than {self._max_bytes} bytes; refused")
            chunks.append(chunk)
        return b"".join(chunks)


class _Retry(Exception):
    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def _seg(task_id: str) -> str:
    # Task ids go into the path: refuse anything that could change the path.
    if not task_id or any(c in task_id for c in "/?#%\\") or task_id in {".", ".."}:
        raise DataError(f"task id {task_id!r} from the platform cannot be used in a URL path")
    return task_id


def _json(raw: bytes, where: str) -> object:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise DataError(f"{where}: the platform's answer is not JSON ({e})") from e


def _problem_detail(raw: bytes) -> str:
    # RFC 9457 problem JSON: prefer "detail", then "title"; else the raw text.
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw[:500].decode(errors="replace") or "no detail"
    if isinstance(doc, dict):
        for key in ("detail", "title"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])[:2000]
    return raw[:500].decode(errors="replace")


def _raise_tls(error: BaseException, where: str) -> None:
    """Turn TLS verification/refusal failures hidden in ``error``'s chain into our errors."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return
        if isinstance(seen, ssl.SSLCertVerificationError):
            why = getattr(seen, "verify_message", "") or str(seen)
            raise PlatformUntrusted(
                f"{where}: the platform's TLS certificate does not chain to the pinned platform "
                f"CA ({why}); check platform_ca_file or re-enroll"
            ) from error
        if isinstance(seen, ssl.SSLError) and "ALERT" in str(seen).upper():
            raise PlatformRefused(
                "TLS",
                where,
                0,
                f"the platform refused our client certificate during the handshake ({seen}); "
                "it may be expired or revoked: re-enroll with a new bootstrap token",
            ) from error
        seen = seen.__cause__ or seen.__context__
