"""The agent's view of itself: what ``status`` and ``introspect`` print.

Enrollment and the certificate's rotation state, the attached modules, the
event buffer's depth and (for ``introspect``) the identity cascade's
verdict, as JSON-ready data. Reading only: nothing here writes.
"""

from __future__ import annotations

from datetime import datetime

from powernode import __version__
from powernode.agent.certstore import CertInfo, CertStore
from powernode.agent.config import AgentConfig
from powernode.agent.identity.cascade import discover_identity
from powernode.agent.identity.config import IdentityConfig
from powernode.agent.identity.model import UnresolvableIdentityError
from powernode.agent.lifecycle import SystemClock
from powernode.agent.modules.state import StateFile
from powernode.agent.rotation import rotation_state
from powernode.agent.spool import read_depths
from powernode.errors import PowernodeError

# JSON as the view carries it (str keys; values JSON itself).
Json = dict[str, object]

__all__ = ["agent_view", "certificate_view", "discover"]


def discover(cfg: AgentConfig) -> Json:
    """The identity cascade's verdict as JSON-ready data (never raises)."""
    try:
        result = discover_identity(
            IdentityConfig(root=cfg.host_root, identity_file=cfg.state_dir / "identity.cfg")
        )
    except UnresolvableIdentityError as e:
        doc: Json = dict(e.to_dict())
        doc["identity"] = {"instance_id": ""}
        return doc
    except PowernodeError as e:
        return {"resolved": False, "identity": {"instance_id": ""}, "error": str(e)}
    return dict(result.to_dict())


def instance_hint(cfg: AgentConfig) -> str:
    """The discovered instance id, or "" when the cascade resolves none."""
    identity = discover(cfg).get("identity")
    hint = identity.get("instance_id") if isinstance(identity, dict) else None
    return str(hint or "")


def certificate_view(info: CertInfo, now: datetime, fraction: float, archived: list[str]) -> Json:
    """The certificate with where it stands in its rotation at ``now``."""
    state = rotation_state(info, now, fraction)
    return {
        **info.to_dict(),
        "rotate_after": state.rotate_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rotation_due": state.due,
        "expired": state.expired,
        "seconds_left": state.seconds_left,
        "archived": archived,
    }


def _modules(cfg: AgentConfig) -> Json:
    try:
        state = StateFile(cfg.modules_dir).load()
    except PowernodeError as e:
        return {"error": str(e)}
    return {
        name: {"digest": m.digest, "priority": m.priority, "version": m.version}
        for name, m in sorted(state.modules.items())
    }


def agent_view(cfg: AgentConfig, with_identity: bool) -> Json:
    """Everything ``status`` (and, with the identity, ``introspect``) shows."""
    store = CertStore(cfg.pki_dir)
    info = store.info()
    cert = (
        None
        if info is None
        else certificate_view(
            info,
            SystemClock().now(),
            cfg.rotate_at_fraction,
            [p.name for p in store.archived()],
        )
    )
    depths = read_depths(cfg.spool_file) or (0, 0)
    view: Json = {
        "agent_version": __version__,
        "platform_url": cfg.platform_url,
        "state_dir": str(cfg.state_dir),
        "enrolled": info is not None,
        "certificate": cert,
        "modules": _modules(cfg),
        "buffer": {"events": depths[0], "outcomes": depths[1]},
    }
    if with_identity:
        view["identity"] = discover(cfg)
    return view
