"""Rollout policies: checked, and resolved into waves of instances (services/rollouts.py).

The policy's form is in the rollouts module's docstring and docs/rollouts.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sqlalchemy import select

from powernode.platform.db import (
    InstanceStatus,
    Node,
    NodeInstance,
    NodeModuleAssignment,
)
from powernode.platform.problems import ConflictError, InvalidInputError
from powernode.platform.services.context import Ctx


class PolicyMismatchError(ConflictError):
    """A well-formed policy that does not fit: percentages, waves selecting nothing."""

    slug = "rollout-policy"
    title = "Rollout policy does not fit the fleet"


ENDED: Final = frozenset({InstanceStatus.TERMINATED.value, InstanceStatus.FAILED.value})
POLICY_KEYS: Final = frozenset(
    {"waves", "pause_seconds", "soak_seconds", "deadline_seconds", "max_converging", "max_failed"}
)
MAX_WAVES = 100


# Seconds and counts above these are typing mistakes (and would overflow a timedelta).
MAX_SECONDS: Final = 30 * 24 * 3600
MAX_COUNT: Final = 1_000_000


def _int(
    policy: Mapping[str, object], key: str, default: int | None, low: int, high: int
) -> int | None:
    value = policy.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInputError(
            f"policy.{key} must be an integer >= {low} and <= {high}, got {value!r}",
            field=f"policy.{key}",
        )
    return value


def validate_policy(policy: Mapping[str, object]) -> dict[str, object]:
    """The policy with defaults filled in, or InvalidInputError saying what is wrong."""
    unknown = sorted(set(policy) - POLICY_KEYS)
    if unknown:
        raise InvalidInputError(
            f"policy has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(POLICY_KEYS))}",
            field="policy",
        )
    waves = policy.get("waves")
    if not isinstance(waves, list) or not waves or len(waves) > MAX_WAVES:
        raise InvalidInputError(
            f"policy.waves must be a list of 1 to {MAX_WAVES} waves", field="policy.waves"
        )
    percents = 0
    seen_percent = False
    for i, wave in enumerate(waves, 1):
        where = f"policy.waves[{i}]"
        if not isinstance(wave, dict) or len(wave) != 1:
            raise InvalidInputError(
                f"{where} must be one of {{percent: N}}, {{labels: {{k: v}}}}, "
                "{instances: [ids]}",
                field=where,
            )
        ((kind, value),) = wave.items()
        if kind == "percent":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 100:
                raise InvalidInputError(
                    f"{where}.percent must be 1..100, got {value!r}", field=where
                )
            percents += value
            seen_percent = True
        elif kind == "labels":
            if not isinstance(value, dict) or not value:
                raise InvalidInputError(f"{where}.labels must be a non-empty mapping", field=where)
        elif kind == "instances":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(x, str) for x in value)
            ):
                raise InvalidInputError(
                    f"{where}.instances must be a non-empty list of instance ids (empty wave)",
                    field=where,
                )
        else:
            raise InvalidInputError(
                f"{where}: unknown selector {kind!r}; use percent, labels or instances", field=where
            )
    if seen_percent and percents != 100:
        raise PolicyMismatchError(
            f"policy.waves percentages sum to {percents}, not 100", field="policy.waves"
        )
    return {
        "waves": waves,
        "pause_seconds": _int(policy, "pause_seconds", 0, 0, MAX_SECONDS),
        "soak_seconds": _int(policy, "soak_seconds", 0, 0, MAX_SECONDS),
        "deadline_seconds": _int(policy, "deadline_seconds", 600, 1, MAX_SECONDS),
        "max_converging": _int(policy, "max_converging", None, 1, MAX_COUNT),
        "max_failed": _int(policy, "max_failed", 0, 0, MAX_COUNT),
    }


def candidates(ctx: Ctx, module_id: str | None, template_id: str | None) -> list[NodeInstance]:
    """Live instances whose template has the module assigned (``module_id`` None: any
    template), of one template when ``template_id`` is given; in id order."""
    q = (
        select(NodeInstance)
        .join(NodeInstance.node)
        .where(Node.account == ctx.actor.account, NodeInstance.status.not_in(ENDED))
        .order_by(NodeInstance.id)
    )
    if module_id is not None:
        q = q.join(
            NodeModuleAssignment, NodeModuleAssignment.template_id == NodeInstance.template_id
        ).where(NodeModuleAssignment.module_id == module_id)
    if template_id is not None:
        q = q.where(NodeInstance.template_id == template_id)
    return list(ctx.session.scalars(q).unique())


def resolve_waves(policy: Mapping[str, object], instances: list[NodeInstance]) -> list[list[str]]:
    """Each wave's instance ids; PolicyMismatchError (409) for a wave that selects nothing."""
    waves = policy["waves"]
    assert isinstance(waves, list)
    known = {i.id: i for i in instances}
    taken: set[str] = set()
    out: list[list[str]] = [[] for _ in waves]
    for n, wave in enumerate(waves):
        if "instances" in wave:
            for iid in wave["instances"]:
                if iid not in known:
                    raise PolicyMismatchError(
                        f"policy.waves[{n + 1}]: instance {iid} does not run a template "
                        "with this module assigned",
                        field=f"policy.waves[{n + 1}]",
                    )
                if iid not in taken:
                    out[n].append(iid)
                    taken.add(iid)
        elif "labels" in wave:
            want = wave["labels"]
            for i in instances:
                meta = i.node.node_metadata or {}
                if i.id not in taken and all(meta.get(k) == v for k, v in want.items()):
                    out[n].append(i.id)
                    taken.add(i.id)
    rest = [i.id for i in instances if i.id not in taken]
    cumulative, start = 0, 0
    for n, wave in enumerate(waves):
        if "percent" in wave:
            cumulative += wave["percent"]
            end = round(len(rest) * cumulative / 100)
            out[n] = rest[start:end]
            start = end
    for n, ids in enumerate(out):
        if not ids:
            raise PolicyMismatchError(
                f"policy.waves[{n + 1}] selects no instance (empty wave); "
                f"{len(instances)} instance(s) run this module's templates",
                field=f"policy.waves[{n + 1}]",
            )
    return out
