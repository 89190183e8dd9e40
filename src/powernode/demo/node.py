"""The node's part of the demo (phase 2, root only): enroll, sync, mount, report.

Seed 004's "instance reaches running and the module appears in
running_module_digests", done by the agent's own code on this machine:

* enrollment is ``powernode-agent enroll`` (a child process) with a
  bootstrap token the operator created, pinned to the platform CA;
* module sync is ``powernode-agent modules sync`` (a child process, the
  command an operator runs, with the service loop's puller) under an agent
  config written into the node dir: the desired set comes from
  ``GET /node_api/modules`` over mTLS with the enrolled certificate, and the
  modules from the platform's OCI layout directory
  (``modules_registry = "oci:<registry dir>"``), each signature checked
  against the module's trust policy from the platform before the pull;
* the union is mounted on ``<node>/root`` (``NodeLayout.root``), the store and
  agent state are ``<node>/state``;
* the heartbeat body is the agent's ``HostFacts`` (running digests of the
  union being served) posted with ``NodeClient.heartbeat``.

:meth:`DemoNode.teardown` takes the union and the run tmpfs down (the agent's
``teardown``), then unmounts anything still mounted under the node dir, so
the demo dir can be removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from powernode.agent.modules import (
    Action,
    NodeLayout,
    Refusal,
    SyncReport,
    running_module_digests,
    teardown,
)
from powernode.agent.modules.state import load_composition
from powernode.agent.runtime import HostFacts
from powernode.agent.transport import NodeClient, tls_context
from powernode.client import JsonObject
from powernode.core.composition import Composition
from powernode.errors import CommandError, MountError, PowernodeError, VerificationError
from powernode.run import run

log = logging.getLogger(__name__)

AGENT = ("-c", "from powernode.cli.agent import main; main()")
MAX_READ = 4096


def agent_argv(python: str, *args: str | Path) -> list[str]:
    """``powernode-agent args…`` with this interpreter."""
    return [python, *AGENT, *(str(a) for a in args)]


@dataclass(frozen=True)
class UnionFile:
    path: str
    winner: str
    first_line: str


@dataclass
class DemoNode:
    """One enrolled node: its layout (root, state), client and agent config file."""

    layout: NodeLayout
    client: NodeClient
    config: Path  # the agent's config: platform, state dir, union root, module source
    python: str
    composition: Composition | None = None

    @classmethod
    def enroll(
        cls,
        node_dir: Path,
        *,
        python: str,
        url: str,
        platform_ca: Path,
        bootstrap_token: str,
        registry_dir: Path,
    ) -> tuple[DemoNode, JsonObject]:
        """``powernode-agent enroll`` into ``<node_dir>/state``; the node and the enroll answer."""
        state, root = node_dir / "state", node_dir / "root"
        for d in (state, root):
            d.mkdir(parents=True, exist_ok=True)
        config = write_agent_config(node_dir / "agent.toml", url, state, root, registry_dir)
        token_file = node_dir / "bootstrap-token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(bootstrap_token)
        argv = agent_argv(
            python,
            "enroll",
            "--token-file",
            token_file,
            "--platform-ca",
            platform_ca,
            "--config",
            config,
            "--no-discover",
            "--json",
        )
        try:
            proc = run(argv, timeout=120)
        finally:
            token_file.unlink()  # single use: spent or refused, no reason to keep the secret
        info: JsonObject = json.loads(proc.stdout)
        pki = state / "pki"
        client = NodeClient(url, tls=tls_context(platform_ca, pki / "cert.pem", pki / "key.pem"))
        layout = NodeLayout(root=root.absolute(), state=state.absolute())
        return cls(layout, client, config, python), info

    def sync_argv(self) -> list[str]:
        return agent_argv(self.python, "modules", "sync", "--config", self.config, "--json")

    def sync(self) -> SyncReport:
        """``powernode-agent modules sync``; a refusal raises (the demo's artifacts must verify)."""
        proc = run(self.sync_argv(), check=False, timeout=300)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):  # no report: bad config, platform unreachable, a crash
            raise CommandError(self.sync_argv(), proc.returncode, proc.stderr.decode())
        report = SyncReport(
            tuple(Action(**a) for a in doc["actions"]),
            bool(doc["changed"]),
            int(doc["generation"]),
            tuple(Refusal.from_dict(r) for r in doc["refusals"]),
        )
        if report.refusals:
            reasons = "; ".join(f"{r.module}: {r.reason}: {r.detail}" for r in report.refusals)
            raise VerificationError(f"the agent refused to mount: {reasons}")
        self.composition = load_composition(self.layout.agent_dir)
        return report

    def heartbeat(self) -> dict[str, str]:
        """Post the agent's heartbeat facts; the running digests it reported."""
        facts = HostFacts(Path("/"), self.layout.agent_dir, self.layout)()
        self.client.heartbeat(facts)
        return {name: str(d) for name, d in facts.running_module_digests.items()}

    def running(self) -> dict[str, str]:
        return running_module_digests(self.layout)

    def read(self, paths: list[str]) -> list[UnionFile]:
        """Read ``paths`` through the mounted union; the composition names each winner."""
        winners: dict[str, str] = {}
        if self.composition is not None:
            winners = {e.path: e.winner or "" for e in self.composition.union}
        out = []
        for p in paths:
            target = self.layout.root / p.lstrip("/")
            try:
                with target.open("rb") as f:
                    data = f.read(MAX_READ)
            except OSError as e:
                raise MountError(f"{target}: cannot read through the union: {e.strerror}") from e
            line = next((ln for ln in data.decode(errors="replace").splitlines() if ln), "")
            out.append(UnionFile(p, winners.get(p, "?"), line[:70]))
        return out

    def teardown(self) -> None:
        """Unmount the union and the run tmpfs; then anything else left under the node dir."""
        self.client.close()
        try:
            teardown(self.layout)
        except PowernodeError as e:
            log.warning("agent teardown: %s; unmounting what is left", e)
        sweep_mounts(self.layout.root.parent)


def write_agent_config(path: Path, url: str, state: Path, root: Path, registry: Path) -> Path:
    """The agent's config for the demo node (TOML; JSON strings are TOML basic strings)."""
    settings = {
        "platform_url": url,
        "state_dir": str(state.absolute()),
        "modules_root": str(root.absolute()),
        "modules_registry": f"oci:{registry.absolute()}",
    }
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path.write_text(text, encoding="utf-8")
    return path


def mounts_under(directory: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Mount points at or under ``directory``, deepest first (mountinfo(5) field 5)."""
    base = str(directory.absolute())
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
            if point == base or point.startswith(base + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def sweep_mounts(directory: Path) -> None:
    """Lazily unmount every mount under ``directory`` (bounded: mountinfo is finite)."""
    from powernode.mount.kernel import umount  # noqa: PLC0415 - root-only part

    for _ in range(8):  # stacked mounts on one point need a round each
        points = mounts_under(directory)
        if not points:
            return
        for point in points:
            with contextlib.suppress(PowernodeError, OSError):
                umount(point, detach=True)
    left = mounts_under(directory)
    if left:
        raise MountError(f"still mounted after clean-up: {', '.join(map(str, left))}")
