"""``powernode supply``: a version's evidence and verdict, policies, the vulnerability feed.

Talks to the platform API like ``powernode system`` (same --url/--token and
POWERNODE_URL/POWERNODE_TOKEN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.base import App
from powernode.cli.system.common import (
    DEFAULT_URL,
    JsonOpt,
    Remote,
    TokenOpt,
    UrlOpt,
    check_url,
    remote,
)

app = App(
    name="supply",
    help="Supply-chain evidence and verdicts, promotion policies, the vulnerability feed.",
)
VersionArg = Annotated[str, typer.Argument(metavar="VERSION_ID", help="The version's id.")]
FileArg = Annotated[Path, typer.Argument(metavar="FILE", help="The document to send.")]
MAX_FILE = 512 * 1024 * 1024


@app.callback()
def _connect(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="POWERNODE_URL", metavar="URL", help="Platform base URL."),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="POWERNODE_TOKEN", metavar="TOKEN", help="API token."),
    ] = None,
) -> None:
    """Supply-chain evidence and verdicts, promotion policies, the vulnerability feed."""
    if ctx.obj is None or isinstance(ctx.obj, dict):
        ctx.obj = Remote(check_url(url), token)


_remote = remote  # the system group's --url/--token, overridden by the command's own


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE:
            raise typer.BadParameter(f"{path} is over {MAX_FILE} bytes", param_hint="FILE")
        return path.read_bytes()
    except OSError as e:
        raise typer.BadParameter(f"cannot read {path}: {e.strerror}", param_hint="FILE") from e


def _json_file(path: Path) -> object:
    try:
        return json.loads(_read(path))
    except ValueError as e:
        raise typer.BadParameter(f"{path} is not JSON: {e}", param_hint="FILE") from e


@app.command("evidence")
def evidence(
    ctx: typer.Context,
    version_id: VersionArg,
    *,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """A version's evidence, findings and the policy's verdict for each state."""
    data = _remote(ctx, url, token).call("GET", f"/node_module_versions/{version_id}/evidence")
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    typer.echo(
        f"{data['module']} {data['version_string']} ({data['promotion_state']}), "
        f"subject {data['subject']}, policy: {data['policy'] or 'none'}"
    )
    typer.echo("evidence:")
    for e in data["evidence"] or [{"kind": "(none)"}]:
        state = "verified" if e.get("verified") else f"NOT verified: {e.get('problem')}"
        typer.echo(f"  {e['kind']:<10} {e.get('id', '')} {state if 'id' in e else ''}".rstrip())
    typer.echo("findings:")
    for f in data["findings"] or [{"osv_id": "(none)"}]:
        waived = f" waived: {f['waived_by']}" if f.get("waived_by") else ""
        typer.echo(
            f"  {f['osv_id']} {f.get('severity', '')} {f.get('package', '')} "
            f"{f.get('version', '')}{waived}".rstrip()
        )
    for target, v in data["verdicts"].items():
        if not v["rules"]:
            continue
        typer.echo(f"{target}: {'ALLOWED' if v['allowed'] else 'REFUSED'} ({v['policy']})")
        for r in v["rules"]:
            typer.echo(f"  [{'pass' if r['passed'] else 'FAIL'}] {r['rule']}: {r['reason']}")


@app.command("attach")
def attach(
    ctx: typer.Context,
    version_id: VersionArg,
    file: FileArg,
    *,
    kind: Annotated[str, typer.Option(help="sbom, provenance, vex or signature.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Attach FILE: a CycloneDX JSON SBOM, a DSSE envelope, or {payload, signature}."""
    doc = _json_file(file)
    field = {"sbom": "document", "provenance": "envelope", "vex": "envelope"}.get(kind)
    if field is None and kind != "signature":
        raise typer.BadParameter(
            f"{kind!r}: choose sbom, provenance, vex or signature", param_hint="--kind"
        )
    if field is not None:
        body: dict[str, object] = {"kind": kind, field: doc}
    elif isinstance(doc, dict):
        body = {"kind": kind, **doc}
    else:
        raise typer.BadParameter(f"{file}: a signature is a JSON object")
    out = _remote(ctx, url, token).call(
        "POST", f"/node_module_versions/{version_id}/evidence", body
    )
    ev = out["evidence"]
    if as_json:
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        state = "verified" if ev["verified"] else f"NOT verified: {ev['problem']}"
        typer.echo(f"attached {ev['kind']} {ev['id']} ({state})")


def _scope(module: str | None, category: str | None) -> str:
    if (module is None) == (category is None):
        raise typer.BadParameter("give --module NAME or --category SLUG", param_hint="--module")
    if module is not None:
        return f"/node_modules/{module}/promotion_policy"
    return f"/node_module_categories/{category}/promotion_policy"


ModuleOpt = Annotated[str | None, typer.Option("--module", help="The module's name.")]
CategoryOpt = Annotated[str | None, typer.Option("--category", help="The category's slug.")]


