"""Restacking is atomic for readers: a process reading through the root never fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from powernode.agent.modules.attach import attach
from powernode.agent.modules.layout import NodeLayout
from tests.agent.test_modules_support import big, build_module, layout, mounts_under

__all__ = ["layout"]

pytestmark = pytest.mark.mount

# Reads two files through the root until told to stop (bounded: 20 s, 2M reads);
# prints "<reads> <errors> <contents seen...>", the first errors on stderr.
READER = r"""
import os, sys, time
root, stop, ready = sys.argv[1], sys.argv[2], sys.argv[3]
seen, errors, reads = set(), 0, 0
deadline = time.monotonic() + 20
open(ready, "w").close()
while not os.path.exists(stop) and time.monotonic() < deadline and reads < 2_000_000:
    for rel in ("etc/shared.conf", "usr/bin/tool"):
        try:
            with open(os.path.join(root, rel), "rb") as f:
                seen.add(f.read(16).split(b"\n")[0].decode())
        except OSError as e:
            errors += 1
            if errors < 5:
                print(rel, e, file=sys.stderr)
        reads += 1
print(reads, errors, *sorted(seen))
"""


def test_reader_never_sees_an_error_during_restacks(layout: NodeLayout, tmp_path: Path) -> None:
    base = build_module(
        layout, "base", {"etc/shared.conf": big("base"), "usr/bin/tool": big("tool")}, priority=10
    )
    v1 = build_module(layout, "cfg", {"etc/shared.conf": big("cfgv1")}, priority=50)
    v2 = build_module(layout, "cfg", {"etc/shared.conf": big("cfgv2")}, priority=50, version="2")
    attach(layout, base)
    attach(layout, v1)
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(layout.root), str(stop), str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):  # wait for the reader to start (bounded)
            if ready.exists():
                break
            time.sleep(0.01)
        swaps = 0
        for i in range(20):
            r = attach(layout, v2 if i % 2 == 0 else v1)
            assert r.changed
            swaps += 1
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=30)
    reads, errors, *seen = out.split()
    assert int(errors) == 0, err
    assert int(reads) > 0
    assert set(seen) <= {"cfgv1", "cfgv2", "tool"}
    assert "tool" in seen
    assert swaps == 20
    # after 22 generations only the serving union and its layers are mounted
    assert mounts_under(layout.root) == [str(layout.root)]
    assert len(mounts_under(layout.run_dir)) == 1 + 2  # the run tmpfs and two layers
