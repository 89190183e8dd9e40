"""``oci:DIR:TAG`` means what skopeo means (issue 13 item 13), signatures included.

skopeo's ``oci:`` transport (containers/image) takes everything after the
directory's ``:`` as the index.json ``org.opencontainers.image.ref.name``.
These tests run the real skopeo both ways: it copies what we wrote, and we
verify and pull what it wrote, the cosign-style ``sha256-<hex>.sig``
signature manifest copied alongside.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from powernode.agent.modules.reconcile import open_layout_source
from powernode.oci.refs import parse_reference
from powernode.publish import (
    ModuleStore,
    pull_artifact,
    push_artifact,
    sign_artifact,
    verify_artifact,
)
from powernode.publish.target import open_target
from powernode.signing import PublicKeyPolicy, generate_private_key, public_key_pem, signature_tag
from tests.conftest import require_tool
from tests.publish.artifacts import make_artifact, small_files

pytestmark = pytest.mark.tool


def skopeo(*args: str) -> str:
    proc = subprocess.run(
        [require_tool("skopeo"), *args], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def copy(src: str, dst: str) -> None:
    # --preserve-digests: skopeo would otherwise gzip our layers, changing the signed digest
    skopeo("copy", "--preserve-digests", src, dst)


def ref_names(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_bytes())
    return sorted(d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"])


@pytest.mark.parametrize("repository", ["", "chrony:"], ids=["one-module", "many-modules"])
def test_skopeo_reads_our_tags_and_we_read_skopeos(tmp_path: Path, repository: str) -> None:
    """Regression: we wrote ``module:1.0.0`` for ``oci:DIR:1.0.0``; skopeo wrote ``1.0.0``."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    art = make_artifact(tmp_path / "art", small_files("sk", count=3), name="chrony")
    key = generate_private_key()
    reg, ref = open_target(f"oci:{ours}:{repository}1.0.0")
    digest = push_artifact(reg, ref, art)
    sig_digest = sign_artifact(reg, ref, key)
    sig_tag = signature_tag(str(digest))
    assert ref_names(ours) == sorted([f"{repository}1.0.0", f"{repository}{sig_tag}"])

    # skopeo finds our tag by the same words
    raw = skopeo("inspect", "--raw", f"oci:{ours}:{repository}1.0.0")
    assert raw.encode() == (ours / "blobs" / "sha256" / digest.hex).read_bytes()
    # and copies image and signature into a layout of its own
    for tag in ("1.0.0", sig_tag):
        copy(f"oci:{ours}:{repository}{tag}", f"oci:{theirs}:{repository}{tag}")
    assert ref_names(theirs) == ref_names(ours)

    # we verify and pull what skopeo wrote, through the same words
    reg2, ref2 = open_target(f"oci:{theirs}:{repository}1.0.0")
    verified = verify_artifact(reg2, ref2, PublicKeyPolicy(public_key_pem(key)))
    assert verified.manifest_digest == digest
    assert reg2.get_manifest(ref2.with_tag(sig_tag)).digest == sig_digest
    pulled = pull_artifact(reg2, verified.reference, ModuleStore(tmp_path / "state"))
    assert pulled.composefs_digest == verified.composefs_digest


def test_agent_source_reads_a_many_module_layout_skopeo_wrote(tmp_path: Path) -> None:
    """The agent's ``modules_registry = "oci:/DIR"`` looks up ``<module>:<tag>`` ref names."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    key = generate_private_key()
    digests = {}
    for name in ("chrony", "nginx"):
        art = make_artifact(tmp_path / name, small_files(name, count=2), name=name)
        reg, ref = open_target(f"oci:{ours}:{name}:1.0.0")
        digests[name] = push_artifact(reg, ref, art)
        sign_artifact(reg, ref, key)
        for tag in ("1.0.0", signature_tag(str(digests[name]))):
            copy(f"oci:{ours}:{name}:{tag}", f"oci:{theirs}:{name}:{tag}")
    source = open_layout_source(f"oci:{theirs}")
    assert source.list_tags("chrony") == sorted(["1.0.0", signature_tag(str(digests["chrony"]))])
    for name, digest in digests.items():
        verified = verify_artifact(
            source, parse_reference(f"{name}:1.0.0"), PublicKeyPolicy(public_key_pem(key))
        )
        assert verified.name == name and verified.manifest_digest == digest


def test_bare_and_named_repositories_do_not_see_each_others_tags(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", small_files("b", count=1), name="demo")
    one, ref_one = open_target(f"oci:{tmp_path / 'l'}:1.0.0")
    push_artifact(one, ref_one, art)
    many, ref_many = open_target(f"oci:{tmp_path / 'l'}:demo:2.0.0")
    push_artifact(many, ref_many, art)
    assert ref_names(tmp_path / "l") == ["1.0.0", "demo:2.0.0"]
    assert one.list_tags("module") == ["1.0.0"]
    assert many.list_tags("demo") == ["2.0.0"]
    assert many.list_tags("module") == []  # "module:1.0.0" was never written
