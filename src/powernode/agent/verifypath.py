"""``powernode-agent verify <path>``: signature and digests, the exit status the verdict.

- ``oci:DIR:TAG`` (an OCI image layout, as ``module push oci:…`` writes it):
  the signature under the trust policy (``--policy``), then the content it
  covers (manifest, config, the composefs image's digest), with
  :func:`powernode.publish.verify_artifact` — what the agent checks before a pull.
- an artifact directory, a store image, the node root, a mounted module
  layer, or an attached module's name: every object re-hashed and the image
  against its composefs digest (:mod:`powernode.agent.modules.verify`).
  Those files carry no signature of their own: the signature belongs to the
  registry artifact and was checked before the pull; the verdict says so.

A bad signature, a tampered object or a wrong digest is a verdict (exit 1),
not an error; a target that names nothing verifiable is an error (exit 1,
``error: …``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from powernode.agent.modules.layout import NodeLayout
from powernode.errors import ConfigError, PowernodeError, VerificationError


@dataclass(frozen=True)
class PathVerdict:
    target: str
    kind: str  # oci | artifact | image | union | module
    ok: bool
    signature: str  # what was found about the signature
    modules: tuple[tuple[str, str], ...] = ()
    objects: int = 0
    problems: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "kind": self.kind,
            "ok": self.ok,
            "signature": self.signature,
            "modules": [{"name": n, "digest": d} for n, d in self.modules],
            "objects": self.objects,
            "problems": list(self.problems),
        }

    def lines(self) -> list[str]:
        out = [f"ok {n} {d}" for n, d in self.modules]
        out += [f"BAD {p}" for p in self.problems]
        out.append(f"signature: {self.signature}")
        out.append(
            f"{'verified' if self.ok else 'FAILED'}: {len(self.modules)} module(s), "
            f"{self.objects} objects re-hashed"
        )
        return out


def verify_target(target: str | None, layout: NodeLayout, policy: Path | None) -> PathVerdict:
    if target is not None and target.startswith("oci:"):
        return _verify_oci(target, policy)
    from powernode.agent.modules.verify import verify_attached, verify_path  # noqa: PLC0415

    if policy is not None:
        raise ConfigError(
            "--policy applies to an oci: target; files on disk carry no signature "
            "(the agent checks the registry artifact's before it pulls)"
        )
    if target is not None and ("/" in target or target.startswith(".")):
        v = verify_path(Path(target), layout)
    else:
        v = verify_attached(layout, target)
    return PathVerdict(
        v.path,
        v.kind,
        v.ok,
        v.signature,
        tuple(v.modules),
        v.objects,
        tuple(str(r) for r in v.refusals),
    )


def _verify_oci(target: str, policy_file: Path | None) -> PathVerdict:
    from powernode.agent.modules.trust import load_policy_file  # noqa: PLC0415
    from powernode.publish import verify_artifact  # noqa: PLC0415
    from powernode.publish.target import open_target  # noqa: PLC0415

    if policy_file is None:
        raise ConfigError(f"{target}: pass --policy FILE (cosign.pub or a JSON trust policy)")
    policy = load_policy_file(policy_file)
    registry, ref = open_target(target)
    try:
        done = verify_artifact(registry, ref, policy)
    except VerificationError as e:
        return PathVerdict(target, "oci", False, f"REFUSED: {e}", problems=(str(e),))
    except PowernodeError as e:
        if "signature" in str(e).lower():
            return PathVerdict(target, "oci", False, f"REFUSED: {e}", problems=(str(e),))
        raise
    finally:
        close = getattr(registry, "close", None)
        if close is not None:
            close()
    return PathVerdict(
        target,
        "oci",
        True,
        f"signed by {done.signer}",
        ((done.name, str(done.composefs_digest)),),
        len(done.file_list),
    )
