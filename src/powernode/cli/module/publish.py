"""`powernode module push|pull|sign|verify|generate-key-pair`, shaped like oras and cosign.

REF is ``oci:<layout-dir>:[<repository>:]<tag>`` or ``<registry>/<repository>:<tag>``
(plain HTTP for loopback registries or with ``--plain-http``). Keys and
passwords as cosign handles them: ``cosign.key``/``cosign.pub`` in the
current directory, the password from ``COSIGN_PASSWORD`` or a prompt.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from powernode.errors import ConfigError, PowernodeError
from powernode.oci.distribution import Credentials, DistributionRegistry
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import Reference
from powernode.publish import ModuleStore, pull_artifact, push_artifact
from powernode.publish.progress import Progress as ProgressFn
from powernode.publish.pull import PulledArtifact
from powernode.publish.target import open_target
from powernode.publish.verify import VerifiedArtifact, sign_artifact, verify_artifact
from powernode.signing.keys import (
    KeyKind,
    generate_private_key,
    read_private_key,
    write_key_pair,
)
from powernode.signing.policy import (
    KeylessPolicy,
    PublicKeyPolicy,
    TrustPolicy,
    UnsafeValidityAtNow,
)
from powernode.signing.tlog import TransparencyLogs

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PlainHttp = Annotated[
    bool, typer.Option("--plain-http", help="Use HTTP, not HTTPS (automatic for loopback).")
]
User = Annotated[
    str | None,
    typer.Option("--username", "-u", envvar="POWERNODE_REGISTRY_USERNAME", help="Registry user."),
]
Password = Annotated[
    str | None,
    typer.Option(
        "--password", "-p", envvar="POWERNODE_REGISTRY_PASSWORD", help="Registry password."
    ),
]


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)  # one line, never wrapped at the terminal's width
    return typer.Exit(1)


@contextlib.contextmanager
def _open(
    ref: str, plain_http: bool, user: str | None, password: str | None
) -> Iterator[tuple[LayoutRegistry | DistributionRegistry, Reference]]:
    creds = Credentials(user, password or "") if user else None
    registry, reference = open_target(ref, plain_http=plain_http, credentials=creds)
    try:
        yield registry, reference
    finally:
        if isinstance(registry, DistributionRegistry):
            registry.close()


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[ProgressFn | None]:
    """Rich bars on a terminal (stderr), nothing otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    tasks: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, TransferSpeedColumn(), console=Console(stderr=True)) as bars:

        def report(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bars.add_task(task, total=total)
            bars.update(tasks[task], completed=done, total=total)

        yield report


def _password(confirm: bool) -> str:
    env = os.environ.get("COSIGN_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():  # a prompt would read EOF and click would say only "Aborted."
        raise ConfigError(
            "the private key's password is needed: set COSIGN_PASSWORD, or run this on a "
            "terminal to be asked for it"
        )
    return str(
        typer.prompt("Enter password for private key", hide_input=True, confirmation_prompt=confirm)
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:  # bad input, not usage: exit 1 like every missing file
        raise ConfigError(f"{path}: cannot read the {what}: {e.strerror}") from e


def _pulled_summary(ref: str, pulled: PulledArtifact) -> dict[str, object]:
    return {
        "reference": ref,
        "digest": str(pulled.manifest_digest),
        "composefs_digest": str(pulled.composefs_digest),
        "image": str(pulled.image),
        "bytes_downloaded": pulled.bytes_downloaded,
        "objects_fetched": pulled.objects_fetched,
        "objects_reused": pulled.objects_reused,
    }


def _check_verify_args(
    key: Path | None,
    *,
    identity: str | None,
    issuer: str | None,
    roots: Path | None,
    rekor_key: Path | None,
    ignore_tlog: bool,
) -> None:
    """Usage errors: a key, or an identity, issuer and roots with exactly one time source."""
    keyed = key is not None and identity is None and issuer is None
    keyless = key is None and identity and issuer and roots is not None
    if not (keyed or keyless):
        raise typer.BadParameter(
            "give --key cosign.pub, or --certificate-identity-regexp, "
            "--certificate-oidc-issuer-regexp and --certificate-chain ROOTS.pem"
        )
    if keyless and (rekor_key is not None) == ignore_tlog:  # exactly one of the two
        raise typer.BadParameter(
            "keyless verification needs --rekor-public-key LOG.pem (the signing time "
            "from the signature's transparency log bundle), or --insecure-ignore-tlog"
        )


def _trust_policy(
    key: Path | None,
    *,
    identity: str | None,
    issuer: str | None,
    roots: Path | None,
    rekor_key: Path | None,
) -> TrustPolicy:
    """The policy the checked arguments name (a public key, or a keyless identity)."""
    if key is not None:
        return PublicKeyPolicy(_read(key, "public key"))
    assert identity and issuer and roots is not None
    now = datetime.datetime.now(datetime.UTC)
    signing_time: TransparencyLogs | UnsafeValidityAtNow
    if rekor_key is not None:
        signing_time = TransparencyLogs(_read(rekor_key, "transparency log key"))
    else:
        signing_time = UnsafeValidityAtNow()
    return KeylessPolicy(_read(roots, "roots"), identity, issuer, now, signing_time)


def _verified_summary(ref: str, verified: VerifiedArtifact) -> dict[str, object]:
    return {
        "reference": ref,
        "digest": str(verified.manifest_digest),
        "name": verified.name,
        "version": verified.version,
        "composefs_digest": str(verified.composefs_digest),
        "signer": str(verified.signer),
        "identity": verified.signer_identity,
        "issuer": verified.signer_issuer,
        "files": len(verified.file_list),
    }


def push_cmd(  # noqa: PLR0917 - typer maps parameters to options
    artifact: Annotated[Path, typer.Argument(help="Artifact directory (module build --out).")],
    ref: Annotated[str, typer.Argument(help="oci:DIR:[REPO:]TAG or REGISTRY/REPO:TAG")],
    as_json: JsonOpt = False,
    plain_http: PlainHttp = False,
    username: User = None,
    password: Password = None,
) -> None:
    """Push an artifact directory as one OCI manifest (like `oras push`)."""
    try:
        with (
            _open(ref, plain_http, username, password) as (registry, reference),
            _progress(not as_json) as progress,
        ):
            digest = push_artifact(registry, reference, artifact, progress=progress)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps({"reference": ref, "digest": str(digest)}))
    else:
        typer.echo(f"Pushed {ref}\nDigest: {digest}")


def pull_cmd(  # noqa: PLR0917
    ref: Annotated[str, typer.Argument(help="oci:DIR:[REPO:]TAG or REGISTRY/REPO:TAG")],
    store: Annotated[Path, typer.Argument(help="Store directory (objects/, images/, blobs/).")],
    as_json: JsonOpt = False,
    plain_http: PlainHttp = False,
    username: User = None,
    password: Password = None,
) -> None:
    """Pull into a shared store, fetching only missing objects; verifies every digest."""
    try:
        with (
            _open(ref, plain_http, username, password) as (registry, reference),
            _progress(not as_json) as progress,
        ):
            pulled = pull_artifact(registry, reference, ModuleStore(store), progress=progress)
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps(_pulled_summary(ref, pulled)))
    else:
        typer.echo(
            f"Pulled {ref}\nDigest: {pulled.manifest_digest}\nImage: {pulled.image}\n"
            f"Objects: {pulled.objects_fetched} fetched ({pulled.bytes_downloaded} bytes), "
            f"{pulled.objects_reused} already present"
        )


def sign_cmd(  # noqa: PLR0917
    ref: Annotated[str, typer.Argument(help="The artifact to sign.")],
    key: Annotated[Path, typer.Option("--key", help="cosign.key (encrypted private key).")],
    certificate: Annotated[
        Path | None, typer.Option("--certificate", help="Signing certificate (PEM).")
    ] = None,
    chain: Annotated[
        Path | None, typer.Option("--certificate-chain", help="Its chain (PEM).")
    ] = None,
    as_json: JsonOpt = False,
    plain_http: PlainHttp = False,
    username: User = None,
    password: Password = None,
) -> None:
    """Sign with a cosign key; the signature goes under the sha256-<hex>.sig tag."""
    try:
        private = read_private_key(key, _password(confirm=False))
        with _open(ref, plain_http, username, password) as (registry, reference):
            digest = sign_artifact(
                registry,
                reference,
                private,
                certificate_pem=_read(certificate, "certificate") if certificate else None,
                chain_pem=_read(chain, "certificate chain") if chain else None,
            )
    except PowernodeError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps({"reference": ref, "signature_manifest": str(digest)}))
    else:
        typer.echo(f"Signed {ref} (signature manifest {digest})")


