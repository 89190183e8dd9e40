"""One bounded HTTP request to a link-local metadata service.

Rules from IDENTITY_SOURCES.md §0 and §14: bypass proxies (``trust_env=False``:
Azure refuses proxied requests, and proxies can be auto-discovered), never
send ``X-Forwarded-For`` (Azure and IMDSv2 token PUTs reject it), follow no
redirects, keep the connect timeout short (a silent gateway costs the whole
timeout) and bound the *total* time, not just each read: a server that
trickles one byte at a time would otherwise hold us forever. Bodies are
capped and read without content decoding, so a compressed bomb is refused.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from powernode.agent.identity.model import Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss

log = logging.getLogger(__name__)

USER_AGENT = "powernode-agent-identity"


def _no_trust_tls_context() -> ssl.SSLContext:
    """A TLS context that verifies but trusts no CA.

    Metadata services are plain HTTP (config refuses other schemes), so TLS is
    never used; httpx's default context would load the system CA bundle on
    every client (~70 ms measured here) for nothing.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@dataclass(frozen=True)
class MetadataResponse:
    status: int
    headers: httpx.Headers
    body: bytes

    def text(self, what: str) -> str:
        """The body as UTF-8, or an INVALID ``SourceMiss`` naming ``what``."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SourceMiss(
                Outcome.INVALID,
                f"{what}: answer is not UTF-8 text (byte {e.start} of {len(self.body)})",
            ) from e


class ProbeTimeout(SourceMiss):
    """The answer did not complete within the probe's bound."""


class ProbeClock:
    """The deadline of one metadata probe: its own budget, capped by the cascade's."""

    def __init__(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        now = ctx.config.clock()
        self.deadline = min(now + ctx.config.probe_timeout, ctx.network_deadline)

    def remaining(self) -> float:
        return self.deadline - self.ctx.config.clock()


def fetch(
    clock: ProbeClock,
    method: str,
    url: str,
    headers: Mapping[str, str],
    what: str,
) -> MetadataResponse:
    """Send one request and read the whole (capped) answer before ``clock.deadline``.

    Raises ``SourceMiss(ERROR)`` for every transport failure, with a reason
    that says where and what to check. HTTP error statuses are returned,
    not raised: each provider gives them its own meaning.
    """
    config = clock.ctx.config
    remaining = clock.remaining()
    if remaining <= 0:
        raise SourceMiss(
            Outcome.ERROR,
            f"{what}: not tried, the network budget of the identity cascade is spent "
            f"(total_timeout {config.total_timeout:g} s)",
        )
    timeout = httpx.Timeout(
        connect=min(config.connect_timeout, remaining),
        read=remaining,
        write=remaining,
        pool=remaining,
    )
    send_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    log.debug("identity: %s %s", method, url)
    limit = config.max_response_bytes
    try:
        with (
            httpx.Client(
                trust_env=False,
                follow_redirects=False,
                timeout=timeout,
                verify=_no_trust_tls_context(),
            ) as client,
            client.stream(method, url, headers=send_headers) as response,
        ):
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding != "identity":
                raise SourceMiss(
                    Outcome.INVALID,
                    f"{what}: answer is {encoding}-encoded although we asked for identity",
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > limit:
                    raise SourceMiss(
                        Outcome.INVALID,
                        f"{what}: answer larger than {limit} bytes (max_response_bytes)",
                    )
                chunks.append(chunk)
                if clock.remaining() <= 0:
                    raise _deadline_miss(what, clock)
            return MetadataResponse(response.status_code, response.headers, b"".join(chunks))
    except httpx.ConnectTimeout as e:
        raise SourceMiss(
            Outcome.ERROR,
            f"{what}: connect timed out after {timeout.connect:g} s (no metadata service "
            f"reachable at {url})",
        ) from e
    except httpx.ConnectError as e:
        raise SourceMiss(Outcome.ERROR, f"{what}: cannot connect to {url}: {e}") from e
    except httpx.TimeoutException as e:
        raise _deadline_miss(what, clock) from e
    except httpx.HTTPError as e:
        raise SourceMiss(
            Outcome.ERROR, f"{what}: broken HTTP answer from {url}: {type(e).__name__}: {e}"
        ) from e


def _deadline_miss(what: str, clock: ProbeClock) -> ProbeTimeout:
    config = clock.ctx.config
    return ProbeTimeout(
        Outcome.ERROR,
        f"{what}: no complete answer within the probe bound "
        f"(probe_timeout {config.probe_timeout:g} s, total_timeout {config.total_timeout:g} s)",
    )


def expect_ok(response: MetadataResponse, what: str) -> MetadataResponse:
    """Map a non-200 status to a ``SourceMiss`` with the provider-neutral meaning."""
    status = response.status
    if status == 200:
        return response
    snippet = response.body[:120].decode("utf-8", errors="replace").strip()
    said = f" ({snippet!r})" if snippet else ""
    if status == 404:
        raise SourceMiss(Outcome.ABSENT, f"{what}: HTTP 404, not provided by this service{said}")
    if status >= 500:
        raise SourceMiss(Outcome.ERROR, f"{what}: HTTP {status}, server error; retry later{said}")
    if status == 429:
        raise SourceMiss(Outcome.ERROR, f"{what}: HTTP 429, rate limited; retry later{said}")
    raise SourceMiss(Outcome.ERROR, f"{what}: HTTP {status}{said}")
