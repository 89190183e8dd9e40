"""`powernode verity digest` prints what `fsverity digest` prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from powernode.cli.verity import app
from powernode.run import run
from tests.conftest import require_tool

RUNNER = CliRunner()
# Mounted as main.py mounts it: a lone-command Typer app invoked directly
# would drop the `digest` subcommand name.
APP = typer.Typer()
APP.add_typer(app, name="verity")


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    out = []
    for size in (0, 5, 4096, 70_000):
        path = tmp_path / f"f{size}"
        path.write_bytes(os.urandom(size))
        out.append(path)
    return out


@pytest.mark.tool
@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--hash-alg=sha512"],
        ["--block-size=1024", "--salt=00ff"],
        ["--hash-alg=sha512", "--block-size=65536", "--salt=" + "ab" * 32],
        ["--hash-alg=2"],  # fsverity-utils also takes the algorithm number
    ],
    ids=["default", "sha512", "bs1024-salt", "sha512-bs64k-salt32", "alg-number"],
)
def test_output_equals_fsverity_digest(
    files: list[Path], options: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = require_tool("fsverity")
    monkeypatch.chdir(files[0].parent)
    # relative and absolute names: both are echoed as given
    names = [files[0].name, f"./{files[1].name}", str(files[2]), files[3].name]
    expected = run([tool, "digest", *options, *names], cwd=files[0].parent).stdout
    result = RUNNER.invoke(APP, ["verity", "digest", *options, *names])
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == expected
    assert result.stderr == ""


def test_missing_file_reported_and_others_printed(files: list[Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = RUNNER.invoke(APP, ["verity", "digest", str(files[0]), str(missing), str(files[1])])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [str(files[0]), str(files[1])]
    assert lines[0].startswith("sha256:3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a")
    assert result.stderr == (
        f"error: {missing}: cannot open for reading: No such file or directory; "
        "check that the path exists and is readable\n"
    )


def test_directory_reported(tmp_path: Path) -> None:
    result = RUNNER.invoke(APP, ["verity", "digest", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"error: {tmp_path}: not a regular file" in result.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--salt=abc", "--salt 'abc' is not a hex string"),
        ("--salt=ab cd", "--salt 'ab cd' is not a hex string"),
        ("--salt=" + "00" * 33, "salt is 33 bytes; at most 32 bytes fit"),
        ("--block-size=512", "block size 512 is not valid; use a power of 2 from 1024 to 65536"),
        ("--block-size=5000", "block size 5000 is not valid"),
        ("--hash-alg=md5", "hash algorithm 'md5' is not supported; use one of: sha256, sha512"),
        ("--threads=0", "threads must be an integer from 1 to 64"),
    ],
    ids=["odd-salt", "space-salt", "long-salt", "bs512", "bs5000", "md5", "threads0"],
)
def test_bad_options(files: list[Path], option: str, message: str) -> None:
    result = RUNNER.invoke(APP, ["verity", "digest", option, str(files[1])])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message in result.stderr


def test_needs_a_file() -> None:
    result = RUNNER.invoke(APP, ["verity", "digest"])
    assert result.exit_code == 2
    assert "Missing argument 'FILE'" in result.stderr
