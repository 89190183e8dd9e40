"""Promotion policies: one document per module or category (supply/policy.py validates it).

The module's own policy replaces its category's; none means every promotion
passes (services/evidence.py evaluates it).
"""

from __future__ import annotations

from sqlalchemy import select

from powernode.platform.db import NodeModule, NodeModuleCategory, PromotionPolicy
from powernode.platform.problems import InvalidInputError, NotFoundError
from powernode.platform.services import audit
from powernode.platform.services.catalog import get_module
from powernode.platform.services.context import WRITE, Ctx
from powernode.supply import policy as pol


def _scope_row(ctx: Ctx, scope: str, name: str) -> tuple[str, str]:
    if scope == "module":
        return get_module(ctx, name).id, f"module {name}"
    if scope == "category":
        cat = ctx.session.scalar(select(NodeModuleCategory).where(NodeModuleCategory.slug == name))
        if cat is None:
            raise NotFoundError(f"category {name!r} not found")
        return cat.id, f"category {name}"
    raise InvalidInputError(f"scope {scope!r} is not module or category", field="scope")


def set_policy(ctx: Ctx, scope: str, name: str, document: object) -> dict[str, object]:
    """Store (replace) the policy of a module or category; 422 with the field if invalid."""
    ctx.actor.require(WRITE, "setting a promotion policy")
    scope_id, label = _scope_row(ctx, scope, name)
    try:
        parsed = pol.load(document)
    except pol.PolicyError as e:
        raise InvalidInputError(str(e), field="policy") from None
    doc = parsed.model_dump(exclude_none=True)
    row = ctx.session.scalar(
        select(PromotionPolicy).where(
            PromotionPolicy.scope == scope, PromotionPolicy.scope_id == scope_id
        )
    )
    if row is None:
        row = PromotionPolicy(scope=scope, scope_id=scope_id, document=doc)
        ctx.session.add(row)
    row.document, row.updated_by, row.updated_at = doc, ctx.actor.name, ctx.now
    audit.record(
        ctx,
        action="promotion_policy.set",
        target_type=scope,
        target_id=scope_id,
        summary=f"promotion policy of {label} set",
        detail={"policy": doc},
    )
    return {"scope": scope, "name": name, "policy": doc}


def get_policy(ctx: Ctx, scope: str, name: str) -> dict[str, object] | None:
    scope_id, _ = _scope_row(ctx, scope, name)
    row = ctx.session.scalar(
        select(PromotionPolicy).where(
            PromotionPolicy.scope == scope, PromotionPolicy.scope_id == scope_id
        )
    )
    return None if row is None else {"scope": scope, "name": name, "policy": row.document}


def policy_for(ctx: Ctx, module: NodeModule) -> tuple[pol.Policy | None, str | None]:
    """The module's own policy, else its category's, else none (everything passes)."""
    for scope, scope_id, label in (
        ("module", module.id, f"module {module.name}"),
        ("category", module.category_id, f"category {module.category.slug}"),
    ):
        row = ctx.session.scalar(
            select(PromotionPolicy).where(
                PromotionPolicy.scope == scope, PromotionPolicy.scope_id == scope_id
            )
        )
        if row is not None:
            return pol.load(row.document), label
    return None, None
