"""``powernode-agent boot``: the first thing the agent does after the initramfs's switch_root.

Seed 002's pipeline ends here: the initramfs (90powernode) claimed the
identity, composed the root from verified modules and left what it did in
``/run/powernode`` (``identity``: ``instance_id=`` and ``source=``; ``boot.set``:
the module set it mounted) and the seed bundle at ``/etc/powernode/seed``
(``seed.json``, ``bootstrap-token``, ``platform-ca.pem``). :func:`first_boot`

1. takes the identity as the initramfs claimed it (the agent does not run the
   cascade again: the root was composed for that instance);
2. enrolls with the seed's single-use bootstrap token when this node holds no
   certificate yet (the persist partition keeps it across reboots), naming
   the claimed identity in the CSR; a refusal (a used token, a token from
   another platform or for another instance) is printed on the console, and
   the platform records it as ``instance.enroll_refused``;
3. verifies that the union on ``/`` is ours and that every module of
   ``boot.set`` is in the store, and records that set as attached and mounted
   (generation 1), so the first heartbeat reports it
   (``running_module_digests``);

then the CLI hands over to ``service``. Every step prints one line on the
console, ``powernode-agent boot: …``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from powernode.agent.certstore import CertStore
from powernode.agent.config import HOST_PORT, AgentConfig
from powernode.agent.enroll import enroll
from powernode.agent.lifecycle import SystemClock
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.state import ModuleSpec
from powernode.agent.modules.union import serving_union
from powernode.agent.transport import (
    NodeClient,
    PlatformRefused,
    PlatformUntrusted,
    tls_context,
)
from powernode.errors import ConfigError, DataError, PowernodeError

CLAIM_DIR = Path("/run/powernode")
SEED_DIR = Path("/etc/powernode/seed")
SEED_FORMAT = "powernode-seed/1"
GENERATION = 1  # the union the initramfs mounts (bootlayout.BootLayout.generation)
MAX_FILE = 1 << 16
BOOT_REFUSED = 3  # the exit status: init scripts and the unit do not restart it
INIT_DIR = Path(__file__).parent / "init"  # inittab, rc.sysinit, agent-run, the unit

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REGISTRY_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")  # scheme, host[:port], no path
_SET_LINE = re.compile(r"^(-?[0-9]+) ([A-Za-z0-9][A-Za-z0-9._-]*) ([0-9a-f]{64})$")

Say = Callable[[str], None]


class BootError(PowernodeError):
    """The first boot cannot go on; the message says why (it is printed on the console)."""


@dataclass(frozen=True)
class Claim:
    instance_id: str
    source: str


@dataclass(frozen=True)
class Seed:
    instance_id: str
    platform_url: str
    token_file: Path
    ca_file: Path | None
    modules_registry: str = ""  # http(s)://host[:port]: where this node pulls modules
    modules_registry_name: str = ""  # host[:port]: the registry's name in signatures


@dataclass(frozen=True)
class BootReport:
    instance_id: str
    source: str
    enrolled: str  # "now", "already"
    platform_url: str  # the config's, else the seed bundle's: what service talks to
    modules: dict[str, str]  # name -> sha256:<hex>, as mounted
    modules_registry: str = ""  # the config's, else the seed bundle's (with its name)
    modules_registry_name: str = ""


def _read(path: Path, what: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise BootError(f"{what}: {path} is missing") from None
    except OSError as e:
        raise BootError(f"{what}: {path}: {e.strerror}") from e
    if len(data) > MAX_FILE:
        raise BootError(f"{what}: {path} is larger than {MAX_FILE} bytes")
    return data.decode("utf-8", "replace")


def read_claim(claim_dir: Path) -> Claim:
    """``instance_id=`` and ``source=`` as 90powernode wrote them."""
    fields: dict[str, str] = {}
    for line in _read(claim_dir / "identity", "claimed identity").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    iid = fields.get("instance_id", "").lower()
    if not _UUID.match(iid):
        raise BootError(
            f"claimed identity: {claim_dir / 'identity'} names no instance UUID "
            f"({fields.get('instance_id', '')!r})"
        )
    return Claim(iid, fields.get("source", "?"))


def read_boot_set(path: Path) -> dict[str, ModuleSpec]:
    """``modules.set`` (``<priority> <name> <hex>`` a line, ``#`` comments) as ModuleSpecs."""
    out: dict[str, ModuleSpec] = {}
    for n, line in enumerate(_read(path, "mounted module set").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _SET_LINE.match(line.strip())
        if m is None:
            raise BootError(f"mounted module set: {path}:{n}: not '<priority> <name> <hex>'")
        name = m.group(2)
        if name in out:
            raise BootError(f"mounted module set: {path}:{n}: module {name} twice")
        out[name] = ModuleSpec(name, "sha256:" + m.group(3), int(m.group(1)))
    if not out:
        raise BootError(f"mounted module set: {path} names no module")
    return out


def read_seed(seed_dir: Path) -> Seed:
    try:
        doc = json.loads(_read(seed_dir / "seed.json", "seed bundle"))
    except json.JSONDecodeError as e:
        raise BootError(f"seed bundle: {seed_dir / 'seed.json'} is not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != SEED_FORMAT:
        raise BootError(f"seed bundle: {seed_dir / 'seed.json'} is not {SEED_FORMAT}")
    iid, url = doc.get("instance_id"), doc.get("platform_url")
    if not isinstance(iid, str) or not isinstance(url, str) or not url:
        raise BootError(f"seed bundle: {seed_dir / 'seed.json'} lacks instance_id or platform_url")
    registry = doc.get("modules_registry", "")
    if not isinstance(registry, str) or (registry and not _REGISTRY_URL.match(registry)):
        raise BootError(
            f"seed bundle: {seed_dir / 'seed.json'}: modules_registry {registry!r} is not "
            "http(s)://host[:port]"
        )
    name = doc.get("modules_registry_name", "")
    if not isinstance(name, str) or (name and not (registry and HOST_PORT.match(name))):
        raise BootError(
            f"seed bundle: {seed_dir / 'seed.json'}: modules_registry_name {name!r} is not "
            "host[:port] beside a modules_registry"
        )
    ca = seed_dir / "platform-ca.pem"
    return Seed(
        iid.lower(),
        url,
        seed_dir / "bootstrap-token",
        ca if ca.is_file() else None,
        registry,
        name,
    )


def _enroll(cfg: AgentConfig, claim: Claim, seed_dir: Path, say: Say) -> str:
    store = CertStore(cfg.pki_dir)
    if store.is_enrolled():
        info = store.info()
        who = info.instance_id if info else "?"
        if who != claim.instance_id:
            raise BootError(
                f"this node holds a certificate for instance {who}, but the initramfs claimed "
                f"{claim.instance_id}: the persist partition belongs to another instance"
            )
        say(f"enrolled already as {who} (certificate on the persist partition)")
        return "already"
    seed = read_seed(seed_dir)
    if seed.instance_id != claim.instance_id:
        # Tried anyway: the platform decides, and records the refusal for its operator.
        say(
            f"the seed bundle is for instance {seed.instance_id}, this node claimed "
            f"{claim.instance_id}: a foreign seed"
        )
    ca_file = cfg.platform_ca_file or seed.ca_file
    if ca_file is None:
        raise BootError("no platform CA: neither the agent config nor the seed bundle has one")
    token = _read(seed.token_file, "bootstrap token").strip()
    url = cfg.platform_url or seed.platform_url
    clock = SystemClock()
    try:
        with NodeClient(url, tls=tls_context(ca_file), clock=clock) as client:
            info = enroll(
                store,
                client,
                token,
                platform_ca_pem=ca_file.read_bytes(),
                now=clock.now(),
                instance_hint=claim.instance_id,
            )
    except (PlatformRefused, PlatformUntrusted) as e:
        # 4xx or a platform that is not ours: a retry cannot change the answer. Unreachable
        # (PlatformUnreachable) is not caught: the caller exits 1 and is restarted.
        raise BootError(f"enrollment refused: {e}") from e
    say(f"enrolled as instance {info.instance_id} with the seed bundle's bootstrap token")
    return "now"


def record_mounted(layout: NodeLayout, mounted: dict[str, ModuleSpec]) -> None:
    """The set the initramfs mounted, as the agent's attach state (generation 1)."""
    if not serving_union(layout):
        raise BootError(f"{layout.root} is not a powernode union: the initramfs composed nothing")
    missing = [n for n, m in sorted(mounted.items()) if not layout.store.has_image(m.composefs)]
    if missing:
        raise BootError(f"mounted modules missing from the store: {', '.join(missing)}")
    state_file = layout.state_file
    with state_file.locked():
        try:
            state = state_file.load()
        except DataError as e:
            raise BootError(f"the agent's state: {e}") from e
        top_first = sorted(mounted.values(), key=lambda m: (-m.priority, m.name))
        state_file.save(
            replace(
                state,
                modules=dict(mounted),
                generation=GENERATION,
                mounted=tuple(m.hex for m in top_first),
            )
        )


def first_boot(
    cfg: AgentConfig,
    layout: NodeLayout,
    say: Say,
    *,
    claim_dir: Path = CLAIM_DIR,
    seed_dir: Path = SEED_DIR,
) -> BootReport:
    """Identity, enrollment, the mounted set recorded; BootError says what stopped it."""
    try:
        claim = read_claim(claim_dir)
        say(f"identity {claim.instance_id} (claimed by the initramfs from {claim.source})")
        enrolled = _enroll(cfg, claim, seed_dir, say)
        mounted = read_boot_set(claim_dir / "boot.set")
        record_mounted(layout, mounted)
    except ConfigError as e:
        raise BootError(str(e)) from e
    say("root verified: " + " ".join(f"{n}@{m.hex[:12]}" for n, m in sorted(mounted.items())))
    url, registry, name = cfg.platform_url, cfg.modules_registry, cfg.modules_registry_name
    if not (url and registry) and (seed_dir / "seed.json").is_file():
        seed = read_seed(seed_dir)
        url = url or seed.platform_url
        if not registry:
            registry, name = seed.modules_registry, seed.modules_registry_name
            if registry:
                named = f", signed as {name}" if name else ""
                say(f"modules from {registry}{named} (the seed bundle's registry)")
    return BootReport(
        claim.instance_id,
        claim.source,
        enrolled,
        url,
        {n: m.digest for n, m in mounted.items()},
        registry,
        name,
    )
