"""The node's part of the demo (phase 2, root only): enroll, sync, mount, report.

Seed 004's "instance reaches running and the module appears in
running_module_digests", done by the agent's own code on this machine:

* enrollment is ``powernode-agent enroll`` (a child process) with a
  bootstrap token the operator created, pinned to the platform CA;
* module sync is the agent's ``powernode.agent.modules.sync`` with the
  desired set from ``GET /node_api/modules`` over mTLS with the enrolled
  certificate; the puller reads the platform's OCI layout directly
  (``PublishPuller(registry=…)``: the agent's ``modules_registry`` setting
  names http(s) registries only) and checks each signature against the
  module's trust policy from the platform before pulling;
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from powernode.agent.modules import (
    DesiredModule,
    NodeLayout,
    PublishPuller,
    SyncReport,
    running_module_digests,
    sync,
    teardown,
)
from powernode.agent.modules.desired import parse_desired
from powernode.agent.modules.trust import PolicyReader
from powernode.agent.runtime import HostFacts
from powernode.agent.transport import NodeClient, tls_context
from powernode.core.composition import Composition
from powernode.errors import MountError, PowernodeError, VerificationError
from powernode.oci.registry import open_registry
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
    """One enrolled node: its layout (root, state), client and puller."""

    layout: NodeLayout
    client: NodeClient
    puller: PublishPuller
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
    ) -> tuple[DemoNode, dict[str, Any]]:
        """``powernode-agent enroll`` into ``<node_dir>/state``; the node and the enroll answer."""
        state, root = node_dir / "state", node_dir / "root"
        for d in (state, root):
            d.mkdir(parents=True, exist_ok=True)
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
            "--state-dir",
            state,
            "--platform-url",
            url,
            "--no-discover",
            "--json",
        )
        try:
            proc = run(argv, timeout=120)
        finally:
            token_file.unlink()  # single use: spent or refused, no reason to keep the secret
        info: dict[str, Any] = json.loads(proc.stdout)
        pki = state / "pki"
        client = NodeClient(url, tls=tls_context(platform_ca, pki / "cert.pem", pki / "key.pem"))
        layout = NodeLayout(root=root.absolute(), state=state.absolute())
        puller = PublishPuller(
            registry=open_registry(registry_dir),
            policies=PolicyReader(None, lambda: datetime.now(UTC)),
        )
        return cls(layout, client, puller), info

    def desired(self) -> tuple[tuple[DesiredModule, ...], Composition | None]:
        """``GET /node_api/modules`` parsed by the agent's parser."""
        desired = parse_desired(self.client.modules())
        return desired.modules, desired.composition

    def sync(self) -> SyncReport:
        """One reconcile; a refusal raises (the demo's artifacts must all verify)."""
        modules, composition = self.desired()
        report = sync(self.layout, modules, puller=self.puller, composition=composition)
        if report.refusals:
            reasons = "; ".join(f"{r.module}: {r.reason}: {r.detail}" for r in report.refusals)
            raise VerificationError(f"the agent refused to mount: {reasons}")
        self.composition = composition
        return report

    def heartbeat(self) -> dict[str, str]:
        """Post the agent's heartbeat facts; the running digests it reported."""
        facts = HostFacts(Path("/"), self.layout.agent_dir, self.layout)()
        self.client.heartbeat(facts)
        digests: dict[str, str] = facts["running_module_digests"]
        return digests

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
