"""Node identity discovery: which NodeInstance this machine is.

The cascade of seed 000 (kernel cmdline, QEMU fw-cfg, cloud metadata, DMI,
local identity.cfg); see docs/identity.md. Public API::

    result = discover_identity(IdentityConfig())      # or raises UnresolvableIdentityError
    result.identity.instance_id, result.identity.source, result.trail
    result.to_dict()                                  # for `introspect --json`
"""

from powernode.agent.identity.cascade import SOURCES, discover_identity
from powernode.agent.identity.config import (
    DEFAULT_SOURCES,
    CommandResult,
    CommandRunner,
    IdentityConfig,
)
from powernode.agent.identity.local import (
    IdentityFileError,
    parse_identity_cfg,
    write_identity_file,
)
from powernode.agent.identity.model import (
    Attempt,
    Identity,
    IdentityError,
    IdentityResult,
    IdentityTrail,
    Outcome,
    UnresolvableIdentityError,
)

__all__ = [
    "DEFAULT_SOURCES",
    "SOURCES",
    "Attempt",
    "CommandResult",
    "CommandRunner",
    "Identity",
    "IdentityConfig",
    "IdentityError",
    "IdentityFileError",
    "IdentityResult",
    "IdentityTrail",
    "Outcome",
    "UnresolvableIdentityError",
    "discover_identity",
    "parse_identity_cfg",
    "write_identity_file",
]
