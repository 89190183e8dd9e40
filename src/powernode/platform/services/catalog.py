"""The module catalog: categories, modules (with trust policy) and their versions."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import ColumnElement, CursorResult, Exists, delete, exists, func, select

from powernode.core.manifest import glob_problems
from powernode.core.priority import Variety
from powernode.core.semver import Version
from powernode.errors import VersionError
from powernode.platform.db import (
    NodeModule,
    NodeModuleAssignment,
    NodeModuleCategory,
    NodeModuleVersion,
    NodeTemplate,
    PromotionState,
)
from powernode.platform.db.base import Base
from powernode.platform.problems import ConflictError, InvalidInputError, NotFoundError
from powernode.platform.sealing import Sealer
from powernode.platform.services import audit
from powernode.platform.services.context import PROMOTE_LIVE, WRITE, Ctx

log = logging.getLogger(__name__)

# Seed 003: names like "my-nginx", "k3s-server"; lower-case so that one name
# cannot appear twice in a listing under different cases.
MODULE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
MAX_REGEXP = 1024
MAX_FILE_LIST = 200_000


@dataclass(frozen=True)
class TrustPolicy:
    """Keyless (identity + issuer regexps) or a public key; all None = not yet set."""

    cosign_identity_regexp: str | None = None
    cosign_issuer_regexp: str | None = None
    cosign_public_key: str | None = None


def list_categories(ctx: Ctx) -> list[NodeModuleCategory]:
    q = select(NodeModuleCategory).order_by(NodeModuleCategory.position)
    return list(ctx.session.scalars(q))


def _category(ctx: Ctx, slug: str) -> NodeModuleCategory:
    cat = ctx.session.scalar(select(NodeModuleCategory).where(NodeModuleCategory.slug == slug))
    if cat is None:
        known = ", ".join(c.slug for c in list_categories(ctx))
        raise InvalidInputError(
            f"category_slug {slug!r} is not a category; known: {known}", field="category_slug"
        )
    return cat


def _check_policy(policy: TrustPolicy) -> None:
    for field in ("cosign_identity_regexp", "cosign_issuer_regexp"):
        value = getattr(policy, field)
        if value is None:
            continue
        if len(value) > MAX_REGEXP:
            raise InvalidInputError(f"{field} is longer than {MAX_REGEXP} characters", field=field)
        try:
            re.compile(value)
        except re.error as e:
            raise InvalidInputError(
                f"{field} {value!r} is not a valid regular expression: {e.msg} at position {e.pos}",
                field=field,
            ) from e
    if (policy.cosign_identity_regexp is None) != (policy.cosign_issuer_regexp is None):
        raise InvalidInputError(
            "keyless trust needs both cosign_identity_regexp and cosign_issuer_regexp "
            "(the certificate's subject and its OIDC issuer)",
            field="cosign_issuer_regexp"
            if policy.cosign_issuer_regexp is None
            else "cosign_identity_regexp",
        )
    if policy.cosign_public_key is not None:
        try:
            load_pem_public_key(policy.cosign_public_key.encode())
        except ValueError as e:
            raise InvalidInputError(
                "cosign_public_key is not a PEM public key (cosign.pub: "
                "'-----BEGIN PUBLIC KEY-----' ...)",
                field="cosign_public_key",
            ) from e


def create_module(
    ctx: Ctx,
    sealer: Sealer,
    *,
    name: str,
    category_slug: str,
    variety: str = Variety.SUBSCRIPTION.value,
    description: str = "",
    parent_module: str | None = None,
    policy: TrustPolicy | None = None,
    require_approval: bool = False,
    gitea_repo_full_name: str | None = None,
    github_repo_full_name: str | None = None,
) -> tuple[NodeModule, str]:
    """Register a module; returns it and its webhook secret (shown this once)."""
    ctx.actor.require(WRITE, "creating a module")
    policy = policy or TrustPolicy()
    if not MODULE_NAME.match(name):
        raise InvalidInputError(
            f"module name {name!r}: use 1-128 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    try:
        kind = Variety(variety)
    except ValueError:
        raise InvalidInputError(
            f"variety {variety!r}: choose subscription, config or instance", field="variety"
        ) from None
    category = _category(ctx, category_slug)
    parent: NodeModule | None = None
    if kind is Variety.CONFIG:
        if parent_module is None:
            raise InvalidInputError(
                "a config module overrides another module's config: give parent_module",
                field="parent_module",
            )
        parent = _find_module(ctx, parent_module)
        if parent is None:  # a reference to what is not there: 404, as in a path
            raise NotFoundError(
                f"parent_module {parent_module!r} is not a module; create it first",
                field="parent_module",
            )
    elif parent_module is not None:
        raise InvalidInputError(
            f"parent_module is only for config modules, not {kind.value}", field="parent_module"
        )
    _check_policy(policy)
    if _find_module(ctx, name) is not None:
        raise ConflictError(
            f"module {name!r} already exists; pick another name or delete it first",
            field="name",
        )
    module = NodeModule(
        account=ctx.actor.account,
        name=name,
        description=description,
        category=category,
        variety=kind.value,
        parent_module=parent,
        cosign_identity_regexp=policy.cosign_identity_regexp,
        cosign_issuer_regexp=policy.cosign_issuer_regexp,
        cosign_public_key=policy.cosign_public_key,
        require_approval=require_approval,
        gitea_repo_full_name=gitea_repo_full_name,
        github_repo_full_name=github_repo_full_name,
        webhook_secret_sealed="",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(module)
    ctx.session.flush()  # assigns the id the sealed secret is bound to
    secret = secrets.token_urlsafe(32)
    module.webhook_secret_sealed = sealer.seal(secret, module.id)
    audit.record(
        ctx,
        action="module.create",
        target_type="node_module",
        target_id=module.id,
        summary=f"created module {name} ({category.slug}, {kind.value})",
        detail={"name": name, "category_slug": category.slug, "variety": kind.value},
    )
    return module, secret


def _find_module(ctx: Ctx, name: str) -> NodeModule | None:
    q = select(NodeModule).where(NodeModule.account == ctx.actor.account, NodeModule.name == name)
    return ctx.session.scalar(q)


def get_module(ctx: Ctx, name: str) -> NodeModule:
    module = _find_module(ctx, name)
    if module is None:
        raise NotFoundError(
            f"module {name!r} not found; list modules with: powernode system list-modules",
            module_name=name,
        )
    return module


def list_modules(ctx: Ctx, *, category_slug: str | None = None) -> list[NodeModule]:
    q = select(NodeModule).where(NodeModule.account == ctx.actor.account)
    if category_slug is not None:
        q = q.join(NodeModule.category).where(NodeModuleCategory.slug == category_slug)
    return list(ctx.session.scalars(q.order_by(NodeModule.name)).unique())


class ModuleInUseError(ConflictError):
    """The module is live or assigned; deleting it would change what nodes run."""

    slug = "module-in-use"
    title = "Module is in use"


def delete_module(ctx: Ctx, name: str, *, force: bool = False) -> dict[str, int]:
    """Delete a module with its versions and assignments; returns what went with it.

    A module with a ``live`` version or a template assignment is held: deleting
    it would silently take it off every node that runs it (issue 13 item 8).
    That is refused with a 409 naming the live versions and the templates,
    unless ``force`` is given by a token with ``promote-live``, the scope that
    decides what the fleet runs.
    """
    ctx.actor.require(WRITE, "deleting a module")
    if force:
        ctx.actor.require(PROMOTE_LIVE, "deleting a module that is live or assigned (force)")
    module = get_module(ctx, name)
    children = ctx.session.scalars(
        select(NodeModule.name).where(NodeModule.parent_module_id == module.id)
    ).all()
    if children:
        raise ConflictError(
            f"module {name!r} is the parent of config module(s) {', '.join(sorted(children))}; "
            "delete those first",
            children=sorted(children),
        )
    # PostgreSQL: hold the module row, so an assignment (its foreign-key check
    # takes a KEY SHARE lock on this row) waits for this transaction, and one
    # committed before it is seen by the reads below. SQLite ignores FOR
    # UPDATE; there the guarded DELETE further down decides under the writer
    # lock.
    ctx.session.execute(select(NodeModule.id).where(NodeModule.id == module.id).with_for_update())
    live, templates = _holders(ctx, module.id)
    if (live or templates) and not force:
        raise _in_use(name, live, templates)
    n_versions = _count(ctx, NodeModuleVersion.module_id == module.id, NodeModuleVersion)
    n_assign = len(templates)
    audit.record(
        ctx,
        action="module.delete",
        target_type="node_module",
        target_id=module.id,
        summary=f"deleted module {name} with {n_versions} version(s), {n_assign} assignment(s)"
        + (" (forced)" if live or templates else ""),
        detail={
            "name": name,
            "versions": n_versions,
            "assignments": n_assign,
            "forced": bool(force and (live or templates)),
            "live_versions": live,
            "templates": templates,
        },
    )
    if force:
        ctx.session.delete(module)
        return {"versions": n_versions, "assignments": n_assign}
    # Not forced: delete only if still neither live nor assigned when the
    # DELETE runs (a compare-and-set on the module; the foreign keys cascade
    # to its versions and ingests).
    gone = ctx.session.execute(
        delete(NodeModule)
        .where(NodeModule.id == module.id, ~_assigned(module.id), ~_live(module.id))
        .execution_options(synchronize_session=False)
    )
    assert isinstance(gone, CursorResult)
    if gone.rowcount != 1:
        raise _in_use(name, *_holders(ctx, module.id))
    ctx.session.expunge(module)
    return {"versions": n_versions, "assignments": n_assign}


def _assigned(module_id: str) -> Exists:
    return exists().where(NodeModuleAssignment.module_id == module_id)


def _live(module_id: str) -> Exists:
    return exists().where(
        NodeModuleVersion.module_id == module_id,
        NodeModuleVersion.promotion_state == PromotionState.LIVE.value,
    )


def _holders(ctx: Ctx, module_id: str) -> tuple[list[str], list[str]]:
    """The module's live version strings and the names of the templates it is assigned to."""
    live = ctx.session.scalars(
        select(NodeModuleVersion.version_string).where(
            NodeModuleVersion.module_id == module_id,
            NodeModuleVersion.promotion_state == PromotionState.LIVE.value,
        )
    ).all()
    templates = ctx.session.scalars(
        select(NodeTemplate.name)
        .join(NodeModuleAssignment, NodeModuleAssignment.template_id == NodeTemplate.id)
        .where(NodeModuleAssignment.module_id == module_id)
    ).all()
    return sorted(live), sorted(templates)


