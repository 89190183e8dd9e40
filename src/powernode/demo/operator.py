"""The operator's calls to the platform's REST API, each shown as its CLI line.

Every call is what ``powernode system <command>`` sends (cli/system.py: the
same paths and bodies, through the same client, :mod:`powernode.client`);
the demo makes it in this process — one Python start-up instead of one per
command — and reports the command line, so the demo's output is the
tutorial's list of commands. The CI's build webhook (seed 004: HMAC-SHA256
of the body under the module's webhook secret, ``X-Gitea-Signature``) is
sent the way a CI job sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shlex
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from powernode.client import API, ApiError, JsonObject, Params, SyncOperatorClient
from powernode.demo.steps import Reporter

log = logging.getLogger(__name__)

TIMEOUT = 30.0


class OperatorError(ApiError):
    """The platform refused an operator call; carries the HTTP status and the problem detail."""

    def __init__(self, e: ApiError) -> None:
        super().__init__(
            e.status, e.detail, e.problem, reason=e.reason, method=e.method, path=e.path
        )
        self.args = (f"{e.method} {API}{e.path}: HTTP {e.status}: {e.detail}",)


def cli_line(*words: str) -> str:
    """``powernode system words…``, quoted for a shell."""
    return "powernode system " + " ".join(shlex.quote(w) for w in words)


@dataclass
class Operator:
    """An operator holding an API token, talking to the platform at ``url``."""

    url: str
    token: str
    reporter: Reporter
    transport: httpx.BaseTransport | None = None
    clock: Callable[[], float] = time.time
    verify: ssl.SSLContext | bool = True
    _client: SyncOperatorClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = SyncOperatorClient(
            self.url, self.token, self.transport, timeout=TIMEOUT, verify=self.verify
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        cli: list[str] | None,
        method: str,
        path: str,
        body: object = None,
        params: Params = None,
    ) -> JsonObject:
        """Send one operator request; ``cli`` is the ``powernode system`` argv shown for it."""
        if cli is not None:
            self.reporter.command(cli_line(*cli))
        try:
            return self._client.request(method, path, body=body, params=params)
        except ApiError as e:
            raise OperatorError(e) from e

    def get(self, path: str, params: Params = None) -> JsonObject:
        """A read the demo makes to check state (not shown as a command)."""
        return self.call(None, "GET", path, params=params)

    def ci_webhook(self, module: str, tag: str, secret: str) -> JsonObject:
        """POST the build-completion webhook a module repo's CI sends (seed 004)."""
        body = json.dumps(
            {"module": module, "ref": f"refs/tags/{tag}", "timestamp": int(self.clock())}
        ).encode()
        mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Gitea-Event": "push",
            "X-Gitea-Delivery": str(uuid.uuid4()),
            "X-Gitea-Signature": mac,
        }
        path = "/webhooks/gitea/module"
        self.reporter.command(
            f"curl -X POST {self.url}{API}{path} -H 'X-Gitea-Signature: <HMAC-SHA256 under "
            f'POWERNODE_WEBHOOK_SECRET>\' -d \'{{"module": "{module}", '
            f'"ref": "refs/tags/{tag}", …}}\'   # what the module\'s CI sends'
        )
        try:
            return self._client.post_raw(path, body, headers)
        except ApiError as e:
            raise OperatorError(e) from e
