"""Every command of both CLIs keeps the house conventions (issue 12 item 7).

The walk loads every lazily listed group and command, so a command added
later is checked without touching this file: help text on each, plain
metavars in each ``--help``, usage errors exit 2, and the rough edges the
issue lists answered with one line and the documented exit status
(README, "Exit status": 0 ok, 1 failed or refused, 2 usage).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from powernode.cli.agent import app as agent_app
from powernode.cli.main import app

ROOTS = {"powernode": app, "powernode-agent": agent_app}
RUNNER = CliRunner()
# typer's own help decorations the CLI must not show: `<str>`, `<bool>`, `{ref}`.
TYPER_METAVAR = re.compile(r"<(str|bool|path|int|float|list\[[a-z]+\])>|\{[a-z_]+\}")


def _walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    commands = getattr(cmd, "commands", None)
    if commands is not None:
        for name in list(commands):
            yield from _walk(commands[name], (*path, name))


def _every_command() -> list[Any]:
    out = []
    for prog, root in ROOTS.items():
        for path, cmd in _walk(typer.main.get_command(root), (prog,)):
            out.append(pytest.param(path, cmd, id=" ".join(path)))
    return out


COMMANDS = _every_command()


def test_the_walk_reaches_every_group() -> None:
    names = {" ".join(p.values[0]) for p in COMMANDS}
    assert len(names) >= 78
    for expected in (
        "powernode system list-modules",
        "powernode module pull",
        "powernode platform token create",
        "powernode composefs info dump",
        "powernode-agent modules gc",
    ):
        assert expected in names


@pytest.mark.parametrize(("path", "cmd"), COMMANDS)
def test_every_command_has_help(path: tuple[str, ...], cmd: Any) -> None:
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"


@pytest.mark.parametrize(("path", "cmd"), COMMANDS)
def test_help_shows_plain_metavars(path: tuple[str, ...], cmd: Any) -> None:
    r = RUNNER.invoke(ROOTS[path[0]], [*path[1:], "--help"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"Usage: {' '.join(path)} ")
    assert not TYPER_METAVAR.search(r.output), r.output
    assert "--help  " in r.output and "--help <" not in r.output


@pytest.mark.parametrize(("path", "cmd"), COMMANDS)
def test_a_usage_error_exits_2(path: tuple[str, ...], cmd: Any) -> None:
    r = RUNNER.invoke(ROOTS[path[0]], [*path[1:], "--no-such-option"])
    assert r.exit_code == 2, r.output
    assert "No such option: --no-such-option" in r.output


def test_module_pull_usage_names_its_arguments() -> None:
    """Regression (issue 12): the usage line printed ``{ref} {store}``."""
    r = RUNNER.invoke(app, ["module", "pull", "--help"])
    assert "module pull [OPTIONS] REF STORE\n" in r.output
    r = RUNNER.invoke(app, ["module", "pull"])
    assert r.exit_code == 2 and "Missing argument 'REF'" in r.output


# -- foreign errors: one line, exit 1 ------------------------------------------------

UNREACHABLE_DB = "postgresql://powernode@127.0.0.1:1/powernode"  # port 1: refused at once


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["platform", "migrate"], id="migrate"),
        pytest.param(["platform", "serve", "--port", "1"], id="serve"),
        pytest.param(["platform", "worker", "--once"], id="worker"),
        pytest.param(["platform", "token", "create", "--name", "x", "--scope", "read"], id="token"),
    ],
)
def test_an_unreachable_database_is_one_line(args: list[str], tmp_path: Path) -> None:
    """Regression (issue 12): `platform serve` printed a 507-line traceback."""
    r = RUNNER.invoke(app, [*args, "--data-dir", str(tmp_path), "--database", UNREACHABLE_DB])
    assert r.exit_code == 1, r.output
    assert r.output.count("\n") == 1, r.output
    assert r.output.startswith(
        "error: cannot use the database postgresql://powernode@127.0.0.1:1/powernode: "
    )
    assert "check --database (or POWERNODE_DATABASE_URL)" in r.output


def test_a_sqlite_database_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    """Regression (issue 12): the directories were silently created."""
    db = tmp_path / "no" / "such" / "x.db"
    r = RUNNER.invoke(app, ["platform", "migrate", "--database", f"sqlite:///{db}"])
    assert r.exit_code == 1
    assert r.output == (
        f"error: database sqlite:///{db}: directory {db.parent} does not exist; create it "
        "first or give --database a path in an existing directory\n"
    )
    assert not (tmp_path / "no").exists()


def test_an_unusable_data_dir_is_one_line() -> None:
    r = RUNNER.invoke(app, ["platform", "migrate", "--data-dir", "/proc/no-such-dir"])
    assert r.exit_code == 1
    assert r.output == (
        "error: /proc/no-such-dir: No such file or directory; check --data-dir "
        "(or POWERNODE_DATA_DIR)\n"
    )


def test_an_uncaught_error_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    """The last resort in ``main()``: a bug or an unwrapped error, never a traceback."""
    code = (
        "import powernode.cli.main as m\n"
        "@m.app.command('boom')\n"
        "def boom() -> None:\n"
        "    '''Fail.'''\n"
        "    raise RuntimeError('the disk caught fire')\n"
        "m.main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "boom"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "error: the disk caught fire (RuntimeError, unexpected: POWERNODE_DEBUG=1 shows the "
        "traceback)\n"
    )


# -- user words ----------------------------------------------------------------------


def test_sign_without_a_terminal_or_password_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 12): it printed only "Aborted."."""
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    key = tmp_path / "cosign.key"
    key.write_text("not read before the password\n")
    r = RUNNER.invoke(app, ["module", "sign", f"oci:{tmp_path}/layout:m:1", "--key", str(key)])
    assert r.exit_code == 1
    assert r.output == (
        "error: the private key's password is needed: set COSIGN_PASSWORD, or run this on a "
        "terminal to be asked for it\n"
    )


