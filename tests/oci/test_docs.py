"""The example in docs/oci.md runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "oci.md"


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert blocks, "docs/oci.md lost its example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {})  # noqa: S102  # our own doc
    assert (tmp_path / "cache" / "sha256").is_dir()
    assert os.listdir(tmp_path / "store" / "blobs" / "sha256")
