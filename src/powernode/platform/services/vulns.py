"""The OSV feed the platform matches versions against, and the findings it yields.

Import (:func:`import_documents`, :func:`import_url`) upserts records by id
(a record whose ``modified`` and content are unchanged is left alone) and
indexes each by package name (``osv_affected``). Then every version with an
SBOM whose packages a changed record names is re-matched
(:func:`rematch_versions`): findings are added and removed to agree with the
feed, and a new finding on a version the fleet runs — ``live``, or reported
running by a node's heartbeat (``running_module_digests``) — writes a fleet
event ``module_version.vulnerability`` ("live version X now has a
critical finding"), with whether the module's policy would still let it go
live. Nothing is rebuilt: the verdict is computed from the stored evidence
and findings whenever it is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select

from powernode.platform.db import (
    FleetEvent,
    Node,
    NodeInstance,
    NodeModuleVersion,
    OsvAffected,
    OsvRecord,
    PromotionState,
    VersionEvidence,
    VersionFinding,
)
from powernode.platform.problems import InvalidInputError, PermissionDeniedError
from powernode.platform.services import audit, evidence
from powernode.platform.services.catalog import get_version
from powernode.platform.services.context import WRITE, Ctx
from powernode.supply import osv
from powernode.supply.sbom_read import SbomError, packages_of

log = logging.getLogger(__name__)
MAX_LISTED_INSTANCES = 50

CHUNK = 500
MAX_URL_BYTES = 512 * 1024 * 1024
URL_TIMEOUT = 60.0
EVENT_KIND = "module_version.vulnerability"


def import_url(ctx: Ctx, url: str, allowed: Sequence[str]) -> dict[str, object]:
    """Fetch a feed (JSON, JSON lines or a zip of records) from ``url`` and import it.

    Only from a prefix in ``allowed`` (settings ``vulnerability_feed_urls``): the
    platform does not fetch whatever URL a token holder names.
    """
    ctx.actor.require(WRITE, "importing a vulnerability feed")
    if not url.startswith(("http://", "https://")):
        raise InvalidInputError(f"url {url!r} is not http(s)", field="url")
    if not any(url.startswith(prefix) for prefix in allowed):
        raise PermissionDeniedError(
            f"{url} is not under a feed source this platform fetches from; add its prefix "
            "to the settings' vulnerability_feed_urls, or send the records inline "
            "(powernode supply import-feed FILE)"
        )
    import httpx  # noqa: PLC0415 - only a URL import loads the HTTP client (app start)

    try:
        with (
            httpx.Client(timeout=URL_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise InvalidInputError(
                    f"GET {url} answered {resp.status_code}, not 200", field="url"
                )
            chunks: list[bytes] = []
            total = 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > MAX_URL_BYTES:
                    raise InvalidInputError(
                        f"{url}: the feed is over {MAX_URL_BYTES} bytes", field="url"
                    )
                chunks.append(chunk)
    except httpx.HTTPError as e:
        raise InvalidInputError(f"cannot fetch {url}: {e}", field="url") from None
    try:
        docs = list(osv.read_documents(b"".join(chunks), name=url))
    except osv.FeedError as e:
        raise InvalidInputError(str(e), field="url") from None
    return import_documents(ctx, docs, source=url)


def import_documents(ctx: Ctx, docs: Iterable[object], *, source: str) -> dict[str, object]:
    """Upsert OSV records, then re-match the versions they touch. 422 on any bad record."""
    ctx.actor.require(WRITE, "importing a vulnerability feed")
    try:
        records = osv.parse_records(docs)
    except osv.FeedError as e:
        raise InvalidInputError(f"{source}: {e}", field="records") from None
    by_id = {r.id: r for r in records}
    known: dict[str, OsvRecord] = {}
    ids = list(by_id)
    for i in range(0, len(ids), CHUNK):
        for row in ctx.session.scalars(
            select(OsvRecord).where(OsvRecord.id.in_(ids[i : i + CHUNK]))
        ):
            known[row.id] = row
    changed: list[osv.Record] = []
    names: set[str] = set()
    for rec in by_id.values():
        doc = osv.record_json(rec)
        old = known.get(rec.id)
        if old is not None and old.modified == rec.modified and old.document == doc:
            continue
        changed.append(rec)
        if old is None:
            ctx.session.add(
                OsvRecord(
                    id=rec.id,
                    modified=rec.modified,
                    severity=rec.severity,
                    document=doc,
                    imported_at=ctx.now,
                )
            )
        else:
            old.modified, old.severity, old.document, old.imported_at = (
                rec.modified,
                rec.severity,
                doc,
                ctx.now,
            )
            # The packages it named before count as touched too (a withdrawn record
            # or a narrowed range must take findings away).
            names.update(
                ctx.session.scalars(select(OsvAffected.package).where(OsvAffected.osv_id == rec.id))
            )
            ctx.session.execute(delete(OsvAffected).where(OsvAffected.osv_id == rec.id))
    ctx.session.flush()
    for rec in changed:
        pkgs = {a.name for a in rec.affected}
        names |= pkgs
        ctx.session.add_all(OsvAffected(osv_id=rec.id, package=p) for p in sorted(pkgs))
    ctx.session.flush()
    touched = [v for v in _versions_with_sbom(ctx) if names & _names(ctx, v)] if changed else []
    result = rematch_versions(ctx, touched)
    summary = {
        "source": source,
        "records": len(by_id),
        "changed": len(changed),
        "unchanged": len(by_id) - len(changed),
        "versions_rematched": len(touched),
        **result,
    }
    audit.record(
        ctx,
        action="vulnerability_feed.import",
        target_type="vulnerability_feed",
        target_id=None,
        summary=f"imported {len(by_id)} OSV records from {source} ({len(changed)} changed)",
        detail=summary,
    )
    return summary


def _versions_with_sbom(ctx: Ctx) -> list[NodeModuleVersion]:
    q = (
        select(NodeModuleVersion)
        .where(
            NodeModuleVersion.id.in_(
                select(VersionEvidence.version_id).where(VersionEvidence.kind == "sbom")
            )
        )
        .order_by(NodeModuleVersion.id)
    )
    return list(ctx.session.scalars(q))


def packages(ctx: Ctx, version: NodeModuleVersion) -> list[osv.Pkg]:
    """The Debian packages of every SBOM attached to ``version`` (deduplicated)."""
    out: set[osv.Pkg] = set()
    for row in ctx.session.scalars(
        select(VersionEvidence).where(
            VersionEvidence.version_id == version.id, VersionEvidence.kind == "sbom"
        )
    ):
        try:
            out.update(packages_of(row.content.get("document"))[0])
        except SbomError:
            continue  # checked on attach; an unreadable one matches nothing
    return sorted(out)


def _names(ctx: Ctx, version: NodeModuleVersion) -> set[str]:
    return {n for p in packages(ctx, version) for n in (p.name, p.source) if n}


def index_for(ctx: Ctx, names: Sequence[str]) -> osv.FeedIndex:
    """The records that name any of ``names`` (looked up through osv_affected)."""
    ids: set[str] = set()
    for i in range(0, len(names), CHUNK):
        ids.update(
            ctx.session.scalars(
                select(OsvAffected.osv_id).where(OsvAffected.package.in_(names[i : i + CHUNK]))
            )
        )
    idl = sorted(ids)
    docs: list[object] = []
    for i in range(0, len(idl), CHUNK):
        docs.extend(
            ctx.session.scalars(
                select(OsvRecord.document).where(OsvRecord.id.in_(idl[i : i + CHUNK]))
            )
        )
    return osv.FeedIndex(osv.parse_records(docs))


def rematch_versions(ctx: Ctx, versions: Sequence[NodeModuleVersion]) -> dict[str, int]:
    """Bring each version's findings in line with the feed; events for live versions."""
    added = removed = events = 0
    pending: list[tuple[NodeModuleVersion, list[osv.Match]]] = []
    for version in versions:
        pkgs = packages(ctx, version)
        index = index_for(ctx, sorted({n for p in pkgs for n in (p.name, p.source) if n}))
        matches = {(m.record_id, m.package): m for m in index.match(pkgs)}
        have = {
            (f.osv_id, f.package): f
            for f in ctx.session.scalars(
                select(VersionFinding).where(VersionFinding.version_id == version.id)
            )
        }
        for key in have.keys() - matches.keys():
            ctx.session.delete(have[key])
            removed += 1
        new: list[osv.Match] = []
        for key, m in matches.items():
            f = have.get(key)
            if f is None:
                ctx.session.add(
                    VersionFinding(
                        version_id=version.id,
                        osv_id=m.record_id,
                        package=m.package,
                        installed_version=m.version,
                        fixed_version=m.fixed,
                        severity=m.severity,
                        purl=m.purl,
                        aliases=list(m.aliases),
                        summary=m.summary,
                        found_at=ctx.now,
                    )
                )
                new.append(m)
                added += 1
            else:
                f.severity, f.fixed_version, f.aliases, f.summary = (
                    m.severity,
                    m.fixed,
                    list(m.aliases),
                    m.summary,
                )
        ctx.session.flush()
        if new:
            pending.append((version, new))
    running = running_on(ctx, [v for v, _ in pending]) if pending else {}
    for version, new in pending:
        on = running.get(version.id, [])
        if on or version.promotion_state == PromotionState.LIVE.value:
            events += _live_events(ctx, version, new, on)
    return {"findings_added": added, "findings_removed": removed, "events": events}


