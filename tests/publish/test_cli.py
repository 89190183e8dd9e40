"""`powernode module push|pull|sign|verify|generate-key-pair` end to end."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.main import app
from powernode.oci.layout import LayoutRegistry
from powernode.oci.refs import parse_reference
from powernode.publish.target import open_target, registry_url
from powernode.signing import read_private_key
from tests.oci.registry_fixture import RunningRegistry
from tests.publish.artifacts import make_artifact, small_files
from tests.signing.testca import DAY, FakeCA, pem
from tests.signing.testlog import FakeLog

NOW = datetime.datetime.now(datetime.UTC)
MINUTE = datetime.timedelta(minutes=1)

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["module", *args], env=env)
    return result.exit_code, result.output


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    code, out = cli("generate-key-pair", env={"COSIGN_PASSWORD": "hunter2"})
    assert code == 0, out
    assert (tmp_path / "cosign.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED COSIGN")
    assert (tmp_path / "cosign.key").stat().st_mode & 0o777 == 0o600
    return tmp_path


def test_layout_push_sign_verify_pull(tmp_path: Path, keys: Path) -> None:
    art = make_artifact(tmp_path / "art", small_files())
    ref = f"oci:{tmp_path / 'layout'}:1.0.0"
    code, out = cli("push", str(art), ref, "--json")
    assert code == 0, out
    digest = json.loads(out)["digest"]
    code, out = cli("sign", ref, "--key", "cosign.key", env={"COSIGN_PASSWORD": "hunter2"})
    assert code == 0 and "Signed" in out, out
    code, out = cli("verify", ref, "--key", "cosign.pub", "--json")
    assert code == 0, out
    assert json.loads(out)["digest"] == digest
    code, out = cli("pull", ref, str(tmp_path / "state"), "--json")
    assert code == 0, out
    assert json.loads(out)["objects_fetched"] == 6
    assert Path(json.loads(out)["image"]).is_file()


def test_wrong_passphrase_writes_nothing(tmp_path: Path, keys: Path) -> None:
    art = make_artifact(tmp_path / "art", small_files())
    ref = f"oci:{tmp_path / 'layout'}:demo:1.0.0"
    assert cli("push", str(art), ref)[0] == 0
    before = sorted(p.name for p in (tmp_path / "layout" / "blobs" / "sha256").iterdir())
    code, out = cli("sign", ref, "--key", "cosign.key", env={"COSIGN_PASSWORD": "wrong"})
    assert code == 1
    assert "wrong passphrase for cosign.key" in out
    after = sorted(p.name for p in (tmp_path / "layout" / "blobs" / "sha256").iterdir())
    assert before == after
    assert LayoutRegistry(tmp_path / "layout").list_tags("demo") == ["1.0.0"]


def test_verify_wrong_key_and_missing_policy(tmp_path: Path, keys: Path) -> None:
    art = make_artifact(tmp_path / "art", small_files())
    ref = f"oci:{tmp_path / 'layout'}:1.0.0"
    assert cli("push", str(art), ref)[0] == 0
    code, out = cli("verify", ref, "--key", "cosign.pub")
    assert code == 1 and "has no signatures" in out
    code, out = cli("verify", ref)
    assert code == 2 and "--certificate-identity-regexp" in out


def test_keyless_verify_needs_a_transparency_log_or_the_unsafe_flag(
    tmp_path: Path, keys: Path
) -> None:
    """Issue 13 item 10: keyless verify checks at the log's signed time, or says it does not."""
    # The unsafe path checks at the real current time: the certificate is valid for a
    # day around when this test runs (NOW is taken at import; the suite may run long).
    now = datetime.datetime.now(datetime.UTC)
    ca = FakeCA(not_before=now - DAY, not_after=now + 2 * DAY)
    key = read_private_key(keys / "cosign.key", "hunter2")
    (tmp_path / "leaf.pem").write_bytes(
        pem(ca.leaf(key, not_before=now - 5 * MINUTE, not_after=now + DAY))  # type: ignore[arg-type]
    )
    (tmp_path / "chain.pem").write_bytes(ca.chain_pem)
    (tmp_path / "root.pem").write_bytes(ca.root_pem)
    (tmp_path / "log.pem").write_bytes(FakeLog().public_pem)
    ref = f"oci:{tmp_path / 'layout'}:1.0.0"
    assert cli("push", str(make_artifact(tmp_path / "art", small_files())), ref)[0] == 0
    code, out = cli(
        "sign", ref, "--key", "cosign.key", "--certificate", "leaf.pem",
        "--certificate-chain", "chain.pem", env={"COSIGN_PASSWORD": "hunter2"},
    )  # fmt: skip
    assert code == 0, out
    keyless = [
        *("verify", ref, "--certificate-identity-regexp", ".*"),
        *("--certificate-oidc-issuer-regexp", ".*", "--certificate-chain", "root.pem"),
    ]
    code, out = cli(*keyless)
    assert code == 2 and "--rekor-public-key" in out
    code, out = cli(*keyless, "--rekor-public-key", "log.pem")
    assert code == 1 and "carries no transparency log bundle" in " ".join(out.split()), out
    code, out = cli(*keyless, "--insecure-ignore-tlog", "--json")
    assert code == 0, out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("oci:/x", "write oci:<layout-dir>"),
        ("acme/chrony:1.0", "names no registry"),
        ("127.0.0.1:5000/Bad:1", "invalid repository name"),
    ],
)
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        open_target(text)


def test_reference_forms(tmp_path: Path) -> None:
    reg, ref = open_target(f"oci:{tmp_path}:acme/chrony:1.0")
    assert isinstance(reg, LayoutRegistry) and ref == parse_reference("acme/chrony:1.0")
    bare, ref = open_target(f"oci:{tmp_path}:1.0")
    assert ref == parse_reference("module:1.0")  # the name a one-module layout is signed under
    assert isinstance(bare, LayoutRegistry) and bare.ref_name(ref.repository, "1.0") == "1.0"
    assert reg.ref_name("acme/chrony", "1.0") == "acme/chrony:1.0"  # skopeo's ref name too
    assert registry_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry_url("localhost:5000") == "http://localhost:5000"
    assert registry_url("registry.example.com") == "https://registry.example.com"
    assert registry_url("registry.example.com", plain_http=True) == "http://registry.example.com"


@pytest.mark.registry
def test_registry_push_pull(tmp_path: Path, oci_registry: RunningRegistry) -> None:
    art = make_artifact(tmp_path / "art", small_files("cli"))
    ref = f"{oci_registry.url.removeprefix('http://')}/cli/demo:1.0.0"
    code, out = cli("push", str(art), ref, "--json")
    assert code == 0, out
    code, out = cli("pull", ref, str(tmp_path / "state"), "--json")
    assert code == 0, out
    assert json.loads(out)["objects_fetched"] == 6
    code, out = cli("pull", ref.replace("1.0.0", "9.9.9"), str(tmp_path / "state"))
    assert code == 1 and "no manifest" in out
