"""Categories and modules: ``/node_module_categories``, ``/node_modules``."""

from __future__ import annotations

from fastapi import APIRouter, status

from powernode.platform.api.deps import CurrentActor, Reader, State
from powernode.platform.api.schemas import (
    CategoryOut,
    ModuleCreate,
    ModuleCreatedOut,
    ModuleOut,
    VersionCreate,
    VersionOut,
)
from powernode.platform.services import catalog

router = APIRouter(tags=["modules"])


@router.get("/node_module_categories")
def list_categories(state: State, actor: Reader) -> dict[str, list[CategoryOut]]:
    with state.unit(actor) as ctx:
        return {"categories": [CategoryOut.of(c) for c in catalog.list_categories(ctx)]}


@router.post("/node_modules", status_code=status.HTTP_201_CREATED)
def create_module(
    body: ModuleCreate, state: State, actor: CurrentActor
) -> dict[str, ModuleCreatedOut]:
    """Register a module. The response carries ``webhook_secret``: shown this once."""
    with state.unit(actor) as ctx:
        module, secret = catalog.create_module(
            ctx,
            state.sealer,
            name=body.name,
            category_slug=body.category_slug,
            variety=body.variety,
            description=body.description,
            parent_module=body.parent_module,
            policy=catalog.TrustPolicy(
                cosign_identity_regexp=body.cosign_identity_regexp,
                cosign_issuer_regexp=body.cosign_issuer_regexp,
                cosign_public_key=body.cosign_public_key,
            ),
            require_approval=body.require_approval,
            gitea_repo_full_name=body.gitea_repo_full_name,
            github_repo_full_name=body.github_repo_full_name,
        )
        out = ModuleOut.of(module).model_dump()
    return {"module": ModuleCreatedOut(**out, webhook_secret=secret)}


@router.get("/node_modules")
def list_modules(
    state: State, actor: Reader, category_slug: str | None = None
) -> dict[str, list[ModuleOut]]:
    with state.unit(actor) as ctx:
        mods = catalog.list_modules(ctx, category_slug=category_slug)
        return {"modules": [ModuleOut.of(m) for m in mods]}


@router.get("/node_modules/{name}")
def get_module(name: str, state: State, actor: Reader) -> dict[str, ModuleOut]:
    with state.unit(actor) as ctx:
        return {"module": ModuleOut.of(catalog.get_module(ctx, name))}


@router.delete("/node_modules/{name}")
def delete_module(
    name: str, state: State, actor: CurrentActor, force: bool = False
) -> dict[str, dict[str, object]]:
    """Delete a module with its versions.

    A module with a live version or a template assignment is refused (409
    ``module-in-use``, naming them) unless ``force=true``, which needs the
    ``promote-live`` scope; forced, its versions and assignments go with it.
    """
    with state.unit(actor) as ctx:
        gone = catalog.delete_module(ctx, name, force=force)
    return {"deleted": {"module": name, **gone}}


@router.get("/node_modules/{name}/versions")
def list_versions(name: str, state: State, actor: Reader) -> dict[str, list[VersionOut]]:
    """Versions, newest (SemVer precedence) first."""
    with state.unit(actor) as ctx:
        return {"versions": [VersionOut.of(v) for v in catalog.list_versions(ctx, name)]}


@router.post("/node_modules/{name}/versions", status_code=status.HTTP_201_CREATED)
def register_version(
    name: str, body: VersionCreate, state: State, actor: CurrentActor
) -> dict[str, VersionOut]:
    """Record a built version (``promotion_state: built``), as registry ingest does."""
    with state.unit(actor) as ctx:
        v = catalog.register_version(ctx, name, **body.model_dump())
        return {"version": VersionOut.of(v)}
