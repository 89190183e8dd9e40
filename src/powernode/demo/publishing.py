"""The module author's and the CI's part: key pair, build, sign, push.

Seed 004's CI builds the module, signs the OCI manifest with cosign and
pushes it to ``<registry>/<account>/modules/<name>``; the demo does the same
with powernode's own tools: ``powernode.toolchain.build.build_module``
(docs/build.md; rootfs/ only, no packages, so no network is needed), then
``powernode.publish.push_artifact`` and ``sign_artifact`` into the platform's
registry, here an OCI layout directory (docs/publish.md). The signing key is
a cosign-format key pair written into the demo dir; the platform trusts its
public half per module (``cosign_public_key``).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from powernode.oci.refs import parse_reference
from powernode.oci.registry import open_registry
from powernode.publish import push_artifact, sign_artifact
from powernode.signing.keys import PrivateKey, generate_private_key, public_key_pem, write_key_pair
from powernode.toolchain.build import BuildResult, build_module

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigningKey:
    """The demo's cosign key pair: files on disk and the key in memory."""

    private_path: Path
    public_path: Path
    passphrase: str
    key: PrivateKey

    @property
    def public_pem(self) -> str:
        return public_key_pem(self.key).decode()


@dataclass(frozen=True)
class Published:
    """One module version built, pushed and signed."""

    name: str
    version: str
    tag: str
    reference: str  # oci:<layout>:<repository>:<tag>, as `powernode module push` takes it
    manifest_digest: str
    build: BuildResult


def make_signing_key(directory: Path) -> SigningKey:
    """``powernode module generate-key-pair`` into ``directory`` (a random passphrase)."""
    key = generate_private_key()
    passphrase = secrets.token_urlsafe(16)
    private_path, public_path = directory / "cosign.key", directory / "cosign.pub"
    write_key_pair(private_path, public_path, key, passphrase)
    (directory / "cosign.password").write_text(passphrase + "\n", encoding="utf-8")
    (directory / "cosign.password").chmod(0o600)
    return SigningKey(private_path, public_path, passphrase, key)


def repository_of(account: str, name: str) -> str:
    """Where the platform looks for a module's artifacts (docs/platform.md "Ingest")."""
    return f"{account}/modules/{name}"


def publish_module(
    repo: Path,
    out: Path,
    registry_dir: Path,
    key: SigningKey,
    *,
    version: str,
    source_date_epoch: int,
    account: str = "default",
    packages: bool = False,
) -> Published:
    """Build ``repo`` into ``out``, push it to the layout ``registry_dir`` and sign it.

    ``packages``: with the module's Debian packages (mmdebstrap, the build cache
    the example builds share); else rootfs/ only, the demo's fast default."""
    result = build_module(
        repo, out, version=version, source_date_epoch=source_date_epoch, packages=packages
    )
    tag = f"v{result.version}"
    repository = repository_of(account, result.name)
    registry = open_registry(registry_dir)
    ref = parse_reference(f"{repository}:{tag}")
    digest = push_artifact(registry, ref, result.out)
    sign_artifact(registry, ref, key.key)
    log.info("published %s:%s as %s", repository, tag, digest)
    return Published(
        name=result.name,
        version=result.version,
        tag=tag,
        reference=f"oci:{registry_dir}:{repository}:{tag}",
        manifest_digest=str(digest),
        build=result,
    )