def running_on(ctx: Ctx, versions: Sequence[NodeModuleVersion]) -> dict[str, list[str]]:
    """version id → the ids of the instances (not terminated) that report running it.

    What nodes report in their heartbeat (``running_module_digests``: module
    name → composefs digest), within the module's account: a version that is
    not ``live`` but still runs somewhere is the fleet's concern all the same.
    """
    wanted = {
        (v.module.account, v.module.name, v.composefs_digest): v.id
        for v in versions
        if v.composefs_digest
    }
    out: dict[str, list[str]] = {}
    if not wanted:
        return out
    rows = ctx.session.execute(
        select(NodeInstance.id, Node.account, NodeInstance.running_module_digests)
        .join(Node, Node.id == NodeInstance.node_id)
        .where(NodeInstance.terminated_at.is_(None))
        .order_by(NodeInstance.id)
    )
    for instance_id, account, running in rows:
        for name, digest in (running or {}).items():
            vid = wanted.get((account, str(name), str(digest)))
            if vid is not None:
                out.setdefault(vid, []).append(instance_id)
    return out


def _live_events(
    ctx: Ctx, version: NodeModuleVersion, new: list[osv.Match], running: list[str]
) -> int:
    still = evidence.verdict(ctx, version, PromotionState.LIVE.value)
    label = f"{version.module.name} {version.version_string}"
    where = (
        f"live version {label}"
        if version.promotion_state == PromotionState.LIVE.value
        else f"version {label} (running on {len(running)} node(s))"
    )
    for m in new:
        ctx.session.add(
            FleetEvent(
                kind=EVENT_KIND,
                severity="critical" if m.severity in {"critical", "high"} else "warning",
                payload={
                    "message": f"{where} now has a {m.severity} finding: "
                    f"{m.record_id} in {m.package} {m.version}",
                    "promotion_state": version.promotion_state,
                    "running_instances": running[:MAX_LISTED_INSTANCES],
                    "running_count": len(running),
                    "version_id": version.id,
                    "module": version.module.name,
                    "version_string": version.version_string,
                    "osv_id": m.record_id,
                    "package": m.package,
                    "installed_version": m.version,
                    "fixed_version": m.fixed,
                    "finding_severity": m.severity,
                    "policy_allows_live": still.allowed,
                    "verdict": still.to_json(),
                },
                occurred_at=ctx.now,
            )
        )
    log.warning("live version %s: %d new finding(s)", version.id, len(new))
    return len(new)


def list_findings(ctx: Ctx, version_id: str) -> list[dict[str, object]]:
    ev = evidence.view(ctx, get_version(ctx, version_id))
    return [f.__dict__ for f in ev.findings]
