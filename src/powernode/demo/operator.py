"""The operator's calls to the platform's REST API, each shown as its CLI line.

Every call is what ``powernode system <command>`` sends (cli/system.py: the
same paths and bodies); the demo makes it with httpx in this process — one
Python start-up instead of one per command — and reports the command line,
so the demo's output is the tutorial's list of commands. The CI's build
webhook (seed 004: HMAC-SHA256 of the body under the module's webhook
secret, ``X-Gitea-Signature``) is sent the way a CI job sends it.
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
from typing import Any

import httpx

from powernode.demo.steps import Reporter
from powernode.errors import PowernodeError

log = logging.getLogger(__name__)

API = "/api/v1/system"
TIMEOUT = 30.0


class OperatorError(PowernodeError):
    """The platform refused an operator call; carries the HTTP status and the problem detail."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {API}{path}: HTTP {status}: {detail}")


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
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.url + API, transport=self.transport, timeout=TIMEOUT, verify=self.verify
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        cli: list[str] | None,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one operator request; ``cli`` is the ``powernode system`` argv shown for it."""
        if cli is not None:
            self.reporter.command(cli_line(*cli))
        headers = {"Authorization": f"Bearer {self.token}"}
        r = self._client.request(method, path, json=body, params=params, headers=headers)
        return _answer(method, path, r)

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A read the demo makes to check state (not shown as a command)."""
        return self.call(None, "GET", path, params=params)

    def ci_webhook(self, module: str, tag: str, secret: str) -> dict[str, Any]:
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
        r = self._client.post(path, content=body, headers=headers)
        return _answer("POST", path, r)


def _answer(method: str, path: str, r: httpx.Response) -> dict[str, Any]:
    if r.is_error:
        try:
            detail = str(r.json().get("detail", r.text))
        except ValueError:
            detail = r.text[:500]
        raise OperatorError(method, path, r.status_code, detail)
    try:
        data = r.json()
    except ValueError as e:
        raise OperatorError(method, path, r.status_code, f"answer is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise OperatorError(method, path, r.status_code, "answer is not a JSON object")
    return data