def _in_use(name: str, live: list[str], templates: list[str]) -> ModuleInUseError:
    held = []
    if live:
        held.append(f"live version(s) {', '.join(live)}")
    if templates:
        held.append(f"assigned to template(s) {', '.join(templates)}")
    return ModuleInUseError(
        f"module {name!r} is in use: {'; '.join(held) or 'changed meanwhile'}. Retire or "
        "demote the live versions and unassign it first, or delete with force (needs the "
        f"promote-live scope): powernode system delete-module {name} --force",
        live_versions=live,
        templates=templates,
    )


def _count(ctx: Ctx, where: ColumnElement[bool], model: type[Base]) -> int:
    return ctx.session.scalar(select(func.count()).select_from(model).where(where)) or 0


def list_versions(ctx: Ctx, module_name: str) -> list[NodeModuleVersion]:
    module = get_module(ctx, module_name)
    q = select(NodeModuleVersion).where(NodeModuleVersion.module_id == module.id)
    rows = list(ctx.session.scalars(q))
    # Newest first by SemVer precedence; unparsable strings (never stored) last.
    return sorted(rows, key=lambda v: Version.parse(v.version_string), reverse=True)


def get_version(ctx: Ctx, version_id: str) -> NodeModuleVersion:
    version = ctx.session.get(NodeModuleVersion, version_id)
    if version is None or version.module.account != ctx.actor.account:
        raise NotFoundError(
            f"module version {version_id!r} not found; list versions with: "
            "powernode system list-module-versions MODULE",
            version_id=version_id,
        )
    return version


