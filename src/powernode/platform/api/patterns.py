"""The input rules the services enforce, written so /openapi.json can state them.

Issue 13 item 9: a request the schema calls valid must not be refused with
422, and one it calls invalid must not be accepted. Each pattern here is the
JSON Schema (ECMA-262 subset also valid for pydantic's Rust engine and for
Python ``re``) form of a check in a service, named next to it; the tests
compare each against the service's own check.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from powernode.core.semver import MAX_NUMBER

# services/catalog.py MODULE_NAME
MODULE_NAME = r"^[a-z0-9][a-z0-9._-]{0,127}$"

# RFC 1123 §2.1 host name as services/nodes.py check_hostname reads it: dot-separated
# labels of lower-case letters, digits and inner '-', 1-63 characters each.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = rf"^{_LABEL}(\.{_LABEL})*$"


def number_at_most(limit: int) -> str:
    """A regex (no anchors) for decimal numbers without a leading zero, 0 to ``limit``."""
    digits = str(limit)
    alts = ["0"]
    if len(digits) > 1:
        alts.append(f"[1-9][0-9]{{0,{len(digits) - 2}}}")  # fewer digits than limit
    # As many digits as limit: equal on a prefix, then one smaller digit, then any.
    for i, d in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(d) > low:
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            alts.append(f"{digits[:i]}[{low}-{int(d) - 1}]{tail}")
    alts.append(digits)
    return "(" + "|".join(alts) + ")"


# SemVer 2.0.0 §2, §9, §10 (semver.org's expression, [0-9] for \d, an optional "v"),
# with core/semver.py's bound on every number: what Version.parse accepts.
_NUM = number_at_most(MAX_NUMBER)
_PRE_ID = rf"({_NUM}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_CORE = rf"v?{_NUM}\.{_NUM}\.{_NUM}(-{_PRE_ID}(\.{_PRE_ID})*)?"
SEMVER = rf"^{_CORE}(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
# A tag naming a version (services/ingest.py tag_version): no build metadata, whose
# '+' the OCI distribution spec does not allow in a tag.
SEMVER_TAG = rf"^{_CORE}$"


_WORDS = {
    MODULE_NAME: "not a module name: use 1-128 lower-case letters, digits, '.', '_' or '-', "
    "starting with a letter or digit",
    HOSTNAME: "not an RFC 1123 host name: lower-case letters, digits and inner '-' in "
    "dot-separated labels of 1-63 characters",
    SEMVER: "not a SemVer version (like 1.2.3, v1.2.3-rc.1 or 1.2.3+build.5; numbers without "
    f"leading zeros, at most {MAX_NUMBER})",
    SEMVER_TAG: "not a SemVer version tag (like v1.2.3 or 1.2.3-rc.1; no '+build', which a "
    "tag cannot hold); only version tags become module versions",
}


def explain(pattern: str) -> str | None:
    """The rule a pattern of this module states, in words (for 422 details)."""
    return _WORDS.get(pattern)


def _json_integer(value: object) -> object:
    # JSON Schema "integer": 3 and 3.0 are integers; "3" and true are not. Lax
    # pydantic takes all four, strict pydantic refuses 3.0.
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON integer, not a string or boolean")
    return value


# Put after any bounds: Annotated[int, Field(ge=1), JSON_INTEGER]. Before them,
# pydantic writes the bounds as "ge"/"le", which JSON Schema does not know.
JSON_INTEGER = BeforeValidator(_json_integer)
JsonInt = Annotated[int, JSON_INTEGER]
