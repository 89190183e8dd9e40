"""Seed 000's subcommands at the top level of ``powernode-agent``, each imported on use.

``attach``, ``detach``, ``update``, ``sync`` are the ``modules`` group's
commands under their seed names (``update`` is a reconcile with
``/node_api/modules``, like ``sync``); ``modules`` stays as their group.
``verify``, ``version``, ``rotate``, ``exec`` live in :mod:`powernode.cli.agent_node`.
Nothing here is imported by ``--help`` but these strings (bench/bench_cli_start.py).
"""

from __future__ import annotations

from powernode.cli.base import App

_MODULES = "powernode.cli.agent_modules"
_NODE = "powernode.cli.agent_node"
_SYNC = "One reconcile with GET /node_api/modules (or --desired FILE): pull, verify, restack."

# name -> ("module:attribute", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {  # each help: its command's own first line
    "attach": (
        f"{_MODULES}:attach",
        "Verify REF's signature under the policy, pull it, attach it and restack the union.",
    ),
    "detach": (
        f"{_MODULES}:detach",
        "Remove a module and restack the union (the others are verified again).",
    ),
    "update": (f"{_MODULES}:sync", _SYNC),
    "sync": (f"{_MODULES}:sync", _SYNC),
    "verify": (
        f"{_NODE}:verify",
        "Verify signature and digests; the exit status is the verdict (0 good, 1 bad).",
    ),
    "version": (
        f"{_NODE}:version",
        "Print the agent's version, git SHA, build date and Python version.",
    ),
    "exec": (
        f"{_NODE}:exec_script",
        "Fetch a NodeScript, verify its signature, run it confined; exit with its exit code.",
    ),
    "volume-setup": (
        f"{_NODE}:volume_setup",
        "Partition and format disks from a declared layout; idempotent, refuses foreign disks.",
    ),
    "init": (
        f"{_NODE}:init",
        "Run a module's init action now (manifest init_actions); exit with its exit code.",
    ),
    "rotate": (
        f"{_NODE}:rotate",
        "Rotate the node certificate now: new key, POST /node_api/certificates/rotate, install.",
    ),
}


def register(app: App) -> None:
    """Add the seed's top-level commands to the agent's app (lazily)."""
    for name, (target, help_text) in COMMANDS.items():
        app.add_lazy(name, target, help_text)