def _check_manifest_globs(manifest: dict[str, object]) -> None:
    """A pattern that can never match (``..``, ``.``, ``//``, NUL) is refused here too, as
    at validate and build: a registered version's rules are what nodes enforce."""
    problems = glob_problems(manifest, source="manifest")
    if problems:
        first = problems[0]
        raise InvalidInputError(
            "; ".join(f"manifest.{p.path} column {p.column}: {p.message}" for p in problems),
            field=f"manifest.{first.path}",
            column=first.column,
        )


@dataclass(frozen=True)
class VerifiedFields:
    """What only the platform's own ingest and verification may state about a version.

    Issue 13 item 2: a write token could register a version with another
    registry host as its reference and ``cosign_verified: true``. These fields
    are therefore not part of the operator API (``VersionCreate``); the one
    writer is :func:`record_ingested_version`, called by the ingest worker
    with what ``publish.verify_artifact`` returned.
    """

    composefs_digest: str
    artifact_ref: str
    fsverity_root_hash: str | None = None
    sbom_ref: str | None = None


def register_version(
    ctx: Ctx,
    module_name: str,
    *,
    version_string: str,
    manifest: dict[str, object] | None = None,
    file_list: list[str] | None = None,
) -> NodeModuleVersion:
    """Announce a version by hand (state ``built``): no artifact, digest or signature.

    Such a version can be previewed and promoted, but no node is served it
    until ingest has verified its artifact (the node API refuses a version
    without a composefs digest).
    """
    ctx.actor.require(WRITE, "registering a module version")
    return _add_version(
        ctx,
        module_name,
        version_string=version_string,
        manifest=manifest,
        file_list=file_list,
        verified=None,
    )


