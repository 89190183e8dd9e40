"""`powernode module init`: the scaffold validates, builds, and never overwrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from powernode.cli.main import app
from powernode.errors import ConfigError
from powernode.toolchain.build import build_module
from powernode.toolchain.localrepo import load_repo
from powernode.toolchain.scaffold import init_module

EPOCH = 1_700_000_000


def test_scaffold_validates_and_builds_without_packages(tmp_path: Path) -> None:
    repo = tmp_path / "my-app"
    written = init_module("my-app", repo)
    assert {str(p.relative_to(repo)) for p in written} == {
        "manifest.yaml",
        "README.md",
        "rootfs/etc/my-app/README",
        ".github/workflows/module.yml",
        ".gitea/workflows/module.yml",
    }
    loaded = load_repo(repo)
    assert loaded.name == "my-app" and loaded.warnings == ()
    assert loaded.shipped() == ["/etc/", "/etc/my-app/", "/etc/my-app/README"]
    res = build_module(
        repo, tmp_path / "out", version="0.1.0", source_date_epoch=EPOCH, packages=False
    )
    assert res.files == 1 and res.composefs_digest.startswith("sha256:")
    assert json.loads((tmp_path / "out/module.json").read_bytes())["name"] == "my-app"


@pytest.mark.parametrize("ci", ["github", "gitea", "both"])
def test_ci_workflow_runs_build_push_sign_on_tags(tmp_path: Path, ci: str) -> None:
    repo = tmp_path / "m"
    init_module("m", repo, ci=ci)  # type: ignore[arg-type]
    found = sorted(str(p.relative_to(repo)) for p in repo.rglob("module.yml"))
    expect = {"github": [".github/workflows/module.yml"], "gitea": [".gitea/workflows/module.yml"]}
    assert found == expect.get(ci, [".gitea/workflows/module.yml", ".github/workflows/module.yml"])
    flow = yaml.safe_load((repo / found[0]).read_text())
    assert flow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key "on" as True
    runs = " ".join(s.get("run", "") for s in flow["jobs"]["publish"]["steps"])
    for command in ("module validate", "module build", "module push", "module sign"):
        assert f"powernode {command}" in runs


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "m"
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/module.yml").write_text("mine\n")
    with pytest.raises(ConfigError, match=r"refusing to overwrite .*module.yml"):
        init_module("m", repo)
    assert (repo / ".github/workflows/module.yml").read_text() == "mine\n"
    assert not (repo / "manifest.yaml").exists()


@pytest.mark.parametrize("name", ["My-App", "-x", "a/b", ""])
def test_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="is not a slug"):
        init_module(name, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_init(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        app, ["module", "init", "svc", "--dir", str(tmp_path / "svc"), "--ci", "gitea"]
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "svc/.gitea/workflows/module.yml").is_file()
    again = runner.invoke(app, ["module", "init", "svc", "--dir", str(tmp_path / "svc")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
    bad = runner.invoke(app, ["module", "init", "svc", "--ci", "jenkins"])
    assert bad.exit_code == 2
