"""The agent's init plumbing in a real boot (QEMU, TCG): after 90powernode's switch_root,
busybox init reads the inittab shipped with the agent (powernode/agent/init/), runs
rc.sysinit, and agent-run starts ``powernode-agent boot``, restarting it once it fails.

The agent here is a stand-in script (the real one needs the system-base module with
python3): it prints what the initramfs left for it (the claimed identity, the mounted
set, the seed bundle's token) and, on its second start, powers the VM off.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from powernode.agent.boot import INIT_DIR
from powernode.image.debs import fetch, read_members
from tests.conftest import require_tool
from tests.image.guest import boot, make_module, module_set, new_id, persist_disk
from tests.package_cache import persistent_debs

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

STUB_AGENT = """#!/bin/sh
n=$(cat /tmp/agent-starts 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" >/tmp/agent-starts
echo "STUB-AGENT: start $n args=$* $(tr '\\n' ' ' </run/powernode/identity)\
set=$(grep -vc '^#' /run/powernode/boot.set) token=$(cat /etc/powernode/seed/bootstrap-token)"
[ "$n" -ge 2 ] || exit 1
sync
poweroff -f
"""


def _seed() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("seed.json", b"{}"), ("bootstrap-token", b"pnb_seeded")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_busybox_init_runs_the_shipped_inittab_and_restarts_the_agent(
    kernel_initrd: Path, tmp_path: Path
) -> None:
    for tool in ("qemu-system-x86_64", "mkfs.ext4"):
        require_tool(tool)
    deb = fetch("busybox-static", "amd64", persistent_debs())
    busybox = read_members(deb, lambda p: p == "bin/busybox")["bin/busybox"][1]
    root = tmp_path / "src-base"
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "persist", "usr/bin"):
        (root / d).mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(busybox)
    (root / "bin" / "busybox").chmod(0o755)
    applets = subprocess.run(
        [str(root / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for a in applets:
        if a != "busybox":
            (root / "bin" / a).symlink_to("busybox")
    (root / "sbin" / "init").symlink_to("/bin/busybox")
    (root / "sbin" / "reboot").symlink_to("/bin/busybox")
    (root / "etc" / "inittab").write_bytes((INIT_DIR / "inittab").read_bytes())
    (root / "etc" / "hostname").write_text("pn-node\n")
    lib = root / "usr" / "lib" / "powernode"
    lib.mkdir(parents=True)
    for name in ("rc.sysinit", "rc.shutdown", "agent-run", "udhcpc.script"):
        (lib / name).write_bytes((INIT_DIR / name).read_bytes())
        (lib / name).chmod(0o755)
    (root / "usr" / "bin" / "powernode-agent").write_text(STUB_AGENT)
    (root / "usr" / "bin" / "powernode-agent").chmod(0o755)
    state = tmp_path / "state"
    base = make_module(root, "system-base", 10, state)
    share = tmp_path / "share"
    (share / "store").mkdir(parents=True)
    for sub in ("images", "objects"):
        subprocess.run(["cp", "-a", str(state / sub), str(share / "store" / sub)], check=True)
    (share / "modules.set").write_text(module_set([base]))
    empty = tmp_path / "empty"
    empty.mkdir()
    disk = persist_disk(empty, tmp_path / "persist.img")
    instance = new_id()
    res = boot(kernel_initrd, disk, tmp_path, seed=_seed(), seed_dir=share, instance_id=instance)
    c = res.console
    assert "powernode: switch_root to /sbin/init" in c, c
    assert "powernode: sysinit done; starting powernode-agent boot" in c, c
    first = (
        f"STUB-AGENT: start 1 args=boot instance_id={instance} source=fwcfg set=1 token=pnb_seeded"
    )
    assert first in c, c
    assert "powernode: powernode-agent exited (1); restarting in 5 s" in c, c
    assert "STUB-AGENT: start 2 args=boot" in c, c