def test_an_unknown_tag_names_the_tags_there_are(tmp_path: Path) -> None:
    """Regression (issue 12): the error said "see list_tags()"."""
    from powernode.oci.layout import REF_NAME_ANNOTATION, LayoutRegistry

    LayoutRegistry(tmp_path / "layout")  # an empty layout, then one tag by hand
    index_file = tmp_path / "layout" / "index.json"
    index = json.loads(index_file.read_text())
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 2,
            "annotations": {REF_NAME_ANNOTATION: "m:1.0.0"},
        }
    )
    index_file.write_text(json.dumps(index))
    store = tmp_path / "store"
    r = RUNNER.invoke(app, ["module", "pull", f"oci:{tmp_path}/layout:m:2.0.0", str(store)])
    assert r.exit_code == 1
    assert "no tag 'm:2.0.0' in index.json; the layout holds m:1.0.0" in r.output
    assert "list_tags" not in r.output


def test_a_missing_key_file_is_bad_input_not_usage(tmp_path: Path) -> None:
    """A file that cannot be read exits 1 like every missing input; usage stays 2."""
    missing = tmp_path / "cosign.pub"
    r = RUNNER.invoke(app, ["module", "verify", f"oci:{tmp_path}:m:1", "--key", str(missing)])
    assert r.exit_code == 1
    assert r.output == (
        f"error: {missing}: cannot read the public key: No such file or directory\n"
    )
    r = RUNNER.invoke(app, ["module", "verify", f"oci:{tmp_path}:m:1"])
    assert r.exit_code == 2 and "give --key cosign.pub, or" in r.output


def test_a_reference_with_a_scheme_says_how_to_write_it(tmp_path: Path) -> None:
    """It said "invalid repository name '/127.0.0.1:5000/x/y'"."""
    r = RUNNER.invoke(app, ["module", "pull", "https://127.0.0.1:5000/x/y:1", str(tmp_path)])
    assert r.exit_code == 1
    assert r.output == (
        "error: 'https://127.0.0.1:5000/x/y:1': write the reference without a scheme, "
        "'127.0.0.1:5000/x/y:1' (HTTP is automatic for loopback registries; --plain-http "
        "for others)\n"
    )


def test_a_file_system_error_no_command_caught_names_the_path(tmp_path: Path) -> None:
    code = (
        "import powernode.cli.agent as m\n"
        "@m.app.command('boom')\n"
        "def boom() -> None:\n"
        "    '''Fail.'''\n"
        f"    open({str(tmp_path / 'absent')!r})\n"
        "m.main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "boom"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr == f"error: {tmp_path / 'absent'}: No such file or directory\n"
