"""The settings merge the agent and the platform share: defaults < file < environment < overrides.

The file is one flat TOML table (stdlib ``tomllib``); the environment
variable of a setting is its name upper-cased behind a prefix
(``POWERNODE_AGENT_STATE_DIR``, ``POWERNODE_DATA_DIR``); overrides come
from command-line flags, and one whose value is None (a flag not given) does
not mask the file or the environment. Defaults are the settings class's
own: a setting no layer names is left out of :attr:`Layers.values`.

Each value remembers where it came from (:attr:`Layers.source`), so an
error about it names what the user can fix: the file and key, the
variable, or the flag.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import ConfigError


@dataclass(frozen=True)
class Layers:
    """The merged values (highest layer wins) and where each one came from."""

    values: dict[str, object]
    source: dict[str, str]


def merge(
    fields: Sequence[str],
    *,
    file: Path | None,
    env: Mapping[str, str] | None,
    env_prefix: str,
    overrides: Mapping[str, object],
    what: str,
    flags: Mapping[str, str] | None = None,
) -> Layers:
    """Merge ``file``, ``env`` (default ``os.environ``) and ``overrides`` for ``fields``.

    ``what`` names the file in errors ("agent config", "settings file");
    ``flags`` maps a setting to the flag that overrides it, for
    :attr:`Layers.source`. Raises ConfigError for a file that cannot be
    read, is not TOML or names a setting that does not exist.
    """
    values: dict[str, object] = {}
    if file is not None:
        values.update(_read_file(file, what))
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"{file}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}"
            )
    source = {name: f"{file}: {name}" for name in values}
    environ = os.environ if env is None else env
    for name in fields:
        key = env_prefix + name.upper()
        if key in environ:
            values[name] = environ[key]
            source[name] = key
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    names = flags or {}
    source.update({k: names.get(k, k) for k in given})
    return Layers(values, source)


def _read_file(file: Path, what: str) -> dict[str, object]:
    try:
        with file.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{file}: cannot read {what}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from e
