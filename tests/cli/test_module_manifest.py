"""`powernode module validate` and `powernode module schema`, through Typer's runner.

The commands are mounted on a bare Typer app through ``register`` so these tests do not
depend on the rest of the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from powernode.cli.base import App
from powernode.cli.module import manifest as module_manifest
from powernode.core.manifest import schema_text


def _app() -> typer.Typer:
    app = App()
    module_manifest.register(app)
    return app


APP = _app()
RUNNER = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"

GOOD = "schema_version: 1\nname: good\nfile_spec: ['/etc/good/**']\n"
BAD = "schema_version: 1\nname: Bad\nfile_spec: ['/etc/[x']\ncolour: blue\n"
LEGACY = "schema_version: 1\nidentity:\n  name: old\n  variety: config\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "manifest.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "legacy.yaml").write_text(LEGACY)
    return tmp_path


def test_valid_repo_dir_exits_0(repo: Path) -> None:
    r = RUNNER.invoke(APP, ["validate", str(repo / "good")])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{repo / 'good' / 'manifest.yaml'}: valid manifest of module 'good'\n"
    assert r.stderr == ""


def test_invalid_file_prints_every_problem_to_stderr_and_exits_1(repo: Path) -> None:
    r = RUNNER.invoke(APP, ["validate", str(repo / "good"), str(repo / "bad.yaml")])
    assert r.exit_code == 1
    f = repo / "bad.yaml"
    assert r.stderr.splitlines() == [
        f"{f}:2:7: name: 'Bad' is not a lowercase slug: a-z, 0-9 and '-', not starting with "
        "'-', at most 63 characters",
        f"{f}:3:19: file_spec[0]: glob '/etc/[x' at offset 5: '[' has no closing ']' (write "
        "'\\[' for a literal '[')",
        f"{f}:4:1: colour: unknown key 'colour'; known keys: allow, dependencies, "
        "description, display_name, file_spec, init_actions, license, mask, migrations, name, "
        "package_spec, protected_spec, schema_version, templates",
        f"{f}: invalid: 3 problems",
    ]
    assert "valid manifest of module 'good'" in r.stdout  # the good one is still reported


def test_a_pattern_that_can_never_match_is_refused_with_line_and_column(tmp_path: Path) -> None:
    """Regression (issue 13 item 14): this validated as 'valid manifest'."""
    f = tmp_path / "manifest.yaml"
    f.write_text('schema_version: 1\nname: ssh\nfile_spec: ["etc/../../root/.ssh/**"]\n')
    r = RUNNER.invoke(APP, ["validate", str(f)])
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines()[0] == (
        f"{f}:3:18: file_spec[0]: glob 'etc/../../root/.ssh/**' at offset 4: path component "
        "'..' (artifact paths are normalised, so it can never match; write the path it stands "
        "for)"
    )
    assert "valid manifest" not in r.stdout


def test_warnings_are_printed_and_do_not_fail(repo: Path) -> None:
    r = RUNNER.invoke(APP, ["validate", str(repo / "legacy.yaml")])
    assert r.exit_code == 0
    f = repo / "legacy.yaml"
    assert r.stderr.splitlines() == [
        f"{f}:3:3: warning: identity.name: legacy form: write it as the top-level key 'name'",
        f"{f}:4:3: warning: identity.variety: not a manifest field: it moved to platform "
        "registration (the NodeModule row); kept only as a registration hint",
    ]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        pytest.param("absent", "absent: no such file or directory", id="missing-path"),
        pytest.param(".", ": directory has no manifest.yaml", id="dir-without-manifest"),
    ],
)
def test_missing_inputs_exit_1_before_reading_anything(repo: Path, arg: str, message: str) -> None:
    """Bad input exits 1 as in every command (issue 12: validate exited 2); usage is 2."""
    r = RUNNER.invoke(APP, ["validate", str(repo / "bad.yaml"), str(repo / arg)])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Bad" not in r.stderr  # bad.yaml was not checked


def test_no_path_is_a_usage_error() -> None:
    r = RUNNER.invoke(APP, ["validate"])
    assert r.exit_code == 2
    assert "Missing argument" in r.stderr


def test_bad_default_owner_is_a_usage_error(repo: Path) -> None:
    r = RUNNER.invoke(APP, ["validate", "--default-owner", "Acme", str(repo / "legacy.yaml")])
    assert r.exit_code == 2
    assert "--default-owner: default owner 'Acme' is not a lowercase slug" in r.stderr


def test_json_output(repo: Path) -> None:
    r = RUNNER.invoke(
        APP,
        [
            "validate",
            "--json",
            str(repo / "good"),
            str(repo / "bad.yaml"),
            str(repo / "legacy.yaml"),
        ],
    )
    assert r.exit_code == 1
    assert r.stderr == ""
    good, bad, legacy = json.loads(r.stdout)
    assert good["valid"] is True and good["name"] == "good"
    assert good["manifest"]["file_spec"] == ["/etc/good/**"]
    assert bad["valid"] is False and bad["manifest"] is None
    assert [(p["line"], p["column"], p["path"]) for p in bad["problems"]] == [
        (2, 7, "name"),
        (3, 19, "file_spec[0]"),
        (4, 1, "colour"),
    ]
    assert legacy["valid"] is True
    assert legacy["registration_hints"] == {"variety": "config"}
    assert [w["path"] for w in legacy["warnings"]] == ["identity.name", "identity.variety"]


def test_every_example_module_validates() -> None:
    dirs = sorted(str(p) for p in EXAMPLES.iterdir() if p.is_dir())
    r = RUNNER.invoke(APP, ["validate", *dirs])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("valid manifest of module") == len(dirs)


def test_schema_prints_the_shipped_schema() -> None:
    r = RUNNER.invoke(APP, ["schema"])
    assert r.exit_code == 0
    assert r.stdout == schema_text()
    assert json.loads(r.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"
