"""`powernode module build`, the config-only path (rootfs/ → artifact, no mmdebstrap)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.main import app
from powernode.errors import ConfigError, ManifestError, SourceTreeError
from powernode.publish.format import parse_module_config
from powernode.toolchain.build import build_module
from powernode.verity.composefs.reader import Entry, open_image
from powernode.verity.fsverity import fsverity_digest

EPOCH = 1_700_000_000
MANIFEST = """\
schema_version: 1
name: demo-app
file_spec:
  - "/etc/app/**"
  - "/usr/bin/app"
mask: ["/etc/app/skip.conf"]
"""
FILES: dict[str, bytes] = {
    "etc/app/a.conf": b"listen 80\n",
    "etc/app/skip.conf": b"masked\n",
    "etc/app/big.dat": bytes(range(256)) * 40,
    "etc/other.conf": b"not selected\n",
    "usr/bin/app": b"#!/bin/sh\necho app\n" + b"x" * 5000,
}


def make_repo(
    root: Path,
    files: Mapping[str, bytes] = FILES,
    manifest: str = MANIFEST,
    *,
    seed: int = 0,
    mtime: int | None = None,
) -> Path:
    """A module repo at ``root``; ``seed`` shuffles creation order, ``mtime`` sets all mtimes."""
    root.mkdir(parents=True)
    (root / "manifest.yaml").write_text(manifest)
    items = list(files.items())
    random.Random(seed).shuffle(items)  # noqa: S311 - test order, not secrets
    for rel, data in items:
        p = root / "rootfs" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if rel.startswith("usr/bin/"):
            p.chmod(0o775)
    if mtime is not None:
        for p in [root / "rootfs", *(root / "rootfs").rglob("*")]:
            os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root


def image_entries(image: Path) -> dict[str, Entry]:
    return {e.path_str: e for e in open_image(image).walk()}


def artifact_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def build(repo: Path, out: Path, **kw: object) -> object:
    kw.setdefault("version", "1.0.0")
    kw.setdefault("source_date_epoch", EPOCH)
    return build_module(repo, out, packages=False, **kw)  # type: ignore[arg-type]


def test_artifact_follows_the_contract(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    res = build_module(repo, tmp_path / "out", version="1.2.3", source_date_epoch=EPOCH)
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert names == {
        "module.json",
        "image.cfs",
        "objects",
        "sbom.cdx.json",
        "file-list.txt",
        "package-list.txt",
        "manifest.json",
    }
    config = parse_module_config((out / "module.json").read_bytes(), "module.json")
    assert (config.name, config.version, config.source_date_epoch) == ("demo-app", "1.2.3", EPOCH)
    digest = fsverity_digest((out / "image.cfs").read_bytes()).hex()
    assert str(config.composefs_digest) == f"sha256:{digest}" == res.composefs_digest  # type: ignore[attr-defined]
    doc = json.loads((out / "module.json").read_bytes())
    assert doc["packages"] == [] and doc["package_source"] is None
    assert (out / "file-list.txt").read_text() == (
        "/etc/\n/etc/app/\n/etc/app/a.conf\n/etc/app/big.dat\n/usr/\n/usr/bin/\n/usr/bin/app\n"
    )
    assert (out / "package-list.txt").read_bytes() == b""
    assert json.loads((out / "manifest.json").read_bytes())["name"] == "demo-app"
    # objects: the two files over 64 bytes, named by their fs-verity digest
    objects = sorted(p for p in (out / "objects").rglob("*") if p.is_file())
    assert len(objects) == doc["objects"] == 2
    for p in objects:
        assert fsverity_digest(p.read_bytes()).hex() == p.parent.name + p.name
    entries = image_entries(out / "image.cfs")
    assert "/etc/app/skip.conf" not in entries and "/etc/other.conf" not in entries
    app_entry = entries["/usr/bin/app"]
    assert (app_entry.uid, app_entry.gid, app_entry.mode & 0o7777) == (0, 0, 0o755)
    assert all(e.mtime[0] == EPOCH for e in entries.values())
    sbom = json.loads((out / "sbom.cdx.json").read_bytes())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    files = {c["name"] for c in sbom["components"] if c["type"] == "file"}
    assert files == {"/etc/app/a.conf", "/etc/app/big.dat", "/usr/bin/app"}


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    # different out dirs, creation order and mtimes (before and after the epoch)
    a = make_repo(tmp_path / "a", seed=1, mtime=EPOCH - 1000)
    b = make_repo(tmp_path / "b", seed=2, mtime=EPOCH + 99_999)
    build(a, tmp_path / "out-a")
    build(b, tmp_path / "elsewhere" / "out-b")
    first = artifact_bytes(tmp_path / "out-a")
    assert first == artifact_bytes(tmp_path / "elsewhere" / "out-b")
    assert len(first) > 7


def _git(repo: Path, *args: str, when: int) -> None:
    env = {
        "GIT_AUTHOR_DATE": f"@{when} +0000",
        "GIT_COMMITTER_DATE": f"@{when} +0000",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def test_version_and_epoch_come_from_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = make_repo(tmp_path / "repo")
    _git(repo, "init", "-q", when=0)
    _git(repo, "add", ".", when=0)
    _git(repo, "commit", "-qm", "x", when=1_650_000_000)
    _git(repo, "tag", "v2.0.1", when=0)
    res = build_module(repo, tmp_path / "out", packages=False)
    doc = json.loads((tmp_path / "out" / "module.json").read_bytes())
    assert (res.version, doc["source_date_epoch"]) == ("2.0.1", 1_650_000_000)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    build_module(repo, tmp_path / "out2", packages=False)
    assert json.loads((tmp_path / "out2" / "module.json").read_bytes())["source_date_epoch"] == (
        1_600_000_000
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"source_date_epoch": EPOCH}, "no version: pass --version"),
        ({"version": "1.0.0"}, "no SOURCE_DATE_EPOCH"),
        ({"version": "1.0", "source_date_epoch": EPOCH}, "is not SemVer"),
        ({"version": "1.0.0+b1", "source_date_epoch": EPOCH}, "cannot be an OCI tag"),
    ],
    ids=["no-version", "no-epoch", "not-semver", "build-metadata"],
)
def test_version_and_epoch_are_never_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict[str, object], message: str
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = make_repo(tmp_path / "repo")  # not a git checkout
    with pytest.raises(ConfigError, match=message):
        build_module(repo, tmp_path / "out", packages=False, **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_symlink_out_of_the_tree_is_stored_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"TOP-SECRET-HOST-CONTENT" * 10)
    (tmp_path / "hostdir").mkdir()
    (tmp_path / "hostdir" / "inner").write_bytes(b"HOST-DIR-CONTENT" * 10)
    repo = make_repo(tmp_path / "repo")
    (repo / "rootfs/etc/app/leak").symlink_to(secret)
    (repo / "rootfs/etc/app/dirlink").symlink_to(tmp_path / "hostdir")
    build(repo, tmp_path / "out")
    entries = image_entries(tmp_path / "out/image.cfs")
    assert entries["/etc/app/leak"].symlink == os.fsencode(secret)
    assert entries["/etc/app/dirlink"].symlink == os.fsencode(tmp_path / "hostdir")
    assert "/etc/app/dirlink/inner" not in entries
    for data in artifact_bytes(tmp_path / "out").values():
        assert b"TOP-SECRET" not in data and b"HOST-DIR-CONTENT" not in data


def test_rootfs_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere/etc/app").mkdir(parents=True)
    (tmp_path / "elsewhere/etc/app/x.conf").write_text("host\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "manifest.yaml").write_text(MANIFEST)
    (repo / "rootfs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SourceTreeError, match=r"rootfs: is a symlink .*must be a real directory"):
        build(repo, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


DOTDOT = {
    "file_spec": MANIFEST.replace('"/usr/bin/app"', '"/usr/bin/app"\n  - "/etc/../../etc/passwd"'),
    "mask": MANIFEST.replace('mask: ["/etc/app/skip.conf"]', 'mask: ["/etc/app/./x"]'),
}
# (line, column of the bad component, component)
DOTDOT_AT = {"file_spec": (6, 11, "'..'"), "mask": (6, 18, "'.'")}


@pytest.mark.parametrize("field", sorted(DOTDOT))
def test_dotdot_pattern_is_refused_with_its_location(tmp_path: Path, field: str) -> None:
    repo = make_repo(tmp_path / "repo", manifest=DOTDOT[field])
    with pytest.raises(ManifestError) as info:
        build(repo, tmp_path / "out")
    (problem,) = info.value.problems
    line, column, component = DOTDOT_AT[field]
    assert (problem.line, problem.column) == (line, column), str(problem)
    assert problem.path == f"{field}[{2 if field == 'file_spec' else 0}]"
    assert f"path component {component}" in problem.message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_broken_manifest_names_file_line_column(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", manifest="schema_version: 1\nname: demo\nfile_spec: [\n")
    with pytest.raises(ManifestError) as info:
        build(repo, tmp_path / "out")
    problem = info.value.problems[0]
    assert problem.file.endswith("manifest.yaml") and problem.line >= 3 and problem.column >= 1
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_unreadable_file_is_named_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    victim = str(repo / "rootfs/usr/bin/app")
    real_open = os.open

    def fake_open(path: object, *args: object, **kw: object) -> int:
        if str(path) == victim:
            raise PermissionError(13, "Permission denied", path)
        return int(real_open(path, *args, **kw))  # type: ignore[call-overload]

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(SourceTreeError, match=rf"{victim}: cannot read file: Permission denied"):
        build(repo, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_setuid_file_needs_allow_setuid(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "rootfs/usr/bin/app").chmod(0o4755)
    with pytest.raises(SourceTreeError, match=r"/usr/bin/app is setuid.*allow.setuid: true"):
        build(repo, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_existing_out_is_never_overwritten(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        build(repo, out)
    assert [p.name for p in out.iterdir()] == ["keep"]


def test_dry_run_writes_lists_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    res = build_module(
        repo, tmp_path / "out", version="1.0.0", source_date_epoch=EPOCH, dry_run=True
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "file-list.txt",
        "manifest.json",
        "package-list.txt",
    ]
    assert res.dry_run and res.composefs_digest == "" and res.files == 3


def test_cli_build_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    runner = CliRunner()
    ok = runner.invoke(app, ["module", "build", str(repo), "--version", "1.0.0", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["out"] == str(repo / "dist" / "demo-app-1.0.0") and doc["files"] == 3
    again = runner.invoke(app, ["module", "build", str(repo), "--version", "1.0.0"])
    assert again.exit_code == 1 and "already exists" in again.output
    argv = ["module", "build", str(repo), "--dry-run", "--version", "1.0.0", "--out"]
    dry = runner.invoke(app, [*argv, str(tmp_path)])
    assert dry.exit_code == 1 and "already exists" in dry.output  # tmp_path exists
    dry = runner.invoke(app, [*argv, str(tmp_path / "d")])
    assert dry.exit_code == 0 and "/etc/app/a.conf" in dry.stdout
