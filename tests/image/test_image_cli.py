"""`powernode image build`'s bad input: one error line, exit 1, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "disk"], "error: variant 'disk': known variants are kernel-initrd"),
        (["--arch", "mips"], "error: architecture 'mips': known architectures are amd64"),
    ],
)
def test_unknown_variant_or_arch(tmp_path: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "powernode.cli.main",
            "image",
            "build",
            *args,
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode == 1
    assert res.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_bad_source_date_epoch(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SOURCE_DATE_EPOCH": "yesterday"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "powernode.cli.main",
            "image",
            "build",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode == 1
    assert "SOURCE_DATE_EPOCH='yesterday'" in res.stderr
    assert not (tmp_path / "out").exists()
