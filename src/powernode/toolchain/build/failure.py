"""mmdebstrap's output after a failed install → an error that names what failed.

Pure: takes the tool's merged output (stdout and stderr in the order written)
and returns a SourceTreeError. Three cases, first match wins:

- apt could not find a package_spec entry (apt-pkg/cacheset.cc: "Unable to
  locate package X", "Package 'X' has no installation candidate", "Version
  'V' for 'X' was not found");
- a maintainer script failed. dpkg reports it as (dpkg src/main/script.c,
  ``maintscript_exec``; dpkg(1) "--configure", "--unpack")::

      dpkg: error processing package chrony (--configure):
       installed chrony package post-installation script subprocess returned error exit status 1

  and the script's own output is what dpkg printed since it announced the
  step for that package ("Setting up P (V) ..." before a postinst,
  "Preparing to unpack .../P_V_A.deb ..." before a preinst, "Removing P (V)
  ..." before a prerm/postrm);
- anything else: the last lines of output (mmdebstrap's progress lines,
  "I: …", left out), each cut short, so that
  mmdebstrap's own "E: ... failed" line (it carries the whole dpkg or apt
  command line, thousands of characters) never floods the message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from powernode.errors import SourceTreeError

TAIL_LINES = 20
LINE_MAX = 200

# dpkg's names for the scripts (deb-preinst(5), deb-postinst(5), deb-prerm(5), deb-postrm(5))
SCRIPTS = {
    "pre-installation": "preinst",
    "post-installation": "postinst",
    "pre-removal": "prerm",
    "post-removal": "postrm",
}
_SCRIPT_RE = re.compile(
    r"^\s*(?:installed|new|old|previously installed)\s+(?P<pkg>[a-z0-9][a-z0-9+.-]*)(?::\S+)?"
    r"\s+package\s+(?P<script>pre-installation|post-installation|pre-removal|post-removal)"
    r"\s+script\s+subprocess\s+(?P<how>.+)$"
)
_MISSING_RE = re.compile(
    r"(?:Unable to locate package |Package '|Version '[^']*' for ')([a-z0-9][a-z0-9+.-]*)"
)
_ERROR_PROCESSING = "dpkg: error processing "


@dataclass(frozen=True)
class ScriptFailure:
    """One failed maintainer script: the package, the script, how it ended, its last output."""

    package: str
    script: str  # preinst, postinst, prerm, postrm
    how: str  # dpkg's words: "returned error exit status 1", "was killed by signal (…)"
    output: tuple[str, ...]


def _start_marker(script: str, pkg: str) -> re.Pattern[str]:
    name = re.escape(pkg) + r"(?::\S+)?"
    if script == "postinst":
        return re.compile(rf"^Setting up {name} \(")
    if script == "preinst":
        return re.compile(rf"^Preparing to unpack \S*/{re.escape(pkg)}_")
    return re.compile(rf"^Removing {name} \(")


def _cut(line: str) -> str:
    return line if len(line) <= LINE_MAX else line[: LINE_MAX - 1] + "…"


def find_script_failure(output: str, *, tail: int = TAIL_LINES) -> ScriptFailure | None:
    """The first maintainer script dpkg reports as failed in ``output``, else None."""
    lines = output.splitlines()
    for n, line in enumerate(lines):
        m = _SCRIPT_RE.match(line)
        if m is None:
            continue
        pkg, script = m["pkg"], SCRIPTS[m["script"]]
        end = n
        if end and lines[end - 1].startswith(_ERROR_PROCESSING):
            end -= 1
        marker = _start_marker(script, pkg)
        start = next((i + 1 for i in range(end - 1, -1, -1) if marker.match(lines[i])), None)
        body = lines[start:end] if start is not None else lines[max(0, end - tail) : end]
        out = tuple(_cut(x) for x in body[-tail:])
        return ScriptFailure(pkg, script, m["how"].strip(), out)
    return None


def explain_failure(returncode: int, output: str, pkgs: Sequence[str]) -> SourceTreeError:
    """mmdebstrap's failure, named: the missing package, the failed script, or the last lines."""
    wanted = {p.split("=")[0] for p in pkgs}
    named = sorted({m for m in _MISSING_RE.findall(output) if m in wanted})
    if named:
        return SourceTreeError(
            f"mmdebstrap could not install package_spec {', '.join(named)}: no such package "
            "in the configured apt sources; fix the name in manifest.yaml (apt-cache search "
            "NAME) or pass --mirror"
        )
    failure = find_script_failure(output)
    if failure is not None:
        shown = "\n".join(f"  | {x}" for x in failure.output) or "  (it printed nothing)"
        return SourceTreeError(
            f"mmdebstrap could not install {', '.join(pkgs)}: the {failure.script} script of "
            f"package {failure.package} {failure.how}; its last lines of output:\n{shown}\n"
            f"a package's maintainer scripts may need a package it does not depend on: add "
            f"that package to package_spec"
        )
    said = [x for x in output.strip().splitlines() if x and not x.startswith("I: ")]
    last = [_cut(x) for x in said[-5:]]
    return SourceTreeError(
        f"mmdebstrap failed ({returncode}) installing {', '.join(pkgs)}; its last lines of "
        "output:\n" + "\n".join(f"  | {x}" for x in last)
    )
