"""``powernode supply attest``: SLSA provenance of a built artifact, signed with the module's
cosign key, attached with the SBOM as referrers (and in cosign's .att form), verifiable."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from powernode.cli.module.evidence import app
from powernode.oci import referrers as refs
from powernode.oci.layout import LayoutRegistry
from powernode.signing.keys import ScryptParams, generate_private_key, write_key_pair
from powernode.signing.policy import PublicKeyPolicy
from powernode.supply import attest, dsse, provenance
from tests.oci.test_referrers import push_subject
from tests.publish.artifacts import make_artifact, small_files

runner = CliRunner()
FAST = ScryptParams(n=1024, r=8, p=1)


def test_attest_a_built_artifact(tmp_path: Path) -> None:
    out = make_artifact(tmp_path / "out", small_files())
    config = json.loads((out / "module.json").read_bytes())
    config["packages"] = ["libc6=2.36-9+deb12u10", "zlib1g=1:1.2.13.dfsg-1"]
    config["package_source"] = {"suite": "bookworm", "tool": "mmdebstrap"}
    (out / "module.json").write_text(json.dumps(config))
    (out / "package-list.txt").write_text("\n".join(config["packages"]) + "\n")
    lock = tmp_path / "requirements.txt"
    lock.write_text("cryptography==44.0.0\n")
    key = generate_private_key()
    write_key_pair(tmp_path / "cosign.key", tmp_path / "cosign.pub", key, "pw", params=FAST)
    layout = tmp_path / "layout"
    reg = LayoutRegistry(layout)
    subject = push_subject(reg, "modules/demo")
    args = [
        "attest", str(out), "--registry", str(layout), "--ref", f"modules/demo@{subject}",
        "--key", str(tmp_path / "cosign.key"), "--builder", "https://ci.test/b@v1",
        "--lock", str(lock), "--source", f"git+https://git.test/demo={'sha256:' + '77' * 32}",
        "--cosign-att", "--envelope-out", str(tmp_path / "prov.json"),
    ]  # fmt: skip
    r = runner.invoke(app, args, env={"COSIGN_PASSWORD": "pw"})
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert set(done) == {"provenance", "sbom", "cosign_att"}
    trust = PublicKeyPolicy((tmp_path / "cosign.pub").read_bytes())
    found = attest.verify_provenance(reg, "modules/demo", subject, trust)
    assert [v.source.split(" ")[0] for v in found] == ["referrer", "cosign"]
    prov = found[0].provenance
    assert prov.builder_id == "https://ci.test/b@v1"
    by_name = {d.name: d for d in prov.dependencies if d.name}
    assert by_name["lock"].digest["sha256"] and by_name["packages"].digest["sha256"]
    assert by_name["source"].uri == "git+https://git.test/demo"
    uris = {d.uri for d in prov.dependencies}
    assert "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?distro=debian-12" in uris
    assert prov.parameters["module"] == "demo"
    assert [d["artifactType"] for d in refs.referrers(reg, "modules/demo", subject)] == [
        refs.PROVENANCE_TYPE,
        refs.SBOM_TYPE,
    ]
    env = dsse.parse((tmp_path / "prov.json").read_bytes())
    assert provenance.parse(env).subject_digest == str(subject)
    # Wrong passphrase, bad reference: an error, nothing attached.
    r = runner.invoke(app, args, env={"COSIGN_PASSWORD": "nope"})
    assert r.exit_code == 1 and "passphrase" in r.stderr.lower()
    bad = [a if not a.startswith("modules/demo@") else "modules/demo" for a in args]
    r = runner.invoke(app, bad, env={"COSIGN_PASSWORD": "pw"})
    assert r.exit_code == 2 and "REPOSITORY@sha256" in r.output
