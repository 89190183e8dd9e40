"""``powernode-agent enroll`` as one call: the token and platform CA read, the identity
discovered, the certificate obtained (:func:`powernode.agent.enroll.enroll`).

The token never comes from the command line (``ps`` shows it): a file, stdin
(``-``) or ``POWERNODE_AGENT_BOOTSTRAP_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from powernode.agent.certstore import CertInfo, CertStore
from powernode.agent.config import AgentConfig
from powernode.agent.enroll import check_token, enroll
from powernode.agent.lifecycle import SystemClock
from powernode.agent.transport import NodeClient, tls_context
from powernode.agent.view import instance_hint
from powernode.errors import ConfigError

TOKEN_ENV = "POWERNODE_AGENT_BOOTSTRAP_TOKEN"  # noqa: S105 - a variable name, not a token
MAX_STDIN_CHARS = 8192


def read_token(token_file: Path | None, *, stdin: TextIO, environ: Mapping[str, str]) -> str:
    """The bootstrap token from ``token_file`` ('-': stdin) or the environment, checked."""
    if token_file is not None:
        where = "stdin" if str(token_file) == "-" else str(token_file)
        try:
            token = stdin.read(MAX_STDIN_CHARS) if where == "stdin" else token_file.read_text()
        except OSError as e:
            raise ConfigError(f"{token_file}: cannot read the token: {e.strerror}") from e
    else:
        where = TOKEN_ENV
        token = environ.get(where, "")
        if not token:
            raise ConfigError(
                f"no bootstrap token: pass --token-file FILE (or '-' for stdin) or set {TOKEN_ENV}"
            )
    return check_token(token, where)


def _platform_ca(cfg: AgentConfig, platform_ca: Path | None) -> tuple[Path, bytes]:
    ca_file = platform_ca or cfg.platform_ca_file
    if ca_file is None:
        raise ConfigError(
            "no platform CA: pass --platform-ca FILE (the PEM the platform's TLS "
            "certificate chains to) or set platform_ca_file in the agent config"
        )
    try:
        return ca_file, ca_file.read_bytes()
    except OSError as e:
        raise ConfigError(f"{ca_file}: cannot read the platform CA: {e.strerror}") from e


def join(
    cfg: AgentConfig,
    token_file: Path | None,
    *,
    stdin: TextIO,
    environ: Mapping[str, str],
    platform_ca: Path | None = None,
    force: bool = False,
    discover: bool = True,
) -> CertInfo:
    """Enroll this node with the platform; returns what the installed certificate says."""
    url = cfg.require_platform()
    token = read_token(token_file, stdin=stdin, environ=environ)
    ca_file, ca_pem = _platform_ca(cfg, platform_ca)
    hint = instance_hint(cfg) if discover else ""
    clock = SystemClock()
    with NodeClient(url, tls=tls_context(ca_file), clock=clock) as client:
        return enroll(
            CertStore(cfg.pki_dir),
            client,
            token,
            platform_ca_pem=ca_pem,
            now=clock.now(),
            instance_hint=hint,
            force=force,
        )
