"""sign_artifact / verify_artifact against the real registry: every way trust can fail."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.errors import DigestMismatchError
from powernode.oci.digest import Digest
from powernode.oci.distribution import DistributionRegistry
from powernode.oci.refs import Reference, parse_reference
from powernode.publish import push_artifact, sign_artifact, signed_repository, verify_artifact
from powernode.signing import (
    CertificateError,
    IdentityMismatchError,
    NoSignaturesError,
    PublicKeyPolicy,
    SignatureInvalidError,
    generate_private_key,
    public_key_pem,
    signature_tag,
)
from powernode.signing.policy import KeylessPolicy, UnsafeValidityAtNow
from tests.oci.registry_fixture import RunningRegistry
from tests.publish.artifacts import make_artifact, small_files
from tests.signing.testca import GITHUB_ISSUER, T0, WORKFLOW, FakeCA, pem

pytestmark = pytest.mark.registry

IDENTITY_RE = r"https://github\.com/acme/modules/\.github/workflows/build\.yaml@refs/heads/main"
ISSUER_RE = r"https://token\.actions\.githubusercontent\.com"
AT_NOW = UnsafeValidityAtNow()


@pytest.fixture
def target(
    tmp_path: Path, oci_registry: RunningRegistry, request: pytest.FixtureRequest
) -> Iterator[tuple[DistributionRegistry, Reference]]:
    tag = request.node.name.lower().replace("[", "-").replace("]", "").replace("_", "-")[:40]
    art = make_artifact(tmp_path / "art", small_files(tag, count=3), name="demo")
    host = oci_registry.url.removeprefix("http://")
    ref = parse_reference(f"{host}/signing/{tag}:1.0.0")
    with DistributionRegistry(oci_registry.url) as reg:
        push_artifact(reg, ref, art)
        yield reg, ref


def test_key_round_trip(target: tuple[DistributionRegistry, Reference]) -> None:
    reg, ref = target
    key = generate_private_key()
    sign_artifact(reg, ref, key)
    verified = verify_artifact(reg, ref, PublicKeyPolicy(public_key_pem(key)))
    assert verified.manifest_digest == reg.get_manifest(ref).digest
    assert verified.reference.digest == verified.manifest_digest
    assert verified.name == "demo" and verified.version == "1.0.0"
    assert "/etc/inline.conf" in verified.file_list
    assert verified.signer_identity is None
    assert signed_repository(reg, ref) == f"{ref.registry}/{ref.repository}"
    # the same repository reached without a host in the reference signs the same name
    bare = Reference(None, ref.repository, ref.tag)
    assert signed_repository(reg, bare) == signed_repository(reg, ref)
    assert verify_artifact(reg, bare, PublicKeyPolicy(public_key_pem(key))).name == "demo"


def test_second_signature_is_appended(target: tuple[DistributionRegistry, Reference]) -> None:
    reg, ref = target
    old, new = generate_private_key(), generate_private_key("ed25519")
    sign_artifact(reg, ref, old)
    sign_artifact(reg, ref, new)
    for key in (old, new):
        assert verify_artifact(reg, ref, PublicKeyPolicy(public_key_pem(key))).name == "demo"


def test_unsigned(target: tuple[DistributionRegistry, Reference]) -> None:
    reg, ref = target
    with pytest.raises(NoSignaturesError, match="has no signatures"):
        verify_artifact(reg, ref, PublicKeyPolicy(public_key_pem(generate_private_key())))


def test_wrongly_signed(target: tuple[DistributionRegistry, Reference]) -> None:
    reg, ref = target
    sign_artifact(reg, ref, generate_private_key())
    other = generate_private_key()
    with pytest.raises(SignatureInvalidError, match="does not verify with key SHA256:"):
        verify_artifact(reg, ref, PublicKeyPolicy(public_key_pem(other)))


def keyless(target: tuple[DistributionRegistry, Reference], ca: FakeCA) -> None:
    reg, ref = target
    key = generate_private_key()
    sign_artifact(reg, ref, key, certificate_pem=pem(ca.leaf(key)), chain_pem=ca.chain_pem)


def test_keyless_round_trip(target: tuple[DistributionRegistry, Reference]) -> None:
    ca = FakeCA()
    keyless(target, ca)
    policy = KeylessPolicy(ca.root_pem, IDENTITY_RE, ISSUER_RE, T0, AT_NOW)
    verified = verify_artifact(*target, policy)
    assert (verified.signer_identity, verified.signer_issuer) == (WORKFLOW, GITHUB_ISSUER)


def test_expired_certificate(target: tuple[DistributionRegistry, Reference]) -> None:
    ca = FakeCA()
    keyless(target, ca)
    later = T0 + datetime.timedelta(hours=1)
    with pytest.raises(CertificateError, match="expired at"):
        verify_artifact(*target, KeylessPolicy(ca.root_pem, IDENTITY_RE, ISSUER_RE, later, AT_NOW))


def test_identity_not_matching(target: tuple[DistributionRegistry, Reference]) -> None:
    ca = FakeCA()
    keyless(target, ca)
    policy = KeylessPolicy(ca.root_pem, r"https://github\.com/evil/.*", ISSUER_RE, T0, AT_NOW)
    with pytest.raises(IdentityMismatchError, match="does not match"):
        verify_artifact(*target, policy)


def test_signed_but_image_tampered(
    target: tuple[DistributionRegistry, Reference], oci_registry: RunningRegistry
) -> None:
    reg, ref = target
    key = generate_private_key()
    sign_artifact(reg, ref, key)
    manifest = reg.get_manifest(ref)

    image = Digest.parse(json.loads(manifest.data)["layers"][0]["digest"])
    data = oci_registry.blob_data(image)
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(DigestMismatchError, match=str(image)):
        verify_artifact(reg, ref, PublicKeyPolicy(public_key_pem(key)))
    assert signature_tag(str(manifest.digest)) in reg.list_tags(ref.repository)