def verify_cmd(  # noqa: PLR0917
    ref: Annotated[str, typer.Argument(help="The artifact to verify.")],
    key: Annotated[Path | None, typer.Option("--key", help="cosign.pub")] = None,
    identity: Annotated[
        str | None,
        typer.Option("--certificate-identity-regexp", help="Signer identity (full match)."),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option("--certificate-oidc-issuer-regexp", help="OIDC issuer (full match)."),
    ] = None,
    roots: Annotated[
        Path | None,
        typer.Option("--certificate-chain", "--root", help="Trusted root certificates (PEM)."),
    ] = None,
    rekor_key: Annotated[
        Path | None,
        typer.Option(
            "--rekor-public-key",
            envvar="SIGSTORE_REKOR_PUBLIC_KEY",
            help="Transparency log public key(s) (PEM): the signing time comes from the "
            "signature's bundle, signed by this log.",
        ),
    ] = None,
    ignore_tlog: Annotated[
        bool,
        typer.Option(
            "--insecure-ignore-tlog",
            help="No transparency log: check certificates at the current time (unsafe "
            "with Fulcio's 10-minute certificates).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    plain_http: PlainHttp = False,
    username: User = None,
    password: Password = None,
) -> None:
    """Verify the signature (key or certificate identity) and the artifact's content."""
    _check_verify_args(
        key,
        identity=identity,
        issuer=issuer,
        roots=roots,
        rekor_key=rekor_key,
        ignore_tlog=ignore_tlog,
    )
    try:
        policy = _trust_policy(
            key, identity=identity, issuer=issuer, roots=roots, rekor_key=rekor_key
        )
        with _open(ref, plain_http, username, password) as (registry, reference):
            verified = verify_artifact(registry, reference, policy)
    except PowernodeError as e:
        raise _fail(e) from e
    result = _verified_summary(ref, verified)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"Verified {ref}\nDigest: {verified.manifest_digest}\n"
            f"Composefs digest: {verified.composefs_digest}\nSigned by: {verified.signer}"
        )


def generate_cmd(
    kind: Annotated[
        str, typer.Option("--kind", help="ecdsa-p256 (cosign's default) or ed25519.")
    ] = "ecdsa-p256",
) -> None:
    """Write cosign.key (encrypted) and cosign.pub to the current directory."""
    if kind not in ("ecdsa-p256", "ed25519"):
        raise typer.BadParameter("--kind must be ecdsa-p256 or ed25519")
    key_kind: KeyKind = "ecdsa-p256" if kind == "ecdsa-p256" else "ed25519"
    try:
        write_key_pair(
            Path("cosign.key"),
            Path("cosign.pub"),
            generate_private_key(key_kind),
            _password(confirm=True),
        )
    except PowernodeError as e:
        raise _fail(e) from e
    typer.echo("Private key written to cosign.key\nPublic key written to cosign.pub")


def register(app: typer.Typer) -> None:
    """Add push, pull, sign, verify and generate-key-pair to `powernode module`."""
    app.command("push")(push_cmd)
    app.command("pull")(pull_cmd)
    app.command("sign")(sign_cmd)
    app.command("verify")(verify_cmd)
    app.command("generate-key-pair")(generate_cmd)
