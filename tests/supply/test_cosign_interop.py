"""cosign interop, with cosign itself: ``verify-attestation`` accepts ours, we accept cosign's.

cosign is not packaged for Debian 12 and its trixie build needs glibc 2.38
(shared/notes/FACTS.md), so it runs in a trixie tree made by mmdebstrap
(``mmdebstrap --variant=apt --include=cosign,ca-certificates trixie ROOT``)
named by ``POWERNODE_COSIGN_ROOT``; the registry runs on the host's loopback,
which the chroot shares. scripts/make-cosign-tree.sh makes the tree, run by the
fixture when it is missing; without it the test is skipped (fails under CI).
tests/oci/test_referrers.py checks the same formats against a vector built by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.oci.distribution import DistributionRegistry
from powernode.signing.keys import generate_private_key, write_key_pair
from powernode.signing.policy import PublicKeyPolicy
from powernode.supply import attest, dsse, provenance
from tests.conftest import _missing, require_root
from tests.oci.registry_fixture import RunningRegistry, run_registry
from tests.oci.test_referrers import push_subject
from tests.supply import fixtures as fx

ROOT = Path(os.environ.get("POWERNODE_COSIGN_ROOT", "/var/tmp/supply-cosign/root"))
PASSWORD = "interop-pass"
pytestmark = [pytest.mark.tool, pytest.mark.registry, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with run_registry(tmp_path_factory.mktemp("cosign-registry")) as reg:
        yield reg


@pytest.fixture
def work() -> Iterator[tuple[Path, Path]]:
    """(host path, chroot path) of a scratch directory inside the cosign tree."""
    require_root()
    if not (ROOT / "usr/bin/cosign").exists() and shutil.which("mmdebstrap"):
        # CI starts without it: make it once (about 3 min; the script is idempotent).
        script = Path(__file__).parents[2] / "scripts" / "make-cosign-tree.sh"
        made = subprocess.run([str(script), str(ROOT)], capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
        if made.returncode != 0:
            _missing(f"scripts/make-cosign-tree.sh failed: {made.stderr[-2000:]}")
    if not (ROOT / "usr/bin/cosign").exists():
        _missing(f"no cosign tree at {ROOT}: scripts/make-cosign-tree.sh makes it")
    inner = Path("/tmp") / f"interop-{uuid.uuid4().hex[:8]}"
    host = ROOT / inner.relative_to("/")
    host.mkdir(parents=True)
    try:
        yield host, inner
    finally:
        shutil.rmtree(host, ignore_errors=True)


def cosign(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"COSIGN_PASSWORD": PASSWORD, "HOME": "/tmp", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [shutil.which("chroot") or "/usr/sbin/chroot", str(ROOT), "cosign", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def keys(host: Path, inner: Path) -> tuple[PublicKeyPolicy, str, str]:
    key = generate_private_key()
    write_key_pair(host / "cosign.key", host / "cosign.pub", key, PASSWORD)
    return (
        PublicKeyPolicy((host / "cosign.pub").read_bytes()),
        str(inner / "cosign.key"),
        str(inner / "cosign.pub"),
    )


def test_cosign_verify_attestation_accepts_ours(
    registry: RunningRegistry, work: tuple[Path, Path]
) -> None:
    host, inner = work
    _, _, other_pub = keys(host, inner)
    key = generate_private_key()
    write_key_pair(host / "ours.key", host / "ours.pub", key, PASSWORD)
    with DistributionRegistry(registry.url) as reg:
        repo = f"interop/ours-{host.name}"
        subject = push_subject(reg, repo, host.name.encode())
        ref = f"{registry.url.removeprefix('http://')}/{repo}@{subject}"
        statement = fx.provenance_statement(digest=str(subject))
        statement["subject"][0]["name"] = ref.split("@", maxsplit=1)[0]
        env = dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, json.dumps(statement).encode(), key)
        attest.attach_cosign_attestation(reg, repo, subject, env)
        attest.attach_provenance(reg, repo, subject, env)
    args = ["verify-attestation", "--key", str(inner / "ours.pub"), "--type", "slsaprovenance1",
            "--insecure-ignore-tlog=true", "--allow-insecure-registry", ref]  # fmt: skip
    r = cosign(*args)
    assert r.returncode == 0, r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if ln.strip()]
    got = json.loads(line)
    statement_back = json.loads(dsse.parse(got).payload)
    assert statement_back["predicate"]["runDetails"]["builder"]["id"] == fx.BUILDER
    # Another key: cosign refuses it too.
    r = cosign(*[a if a != str(inner / "ours.pub") else other_pub for a in args])
    assert r.returncode != 0


def test_we_accept_cosigns_attestation(registry: RunningRegistry, work: tuple[Path, Path]) -> None:
    host, inner = work
    trust, key, _ = keys(host, inner)
    with DistributionRegistry(registry.url) as reg:
        repo = f"interop/theirs-{host.name}"
        subject = push_subject(reg, repo, host.name.encode())
        ref = f"{registry.url.removeprefix('http://')}/{repo}@{subject}"
        predicate = fx.provenance_statement(digest=str(subject))["predicate"]
        (host / "predicate.json").write_text(json.dumps(predicate))
        r = cosign("attest", "--key", key, "--type", "slsaprovenance1", "--predicate",
                   str(inner / "predicate.json"), "--tlog-upload=false",
                   "--allow-insecure-registry", "--yes", ref)  # fmt: skip
        assert r.returncode == 0, r.stderr
        [got] = attest.verify_provenance(reg, repo, subject, trust)
        assert got.source.startswith("cosign .att")
        assert got.provenance.builder_id == fx.BUILDER
        assert got.provenance.subject_digest == str(subject)
        assert provenance.SLSA_PROVENANCE_V1 == "https://slsa.dev/provenance/v1"