@app.command("set-policy")
def set_policy(
    ctx: typer.Context,
    file: FileArg,
    *,
    module: ModuleOpt = None,
    category: CategoryOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Set the promotion policy (YAML or JSON) of a module or a category."""
    import yaml  # noqa: PLC0415

    try:
        doc = yaml.safe_load(_read(file))
    except yaml.YAMLError as e:
        raise typer.BadParameter(f"{file} is not YAML or JSON: {e}", param_hint="FILE") from e
    out = _remote(ctx, url, token).call("PUT", _scope(module, category), {"policy": doc})
    typer.echo(json.dumps(out, indent=2, sort_keys=True) if as_json else "policy set")


@app.command("show-policy")
def show_policy(
    ctx: typer.Context,
    *,
    module: ModuleOpt = None,
    category: CategoryOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The promotion policy of a module or a category, as JSON."""
    out = _remote(ctx, url, token).call("GET", _scope(module, category))
    typer.echo(json.dumps(out, indent=2, sort_keys=True))


BATCH_BYTES = 768 * 1024
BATCH_RECORDS = 5_000  # under the API's 10,000 records per request


def _batches(records: list[object]) -> list[list[object]]:
    """``records`` in runs whose JSON stays under :data:`BATCH_BYTES` (one at least)."""
    out: list[list[object]] = [[]]
    size = 0
    for r in records:
        n = len(json.dumps(r)) + 2
        if out[-1] and (size + n > BATCH_BYTES or len(out[-1]) >= BATCH_RECORDS):
            out.append([])
            size = 0
        out[-1].append(r)
        size += n
    return out


@app.command("import-feed")
def import_feed(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(metavar="[FILE]", help="OSV JSON, JSON lines or zip.")
    ] = None,
    *,
    feed_url: Annotated[
        str | None, typer.Option("--feed-url", help="Let the platform fetch the feed here.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Import OSV records from FILE (read here) or --feed-url (fetched by the platform)."""
    from powernode.supply import osv  # noqa: PLC0415

    if (file is None) == (feed_url is None):
        raise typer.BadParameter("give FILE or --feed-url", param_hint="FILE")
    remote = _remote(ctx, url, token)
    if file is None:
        out = remote.call("POST", "/vulnerability_feeds", {"url": feed_url})["import"]
    else:
        try:
            records = list(osv.read_documents(_read(file), name=str(file)))
        except osv.FeedError as e:
            raise typer.BadParameter(str(e), param_hint="FILE") from e
        out = {}
        for batch in _batches(records):  # the API bounds a request's body (max_body_bytes)
            got = remote.call(
                "POST", "/vulnerability_feeds", {"records": batch, "source": file.name}
            )["import"]
            out = {k: out.get(k, 0) + v if isinstance(v, int) else v for k, v in got.items()}
    if as_json:
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        typer.echo(
            f"{out['records']} records ({out['changed']} changed); "
            f"{out['versions_rematched']} versions re-matched: +{out['findings_added']} "
            f"-{out['findings_removed']} findings, {out['events']} events"
        )


@app.command("attest")
def attest_build(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The built artifact directory.")],
    *,
    registry: Annotated[
        str, typer.Option(help="Registry URL (http[s]://host:port) or OCI layout directory.")
    ],
    ref: Annotated[str, typer.Option(help="REPOSITORY@sha256:… of the pushed artifact.")],
    key: Annotated[Path, typer.Option(help="cosign private key file (the module's key).")],
    builder: Annotated[str, typer.Option(help="The builder id policies name.")],
    lock: Annotated[
        list[Path] | None, typer.Option(help="A lock file that went into the build.")
    ] = None,
    source: Annotated[str | None, typer.Option(help="The source tree: URI=sha256:HEX.")] = None,
    passphrase_env: Annotated[
        str, typer.Option(help="Environment variable holding the key's passphrase.")
    ] = "COSIGN_PASSWORD",  # noqa: S107 - the variable's name, as cosign reads it
    cosign_att: Annotated[
        bool, typer.Option("--cosign-att", help="Also write cosign's sha256-<hex>.att form.")
    ] = False,
    envelope_out: Annotated[
        Path | None, typer.Option(help="Write the signed envelope here (for `supply attach`).")
    ] = None,
) -> None:
    """Sign SLSA provenance for a built artifact; attach it and the SBOM as OCI referrers."""
    import os  # noqa: PLC0415

    from powernode.errors import PowernodeError  # noqa: PLC0415
    from powernode.oci.digest import Digest  # noqa: PLC0415
    from powernode.oci.distribution import DistributionRegistry  # noqa: PLC0415
    from powernode.oci.registry import open_registry  # noqa: PLC0415
    from powernode.signing.keys import read_private_key  # noqa: PLC0415
    from powernode.supply import attest, dsse  # noqa: PLC0415
    from powernode.supply.build_provenance import (  # noqa: PLC0415
        BuildInputError,
        statement_for_build,
    )

    repository, sep, digest_text = ref.partition("@")
    if not sep:
        raise typer.BadParameter("write REPOSITORY@sha256:HEX", param_hint="--ref")
    src: tuple[str, str] | None = None
    if source is not None:
        uri, eq, sdigest = source.rpartition("=")
        if not eq:
            raise typer.BadParameter("write URI=sha256:HEX", param_hint="--source")
        src = (uri, sdigest)
    try:
        subject = Digest.parse(digest_text)
        statement = statement_for_build(
            out,
            subject_name=repository,
            subject_digest=str(subject),
            builder_id=builder,
            locks=list(lock or []),
            source=src,
        )
        private = read_private_key(key, os.environ.get(passphrase_env, ""))
        env = dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, json.dumps(statement).encode(), private)
        reg = open_registry(registry)
        try:
            done = {
                "provenance": str(attest.attach_provenance(reg, repository, subject, env)),
                "sbom": str(
                    attest.attach_sbom(
                        reg, repository, subject, (out / "sbom.cdx.json").read_bytes()
                    )
                ),
            }
            if cosign_att:
                done["cosign_att"] = str(
                    attest.attach_cosign_attestation(reg, repository, subject, env)
                )
        finally:
            if isinstance(reg, DistributionRegistry):
                reg.close()
    except (BuildInputError, PowernodeError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    if envelope_out is not None:
        envelope_out.write_bytes(env.to_bytes())
    typer.echo(json.dumps(done, indent=2, sort_keys=True))