def record_ingested_version(
    ctx: Ctx,
    module_name: str,
    *,
    version_string: str,
    verified: VerifiedFields,
    manifest: dict[str, object] | None = None,
    file_list: list[str] | None = None,
) -> NodeModuleVersion:
    """Record a version whose artifact the platform's ingest has verified (services/ingest.py)."""
    ctx.actor.require(WRITE, "registering a module version")
    return _add_version(
        ctx,
        module_name,
        version_string=version_string,
        manifest=manifest,
        file_list=file_list,
        verified=verified,
    )


def attach_verified(
    ctx: Ctx,
    version: NodeModuleVersion,
    verified: VerifiedFields,
    manifest: dict[str, object],
    file_list: list[str],
) -> NodeModuleVersion:
    """Complete a version announced by hand with the artifact ingest has verified."""
    version.composefs_digest = verified.composefs_digest
    version.fsverity_root_hash = verified.fsverity_root_hash
    version.artifact_ref = verified.artifact_ref
    version.sbom_ref = verified.sbom_ref
    version.cosign_verified = True
    version.manifest, version.file_list = manifest, file_list
    audit.record(
        ctx,
        action="module_version.verify",
        target_type="node_module_version",
        target_id=version.id,
        summary=f"ingest verified {version.module.name} {version.version_string}",
        detail={
            "composefs_digest": verified.composefs_digest,
            "artifact_ref": verified.artifact_ref,
        },
    )
    return version


def _add_version(
    ctx: Ctx,
    module_name: str,
    *,
    version_string: str,
    manifest: dict[str, object] | None,
    file_list: list[str] | None,
    verified: VerifiedFields | None,
) -> NodeModuleVersion:
    module = get_module(ctx, module_name)
    try:
        Version.parse(version_string)
    except VersionError as e:
        raise InvalidInputError(f"version_string: {e}", field="version_string") from e
    if len(file_list or ()) > MAX_FILE_LIST:
        raise InvalidInputError(f"file_list has more than {MAX_FILE_LIST} entries")
    _check_manifest_globs(manifest or {})
    dup = ctx.session.scalar(
        select(NodeModuleVersion.id).where(
            NodeModuleVersion.module_id == module.id,
            NodeModuleVersion.version_string == version_string,
        )
    )
    if dup is not None:
        raise ConflictError(
            f"module {module_name!r} already has version {version_string}; "
            "versions are immutable, publish a new version",
            version_id=dup,
        )
    version = NodeModuleVersion(
        module=module,
        version_string=version_string,
        promotion_state=PromotionState.BUILT.value,
        composefs_digest=verified.composefs_digest if verified else None,
        fsverity_root_hash=verified.fsverity_root_hash if verified else None,
        cosign_verified=verified is not None,
        artifact_ref=verified.artifact_ref if verified else None,
        sbom_ref=verified.sbom_ref if verified else None,
        manifest=manifest or {},
        file_list=file_list or [],
        created_at=ctx.now,
    )
    ctx.session.add(version)
    ctx.session.flush()
    audit.record(
        ctx,
        action="module_version.register",
        target_type="node_module_version",
        target_id=version.id,
        summary=f"registered {module_name} {version_string}"
        + (" (verified by ingest)" if verified else " (by hand, no artifact)"),
        detail={
            "module": module_name,
            "version_string": version_string,
            "ingested": verified is not None,
        },
    )
    return version
