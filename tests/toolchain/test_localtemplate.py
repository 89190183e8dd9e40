"""Local templates: the example templates compose; every bad template is refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.main import app
from powernode.errors import CompositionError, ConfigError, ResolutionError
from powernode.toolchain.localtemplate import assignments_for_repos, load_template, plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    return tmp_path / "examples"


def write_template(examples: Path, text: str) -> Path:
    p = examples / "templates" / "t.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_base_template_composes_with_the_config_takeover() -> None:
    name, assignments = load_template(EXAMPLES / "templates" / "base.yaml")
    result = plan(name, assignments)
    assert name == "base"
    order = [c.name for c in result.resolution.order]
    # Dependencies come before what requires them.
    assert order.index("system-base") < order.index("chrony") < order.index("chrony-no-pool")
    union = result.composition.to_dict()
    winners = {e["path"]: e["winner"] for e in union["union"] if e.get("winner")}
    assert winners["/etc/chrony/chrony.conf"] == "chrony-no-pool"
    assert winners["/etc/motd"] == "security-hardening"


def test_every_example_template_composes() -> None:
    for tpl in sorted((EXAMPLES / "templates").glob("*.yaml")):
        name, assignments = load_template(tpl)
        assert plan(name, assignments).composition.to_dict()["union"], tpl


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\nmodules: []\n", "modules: List should have at least 1 item"),
        ("name: T!\nmodules:\n  - path: ../modules/chrony\n", "t.yaml:1:7: name: String"),
        (
            "name: t\nmodules:\n  - path: ../modules/chrony\n    colour: red\n",
            "modules.0.colour: Extra inputs are not permitted",
        ),
        (
            "name: t\nmodules:\n  - path: ../modules/chrony\n    version: one\n",
            "modules[0]: version:",
        ),
        (
            "name: t\nmodules:\n  - path: ../modules/chrony\n    category: kernel\n",
            "unknown category 'kernel'",
        ),
        ("name: &a t\nmodules: *a\n", "alias"),
        ("name: t\nname: u\nmodules: []\n", "duplicate"),
        ("name: t\nmodules: [\n", "YAML syntax error"),
    ],
)
def test_bad_template_is_refused_with_where(examples: Path, text: str, message: str) -> None:
    path = write_template(examples, text)
    with pytest.raises(ConfigError) as exc:
        load_template(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_missing_template_file(examples: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read template"):
        load_template(examples / "templates" / "nope.yaml")


def test_oversized_template(examples: Path) -> None:
    path = write_template(examples, "# x\n" * 70_000)
    with pytest.raises(ConfigError, match="limit is"):
        load_template(path)


def test_module_assigned_twice(examples: Path) -> None:
    path = write_template(
        examples,
        "name: t\nmodules:\n  - path: ../modules/system-base\n  - path: ../modules/system-base\n",
    )
    name, assignments = load_template(path)
    with pytest.raises(ConfigError, match="'system-base' assigned twice"):
        plan(name, assignments)


def test_missing_dependency_explains_the_chain(examples: Path) -> None:
    # chrony requires system-base, which is not assigned.
    path = write_template(examples, "name: t\nmodules:\n  - path: ../modules/chrony\n")
    name, assignments = load_template(path)
    with pytest.raises(ResolutionError) as exc:
        plan(name, assignments)
    assert "system-base" in str(exc.value)
    assert "chrony" in str(exc.value)


def test_two_modules_protecting_one_path_conflict(examples: Path) -> None:
    clone = examples / "modules" / "chrony-clone"
    shutil.copytree(examples / "modules" / "chrony", clone)
    manifest = clone / "manifest.yaml"
    manifest.write_text(
        manifest.read_text().replace("name: chrony", "name: chrony-clone"), encoding="utf-8"
    )
    assignments = assignments_for_repos(
        [examples / "modules" / "system-base", examples / "modules" / "chrony", clone]
    )
    with pytest.raises(CompositionError) as exc:
        plan("t", assignments)
    text = str(exc.value) + " ".join(str(c) for c in exc.value.conflicts)
    assert "chrony-clone" in text
    assert "/etc/chrony/chrony.conf" in text


runner = CliRunner()


def test_compose_cli_json_matches_the_library() -> None:
    tpl = EXAMPLES / "templates" / "base.yaml"
    res = runner.invoke(app, ["module", "compose", "--template", str(tpl), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    name, assignments = load_template(tpl)
    expected = plan(name, assignments)
    assert data["composition"] == expected.composition.to_dict()
    assert data["install_order"] == [c.name for c in expected.resolution.order]


def test_compose_cli_without_arguments_is_a_usage_error() -> None:
    res = runner.invoke(app, ["module", "compose"])
    assert res.exit_code == 2
    assert "give module repo paths or --template FILE" in res.output


def test_compose_cli_reports_a_conflict_and_exits_1(examples: Path) -> None:
    clone = examples / "modules" / "chrony-clone"
    shutil.copytree(examples / "modules" / "chrony", clone)
    m = clone / "manifest.yaml"
    m.write_text(m.read_text().replace("name: chrony", "name: chrony-clone"), encoding="utf-8")
    mods = examples / "modules"
    args = [str(mods / "system-base"), str(clone), str(mods / "chrony")]
    res = runner.invoke(app, ["module", "compose", *args])
    assert res.exit_code == 1
    assert "composition failed" in res.output
    assert "conflict:" in res.output


def test_demo_validates_and_composes_every_example_template() -> None:
    res = runner.invoke(app, ["demo", "--examples", str(EXAMPLES)])
    assert res.exit_code == 0, res.output
    for tpl in sorted((EXAMPLES / "templates").glob("*.yaml")):
        assert f"compose template {tpl.stem!r}" in res.output
    for mod in sorted((EXAMPLES / "modules").iterdir()):
        assert "valid" in res.output and mod.name in res.output
    assert "demo finished" in res.output


def test_demo_fails_cleanly_on_a_broken_example(examples: Path) -> None:
    (examples / "modules" / "chrony" / "manifest.yaml").write_text("name: [\n", encoding="utf-8")
    res = runner.invoke(app, ["demo", "--examples", str(examples)])
    assert res.exit_code == 1
    assert "demo failed" in res.output
    assert "manifest.yaml" in res.output
