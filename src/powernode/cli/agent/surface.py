"""Seed 000's subcommands at the top level of ``powernode-agent``, each imported on use.

``attach``, ``detach``, ``update``, ``sync`` are the ``modules`` group's
commands under their seed names (``update`` is a reconcile with
``/node_api/modules``, like ``sync``); ``modules`` stays as their group.
``verify``, ``version``, ``rotate``, ``exec`` live in :mod:`powernode.cli.agent.node`.
Nothing here is imported by ``--help`` but these loaders (bench/bench_cli_start.py).
"""

from __future__ import annotations

from collections.abc import Callable

from powernode.cli.base import App, Loaded

_SYNC = "One reconcile with GET /node_api/modules (or --desired FILE): pull, verify, restack."


def _modules(name: str) -> Callable[[], Loaded]:
    def load() -> Loaded:
        from powernode.cli.agent import modules as agent_modules  # noqa: PLC0415

        command: Loaded = getattr(agent_modules, name)
        return command

    return load


def _node(name: str) -> Callable[[], Loaded]:
    def load() -> Loaded:
        from powernode.cli.agent import node as agent_node  # noqa: PLC0415

        command: Loaded = getattr(agent_node, name)
        return command

    return load


# name -> (loader, one-line help)
COMMANDS: dict[str, tuple[Callable[[], Loaded], str]] = {  # each help: its command's own first line
    "attach": (
        _modules("attach"),
        "Verify REF's signature under the policy, pull it, attach it and restack the union.",
    ),
    "detach": (
        _modules("detach"),
        "Remove a module and restack the union (the others are verified again).",
    ),
    "update": (_modules("sync"), _SYNC),
    "sync": (_modules("sync"), _SYNC),
    "verify": (
        _node("verify"),
        "Verify signature and digests; the exit status is the verdict (0 good, 1 bad).",
    ),
    "version": (
        _node("version"),
        "Print the agent's version, git SHA, build date and Python version.",
    ),
    "exec": (
        _node("exec_script"),
        "Fetch a NodeScript, verify its signature, run it confined; exit with its exit code.",
    ),
    "volume-setup": (
        _node("volume_setup"),
        "Partition and format disks from a declared layout; idempotent, refuses foreign disks.",
    ),
    "init": (
        _node("init"),
        "Run a module's init action now (manifest init_actions); exit with its exit code.",
    ),
    "commit": (
        _node("commit"),
        "Build an instance-variety module's persistent changes as a new version (artifact dir).",
    ),
    "puppet": (
        _node("puppet"),
        "puppet apply a module's manifest; its report becomes fleet events (exit 1 if it failed).",
    ),
    "rotate": (
        _node("rotate"),
        "Rotate the node certificate now: new key, POST /node_api/certificates/rotate, install.",
    ),
}


def register(app: App) -> None:
    """Add the seed's top-level commands to the agent's app (lazily)."""
    for name, (target, help_text) in COMMANDS.items():
        app.add_lazy(name, target, help_text)
