"""``powernode supply`` against a real server: policy, SBOM, feed file, evidence, refusal."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from powernode.cli.module.evidence import app as supply_app
from tests.platform.test_cli import server, system, token
from tests.supply import fixtures as fx

__all__ = ["server"]
runner = CliRunner()


def supply(url: str, tok: str, *args: str, code: int = 0) -> str:
    r = runner.invoke(supply_app, ["--url", url, "--token", tok, *args])
    assert r.exit_code == code, r.output
    return r.stdout if code == 0 else r.stderr


def test_policy_evidence_feed_and_refusal_through_the_cli(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = server
    admin = token(data, "write", "promote-live")
    system(url, admin, "create-module", "sc-redis", "--category", "userland")
    system(url, admin, "register-module-version", "sc-redis", "0.1.0")
    vid = system(url, admin, "list-module-versions", "sc-redis")["versions"][0]["id"]
    policy = tmp_path / "policy.yaml"
    policy.write_text("staging:\n  sbom: {}\n  vulnerabilities: {block: [critical]}\n")
    assert supply(url, admin, "set-policy", "--module", "sc-redis", str(policy)) == "policy set\n"
    shown = json.loads(supply(url, admin, "show-policy", "--module", "sc-redis"))
    assert shown["policy"]["staging"]["vulnerabilities"]["block"] == ["critical"]

    out = supply(url, admin, "evidence", vid)
    assert "staging: REFUSED (module sc-redis)" in out
    assert "[FAIL] sbom: no SBOM is attached" in out
    err = system(url, admin, "promote-module-version", vid, "--to", "staging", code=1)
    assert "409" in err and "no SBOM is attached" in err

    sbom = tmp_path / "sbom.cdx.json"
    sbom.write_text(json.dumps(fx.sbom()))
    assert "attached sbom" in supply(url, admin, "attach", vid, str(sbom), "--kind", "sbom")
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        json.dumps(fx.osv_record("DEBIAN-CVE-2026-9000", "openssl", None, severity="CRITICAL"))
        + "\n"
    )
    out = supply(url, admin, "import-feed", str(feed))
    assert out.startswith("1 records (1 changed); 1 versions re-matched: +2 -0 findings")
    out = supply(url, admin, "evidence", vid)
    assert "DEBIAN-CVE-2026-9000 critical openssl 3.0.11-1~deb12u2" in out
    assert "[FAIL] vulnerabilities" in out and "[pass] sbom" in out
    err = system(url, admin, "promote-module-version", vid, "--to", "staging", code=1)
    assert "DEBIAN-CVE-2026-9000 (critical" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("staging:\n  sbom: {}\n  nonsense: 1\n")
    err = supply(url, admin, "set-policy", "--module", "sc-redis", str(bad), code=1)
    assert "422" in err and "staging.nonsense" in err
    err = supply(
        url, admin, "attach", vid, str(tmp_path / "missing.json"), "--kind", "sbom", code=2
    )
    assert "cannot read" in err


def test_a_feed_over_the_request_limit_goes_in_batches(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = server
    admin = token(data, "write")
    feed = tmp_path / "big.json"
    records = [fx.osv_record(f"DEBIAN-CVE-2026-{i:05d}", f"pkg{i}", "1.0-1") for i in range(4000)]
    feed.write_text(json.dumps(records))
    assert feed.stat().st_size > 1 << 20  # over the platform's default max_body_bytes
    out = supply(url, admin, "import-feed", str(feed))
    assert out.startswith("4000 records (4000 changed)")
    assert supply(url, admin, "import-feed", str(feed)).startswith("4000 records (0 changed)")
