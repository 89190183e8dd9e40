"""`powernode composefs mkimage`, shaped like mkcomposefs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from powernode.cli.composefs import app
from powernode.verity.fsverity import fsverity_digest

# vector A of shared/notes/COMPOSEFS.md: an empty root, mode 0755, uid/gid 0, mtime 0
EMPTY_ROOT = "8f589e8f57ecb88823736b0d857ddca1e1068a23e264fad164b28f7038eb3682"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    os.chmod(root, 0o755)  # noqa: S103
    if os.geteuid() == 0:
        os.chown(root, 0, 0)
    os.utime(root, (5000, 5000))
    return root


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["mkimage", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_print_digest_only_with_use_epoch(src: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("vector A needs uid/gid 0")
    code, out, _ = _run("--print-digest-only", "--use-epoch", str(src))
    assert code == 0 and out == EMPTY_ROOT + "\n"


def test_source_date_epoch_from_env(src: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("vector A needs uid/gid 0")
    code, out, _ = _run("--print-digest-only", str(src), env={"SOURCE_DATE_EPOCH": "0"})
    assert code == 0 and out.strip() == EMPTY_ROOT
    code, out, _ = _run("--print-digest-only", str(src), env={"SOURCE_DATE_EPOCH": ""})
    assert code == 0 and out.strip() != EMPTY_ROOT  # mtime 5000 kept


def test_bad_source_date_epoch(src: Path) -> None:
    code, _, err = _run("--print-digest-only", str(src), env={"SOURCE_DATE_EPOCH": "soon"})
    assert code == 1 and "SOURCE_DATE_EPOCH='soon' is not an integer" in err


def test_writes_image_and_store_and_prints_digest(src: Path, tmp_path: Path) -> None:
    (src / "big").write_bytes(b"z" * 1000)
    img, store = tmp_path / "out.cfs", tmp_path / "objects"
    code, out, _ = _run("--print-digest", "--digest-store", str(store), str(src), str(img))
    assert code == 0
    assert out.strip() == fsverity_digest(img.read_bytes()).hex()
    assert len(list(store.glob("??/*"))) == 1


def test_usage_errors_write_nothing(src: Path, tmp_path: Path) -> None:
    code, _, err = _run(str(src))
    assert code == 2 and "give IMAGE" in err
    code, _, err = _run("--print-digest-only", str(src), str(tmp_path / "x.cfs"))
    assert code == 2 and "drop IMAGE" in err
    assert not (tmp_path / "x.cfs").exists()


def test_policy_flags(src: Path, tmp_path: Path) -> None:
    (src / "su").write_bytes(b"x")
    os.chmod(src / "su", 0o4755)  # noqa: S103
    img = tmp_path / "o.cfs"
    code, _, err = _run(str(src), str(img))
    assert code == 1 and "/su: is setuid/setgid" in err and "allow.setuid" in err
    assert not img.exists()
    code, _, _ = _run("--allow-setuid", str(src), str(img))
    assert code == 0 and img.exists()


def test_missing_source(tmp_path: Path) -> None:
    code, _, err = _run("--print-digest-only", str(tmp_path / "none"))
    assert code == 1 and "source directory does not exist" in err
