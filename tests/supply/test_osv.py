"""OSV matching: dpkg ordering, range events, ecosystems, severities, feed formats."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from powernode.supply import osv
from powernode.supply.cvss import CvssError, base_score, rating
from tests.supply import fixtures as fx


def entry(*events: tuple[str, str], versions: frozenset[str] = frozenset()) -> osv.Affected:
    return osv.Affected("Debian:12", "p", events, versions)


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("1.0~rc1-1", True),  # ~ sorts before the release: string compare gets this wrong
        ("1.0-1", False),
        ("1.0-1~deb12u1", True),
        ("0.9-9", True),
        ("1:0.1-1", False),  # the epoch outranks everything
        ("1.0+dfsg-1", False),
    ],
)
def test_dpkg_ordering(version: str, affected: bool) -> None:
    assert osv.affects(entry(("introduced", "0"), ("fixed", "1.0-1")), version) is affected


def test_introduced_last_affected_and_versions_list() -> None:
    e = entry(("introduced", "2.0-1"), ("last_affected", "2.4-1"), ("introduced", "3.0-1"))
    assert [osv.affects(e, v) for v in ("1.9-1", "2.0-1", "2.4-1", "2.5-1", "3.1-1")] == [
        False,
        True,
        True,
        False,
        True,
    ]
    listed = entry(versions=frozenset({"1.2-3"}))
    assert osv.affects(listed, "1.2-3") and not osv.affects(listed, "1.2-4")


def test_index_matches_by_name_source_and_release() -> None:
    recs = osv.parse_records(
        [
            fx.osv_record("A-1", "openssl", "3.0.12-1", severity="HIGH"),
            fx.osv_record("A-2", "openssl", "3.0.12-1", severity="HIGH", ecosystem="Debian:11"),
            fx.osv_record("A-3", "openssl", "3.0.12-1", severity="HIGH", ecosystem="Debian"),
            fx.osv_record("A-4", "openssl", "3.0.12-1", severity="HIGH", ecosystem="Ubuntu:22.04"),
        ]
    )
    idx = osv.FeedIndex(recs)
    pkgs = [
        osv.Pkg("libssl3", "3.0.11-1~deb12u2", "debian-12", "openssl"),
        osv.Pkg("openssl", "3.0.11-1~deb12u2", "bookworm"),
    ]
    got = {(m.record_id, m.package) for m in idx.match(pkgs)}
    assert got == {("A-1", "libssl3"), ("A-1", "openssl"), ("A-3", "libssl3"), ("A-3", "openssl")}
    assert {m.fixed for m in idx.match(pkgs)} == {"3.0.12-1"}


def test_severity_sources() -> None:
    def sev(**kw: str) -> str:
        return osv.parse_record(fx.osv_record("S-1", "p", None, **kw)).severity  # type: ignore[arg-type]

    assert sev(severity="Moderate") == "medium"
    assert sev(cvss=fx.CRITICAL_CVSS) == "critical"
    assert sev(cvss="CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N") == "medium"
    assert osv.parse_record(fx.osv_record("S-2", "p", None)).severity == "unknown"
    urgency = fx.osv_record("S-3", "p", None)
    urgency["affected"][0]["ecosystem_specific"] = {"urgency": "high"}
    assert osv.parse_record(urgency).severity == "high"


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
        ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ],
)
def test_cvss_scores(vector: str, score: float) -> None:
    assert base_score(vector) == score


def test_cvss_ratings_and_errors() -> None:
    assert [rating(s) for s in (0, 3.9, 4.0, 7.0, 9.0)] == [
        "none",
        "low",
        "medium",
        "high",
        "critical",
    ]
    with pytest.raises(CvssError, match="not a CVSS v3"):
        base_score("AV:N/AC:L")
    with pytest.raises(CvssError, match="base metric"):
        base_score("CVSS:3.1/AV:N")


def test_feed_formats(tmp_path: Path) -> None:
    recs = [fx.osv_record(f"F-{i}", "p", None) for i in range(3)]
    as_list = json.dumps(recs).encode()
    lines = b"\n".join(json.dumps(r).encode() for r in recs)
    wrapped = json.dumps({"vulns": recs}).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for r in recs:
            z.writestr(f"{r['id']}.json", json.dumps(r))
    for data in (as_list, lines, wrapped, buf.getvalue()):
        assert [d["id"] for d in osv.read_documents(data)] == ["F-0", "F-1", "F-2"]  # type: ignore[index]
    for r in recs:
        (tmp_path / f"{r['id']}.json").write_text(json.dumps(r))
    assert sorted(r.id for r in osv.read_path(tmp_path)) == ["F-0", "F-1", "F-2"]
    with pytest.raises(osv.FeedError, match="neither JSON nor JSON lines"):
        list(osv.read_documents(b"{nope"))
    with pytest.raises(osv.FeedError, match="not a readable zip"):
        list(osv.read_documents(b"PK\x03\x04garbage"))


def test_distro_release() -> None:
    assert osv.distro_release("debian-12") == "12"
    assert osv.distro_release("bookworm") == "12"
    assert osv.distro_release("debian-12.4") == "12"
    assert osv.distro_release(None) is None


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"id": "X-1"}, "X-1: no modified"),
        ({"modified": "t"}, "has no id"),
        (
            {"id": "X-2", "modified": "t", "affected": [{"ranges": []}]},
            "affected[0] has no package",
        ),
        ([], "is a JSON object"),
    ],
)
def test_bad_records(doc: object, fragment: str) -> None:
    with pytest.raises(osv.FeedError, match=re.escape(fragment)):
        osv.parse_record(doc)


def test_malformed_optional_fields_match_nothing() -> None:
    rec = fx.osv_record("M-1", "p", None)
    rec["aliases"] = 5
    rec["affected"][0]["ranges"] = "x"
    rec["affected"][0]["versions"] = 7
    parsed = osv.parse_record(rec)
    assert parsed.aliases == () and parsed.affected[0].events == ()
