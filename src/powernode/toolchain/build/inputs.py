"""What a build needs besides the tree: its version and SOURCE_DATE_EPOCH.

The version and the timestamp come from the caller, else from git (the repo's
nearest tag, its last commit time), else the build is refused: a guess
(today's date, "0.0.0") would make two builds of the same tree differ, or
publish a version nobody chose. SOURCE_DATE_EPOCH follows
https://reproducible-builds.org/specs/source-date-epoch/ (a decimal integer
of seconds since the epoch).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from powernode.core.semver import Version
from powernode.errors import CommandError, ConfigError, VersionError
from powernode.run import run

log = logging.getLogger(__name__)

# The version is also the artifact's OCI tag (docs/artifact.md): SemVer without "+build".
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_EPOCH_RE = re.compile(r"[0-9]{1,12}")


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = run(["git", "-C", repo, *args], check=True, timeout=30)
    except (CommandError, OSError) as e:
        log.debug("git %s in %s: %s", " ".join(args), repo, e)
        return None
    return proc.stdout.decode(errors="replace").strip() or None


def check_version(text: str, where: str) -> str:
    """``text`` if it is a SemVer usable as an OCI tag; ConfigError saying what to do."""
    try:
        Version.parse(text)
    except VersionError as e:
        raise ConfigError(f"{where}: version {text!r} is not SemVer ({e}); use e.g. 1.2.3") from e
    if _TAG_RE.fullmatch(text) is None:
        raise ConfigError(
            f"{where}: version {text!r} cannot be an OCI tag (letters, digits, '.', '-', '_'; "
            "no '+build' metadata); use e.g. 1.2.3 or 1.2.3-rc.1"
        )
    return text


def resolve_version(repo: Path, given: str | None) -> str:
    """``given``, else ``git describe --tags`` (a leading "v" dropped), else refuse."""
    if given is not None:
        return check_version(given, "--version")
    described = _git(repo, "describe", "--tags", "--match", "*[0-9]*")
    if described is None:
        raise ConfigError(
            f"{repo}: no version: pass --version (e.g. --version 1.0.0) or tag the repo's "
            "commit (git tag v1.0.0); the manifest has no version field"
        )
    return check_version(described.removeprefix("v"), f"{repo}: git describe")


def resolve_epoch(repo: Path, given: int | None, env: Mapping[str, str] = os.environ) -> int:
    """``given``, else $SOURCE_DATE_EPOCH, else the last commit's time, else refuse."""
    if given is not None:
        if given < 0:
            raise ConfigError(f"SOURCE_DATE_EPOCH {given} is negative; use seconds since 1970")
        return given
    text = env.get("SOURCE_DATE_EPOCH")
    if text is not None:
        if _EPOCH_RE.fullmatch(text) is None:
            raise ConfigError(
                f"environment SOURCE_DATE_EPOCH={text!r} is not a decimal number of seconds "
                "(reproducible-builds.org spec); unset it or fix it"
            )
        return int(text)
    committed = _git(repo, "log", "-1", "--format=%ct")
    if committed is None or _EPOCH_RE.fullmatch(committed) is None:
        raise ConfigError(
            f"{repo}: no SOURCE_DATE_EPOCH: set the environment variable (e.g. "
            "SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)) or build from a git checkout "
            "with at least one commit"
        )
    return int(committed)
