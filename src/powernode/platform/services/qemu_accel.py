"""Which QEMU accelerator works here: KVM when it really boots the kernel, TCG otherwise.

``/dev/kvm`` existing is not enough: under a nested, paravirtualised KVM a
stock kernel dies in decompression or prints nothing at all (FACTS.md).
So ``auto`` boots the image's kernel under KVM once, with no initramfs and
``panic=-1``, and takes KVM only when the kernel's banner (``Linux
version``) reaches the serial console within ``timeout`` seconds (a
working KVM prints it in well under one); anything else is TCG. The answer
is remembered in the state directory per kernel and QEMU binary, so the
probe runs once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

ACCELS = ("auto", "kvm", "tcg")
BANNER = b"Linux version"
CACHE_NAME = "accel-probe.json"


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def _key(binary: str, machine: str, kernel: Path) -> str:
    st = kernel.stat()
    return f"{binary}|{machine}|{kernel.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def probe_kvm(binary: str, machine: str, kernel: Path, timeout: float) -> bool:
    """Boot ``kernel`` under KVM for at most ``timeout`` s; True when its banner appears."""
    with tempfile.TemporaryDirectory(prefix="powernode-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        args = [
            binary,
            *("-machine", machine, "-accel", "kvm", "-m", "256", "-nodefaults"),
            *("-display", "none", "-monitor", "none", "-no-reboot"),
            *("-serial", f"file:{console}", "-kernel", str(kernel)),
            *("-append", "console=ttyS0 panic=-1 earlyprintk=ttyS0"),
        ]
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if console.exists() and BANNER in console.read_bytes():
                    return True
                if proc.poll() is not None:
                    return console.exists() and BANNER in console.read_bytes()
                time.sleep(0.05)
            return False
        finally:
            proc.kill()
            proc.wait(10)


def resolve(
    accel: str, binary: str, machine: str, kernel: Path, *, state_dir: Path, timeout: float
) -> str:
    """``kvm`` or ``tcg`` for the configured ``accel`` (``auto`` probes, once)."""
    if accel != "auto":
        return accel
    if not kvm_usable():
        return "tcg"
    cache = state_dir / CACHE_NAME
    key = _key(binary, machine, kernel)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and known.get(key) in ("kvm", "tcg"):
        return str(known[key])
    chosen = "kvm" if probe_kvm(binary, machine, kernel, timeout) else "tcg"
    log.info(
        "accelerator probe: /dev/kvm is there, %s booting %s: using %s", binary, kernel, chosen
    )
    known = known if isinstance(known, dict) else {}
    known[key] = chosen
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    tmp.replace(cache)
    return chosen
