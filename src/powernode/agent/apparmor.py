"""A module's AppArmor profiles, loaded when it is attached or upgraded.

A module ships its profiles as ``/etc/apparmor.d/powernode.<module>[.<name>]``
in its tree. After the union changed, those of each attached or upgraded
module are loaded (``apparmor_parser --replace --write-cache`` on the file
as the union serves it) — where the kernel has AppArmor
(``/sys/kernel/security/apparmor`` exists) and ``apparmor_parser`` is
installed. Where it does not (this development host: no AppArmor in the
kernel), nothing is loaded and the result says so, per profile, with the
reason; the module is attached all the same (a module must not depend on
a confinement the kernel cannot give).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from powernode.node.fields import JSON
from powernode.run import run

log = logging.getLogger(__name__)

SECURITYFS = Path("/sys/kernel/security/apparmor")


def profiles(root: Path, module: str) -> list[Path]:
    where = root / "etc" / "apparmor.d"
    if not where.is_dir():
        return []
    return sorted(
        p
        for p in where.iterdir()
        if p.is_file()
        and (p.name == f"powernode.{module}" or p.name.startswith(f"powernode.{module}."))
    )


def available(securityfs: Path = SECURITYFS) -> str:
    """ "" when profiles can be loaded here, else why not."""
    if not securityfs.exists():
        return f"the kernel has no AppArmor ({securityfs} is absent)"
    if shutil.which("apparmor_parser") is None:
        return "apparmor_parser is not installed (Debian package apparmor)"
    return ""


def load_profiles(root: Path, module: str, securityfs: Path = SECURITYFS) -> list[dict[str, JSON]]:
    found = profiles(root, module)
    if not found:
        return []
    why = available(securityfs)
    out: list[dict[str, JSON]] = []
    for p in found:
        if why:
            log.warning("module %s: AppArmor profile %s not loaded: %s", module, p.name, why)
            out.append({"profile": p.name, "loaded": False, "reason": why})
            continue
        proc = run(["apparmor_parser", "--replace", "--write-cache", p], check=False)
        ok = proc.returncode == 0
        reason = "" if ok else proc.stderr.decode(errors="replace").strip()[:500]
        if not ok:
            log.error("module %s: AppArmor profile %s refused: %s", module, p.name, reason)
        out.append({"profile": p.name, "loaded": ok, "reason": reason})
    return out
