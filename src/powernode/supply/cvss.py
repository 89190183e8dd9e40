"""CVSS v3.0/v3.1 base score from a vector string (FIRST's specification, section 7.1).

OSV records carry ``severity: [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/…"}]``;
the rating (critical, high, …) is what promotion policies speak in.
"""

from __future__ import annotations

import math
from typing import Final

from powernode.errors import DataError

_AV: Final = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_AC: Final = {"L": 0.77, "H": 0.44}
_PR_U: Final = {"N": 0.85, "L": 0.62, "H": 0.27}
_PR_C: Final = {"N": 0.85, "L": 0.68, "H": 0.5}
_UI: Final = {"N": 0.85, "R": 0.62}
_CIA: Final = {"H": 0.56, "L": 0.22, "N": 0.0}


class CvssError(DataError, ValueError):
    pass


def _roundup(x: float) -> float:
    i = round(x * 100000)
    if i % 10000 == 0:
        return i / 100000.0
    return (math.floor(i / 10000) + 1) / 10.0


def base_score(vector: str) -> float:
    parts = vector.split("/")
    if not parts or not parts[0].startswith("CVSS:3"):
        raise CvssError(f"{vector!r} is not a CVSS v3 vector")
    m = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    try:
        scope_changed = m["S"] == "C"
        pr = (_PR_C if scope_changed else _PR_U)[m["PR"]]
        iss = 1 - (1 - _CIA[m["C"]]) * (1 - _CIA[m["I"]]) * (1 - _CIA[m["A"]])
        expl = 8.22 * _AV[m["AV"]] * _AC[m["AC"]] * pr * _UI[m["UI"]]
    except KeyError as e:
        raise CvssError(f"{vector!r} lacks or misstates base metric {e}") from None
    impact = (7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15) if scope_changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    total = impact + expl
    return _roundup(min(1.08 * total if scope_changed else total, 10.0))


def rating(score: float) -> str:
    if score == 0:
        return "none"
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    if score < 9.0:
        return "high"
    return "critical"
