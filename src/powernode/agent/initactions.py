"""Module init actions (seed 000's ``init <id> <act>``), declared in the manifest::

    "init_actions": {
      "reload": {"unit": "nginx.service", "action": "reload", "on": ["upgrade"]},
      "seed":   {"script": "mkdir -p cache", "on": ["attach"], "timeout_seconds": 60}}

Each is a ``/bin/sh`` script or a systemd unit to ``start``, ``stop``,
``restart`` or ``reload`` (``systemctl ACTION UNIT``). ``on`` names the
events it runs at: ``attach`` (first attached), ``upgrade`` (a new version
attached), ``detach``; ``powernode-agent init MODULE ACTION`` runs one on
demand. They run after the union changed (detach: after the module left it),
in the module's state directory, confined as NodeScripts are (agent/confine.py);
the module's signature covers them (they come in its config). A failing
action (a non-zero exit, a timeout, one that cannot start, an
``init_actions`` the agent cannot read) is logged and becomes a
``module.init_failed`` fleet event (:func:`failures`, emitted by the module
service); the union stays as reconciled.

Before them, on attach and upgrade, the module's AppArmor profiles are loaded
where the kernel has AppArmor (agent/apparmor.py).

The config of every module pulled is kept at ``<state>/module-config/<name>.json``
(the module.json the signature covered), so ``init`` and ``detach`` find the
actions of what is attached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from powernode.agent.apparmor import load_profiles
from powernode.agent.migration import state_dir
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.nodescripts import execute
from powernode.errors import ConfigError, DataError, PowernodeError
from powernode.node.fields import JSON
from powernode.signing.nodescript import DEFAULT_LIMITS, NodeScript

log = logging.getLogger(__name__)

EVENTS = ("attach", "upgrade", "detach")
UNIT_ACTIONS = ("start", "stop", "restart", "reload")


@dataclass(frozen=True)
class InitAction:
    name: str
    script: str
    on: tuple[str, ...]
    timeout_seconds: int = 300


def parse_actions(manifest: Mapping[str, object] | None) -> dict[str, InitAction]:
    items = (manifest or {}).get("init_actions") or {}
    if not isinstance(items, dict):
        raise DataError("init_actions: an object of named actions")
    out = {}
    for name, a in items.items():
        at = f"init_actions.{name}"
        if not isinstance(a, dict):
            raise DataError(f"{at}: an object")
        if ("script" in a) == ("unit" in a):
            raise DataError(f"{at}: give either script or unit (with action)")
        if "unit" in a:
            unit, verb = a.get("unit"), a.get("action")
            if not isinstance(unit, str) or not unit or any(c in unit for c in " ;&|$`'\"\n"):
                raise DataError(f"{at}.unit: a systemd unit name")
            if verb not in UNIT_ACTIONS:
                raise DataError(f"{at}.action: one of {', '.join(UNIT_ACTIONS)}")
            script = f"exec systemctl {verb} {unit}\n"
        else:
            script = a["script"]
            if not isinstance(script, str) or not script:
                raise DataError(f"{at}.script: a non-empty shell script")
        on = a.get("on", [])
        if not isinstance(on, list) or any(e not in EVENTS for e in on):
            raise DataError(f"{at}.on: a list of {', '.join(EVENTS)}")
        timeout = a.get("timeout_seconds", 300)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
            raise DataError(f"{at}.timeout_seconds: an integer 1-86400")
        out[str(name)] = InitAction(str(name), script, tuple(on), timeout)
    return out


def _config_file(layout: NodeLayout, module: str) -> Path:
    return layout.state / "module-config" / f"{module}.json"


def save_config(layout: NodeLayout, module: str, config: Mapping[str, object]) -> None:
    path = _config_file(layout, module)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(config), sort_keys=True))
    tmp.replace(path)


def load_manifest(layout: NodeLayout, module: str) -> dict[str, JSON]:
    try:
        doc = json.loads(_config_file(layout, module).read_text())
    except FileNotFoundError as e:
        raise ConfigError(
            f"module {module!r}: no config on record (pulled by a sync or attach "
            "of this agent); attached modules with init actions have one"
        ) from e
    manifest = doc.get("manifest") if isinstance(doc, dict) else None
    return manifest if isinstance(manifest, dict) else {}


def run_action(layout: NodeLayout, module: str, action: InitAction, event: str) -> dict[str, JSON]:
    data = state_dir(layout, module)
    data.mkdir(parents=True, exist_ok=True)
    script = NodeScript(
        name=f"{module}-init",
        version=1,
        script=action.script,
        timeout_seconds=action.timeout_seconds,
        limits=dict(DEFAULT_LIMITS),
    )
    env = {"POWERNODE_MODULE": module, "POWERNODE_INIT_ACTION": action.name,
           "POWERNODE_INIT_EVENT": event, "POWERNODE_MODULE_STATE": str(data)}  # fmt: skip
    result = execute(script, cwd=data, extra_env=env)
    result.update({"module": module, "action": action.name, "event": event})
    return result


def run_named(layout: NodeLayout, module: str, name: str) -> dict[str, JSON]:
    """``init MODULE ACTION``: run one on demand; ConfigError naming the choices."""
    actions = parse_actions(load_manifest(layout, module))
    if name not in actions:
        known = ", ".join(sorted(actions)) or "none"
        raise ConfigError(f"module {module!r} has no init action {name!r} (it has: {known})")
    return run_action(layout, module, actions[name], "demand")


def after_apply(
    layout: NodeLayout, changes: Sequence[tuple[str, str]], emit: object = None
) -> list[dict[str, JSON]]:
    """Run the actions of each ``(event, module)``; failures logged and returned, never raised."""
    results: list[dict[str, JSON]] = []
    for event, module in changes:
        if event in ("attach", "upgrade"):
            results.extend(load_profiles(layout.root, module))
        try:
            actions = parse_actions(load_manifest(layout, module))
        except (ConfigError, DataError) as e:
            if not isinstance(e, ConfigError):
                log.error("module %s: init actions not run: %s", module, e)
                results.append({"module": module, "action": "", "event": event, "error": str(e)})
            continue
        for action in actions.values():
            if event not in action.on:
                continue
            try:
                result = run_action(layout, module, action, event)
            except PowernodeError as e:
                result = {"module": module, "action": action.name, "event": event,
                          "error": str(e)}  # fmt: skip
            results.append(result)
            if result.get("error") or result.get("exit_code") != 0 or result.get("timed_out"):
                log.error("module %s: init action %s (%s) failed: exit %s %s", module,
                          action.name, event, result.get("exit_code"),
                          result.get("error", ""))  # fmt: skip
    return results


FAILURE_TAIL = 2000  # bytes of stderr an event carries


def failures(results: Sequence[Mapping[str, JSON]]) -> list[dict[str, JSON]]:
    """The failed init actions among :func:`after_apply`'s results, as the payloads of
    ``module.init_failed`` events: module, action, event, exit_code, timed_out, error and
    the end of stderr."""
    out: list[dict[str, JSON]] = []
    for r in results:
        if "action" not in r or "event" not in r:
            continue  # an AppArmor profile's result
        if not (r.get("error") or r.get("exit_code") != 0 or r.get("timed_out")):
            continue
        keys = ("module", "action", "event", "exit_code", "timed_out", "error")
        payload: dict[str, JSON] = {k: r[k] for k in keys if k in r}
        if "stderr" in r:
            payload["stderr"] = str(r["stderr"])[-FAILURE_TAIL:]
        out.append(payload)
    return out
