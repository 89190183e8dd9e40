"""OpenVEX v0.2.0 documents (https://github.com/openvex/spec/blob/main/OPENVEX-SPEC.md).

A statement names vulnerabilities, products and a status: ``not_affected``
(with a ``justification`` or an ``impact_statement``), ``affected`` (with an
``action_statement``), ``fixed`` or ``under_investigation``. Applied to
findings: the latest statement for (vulnerability, product) wins; a finding
is *waived* when that status is ``not_affected`` or ``fixed``; ``affected``
and ``under_investigation`` leave it standing. A product matches a finding
when it is the module version's subject (``pkg:oci/...@sha256:...`` or the
digest itself), or a package purl of the finding (with or without
qualifiers); a statement with no products applies to the whole document's
subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from powernode.errors import DataError

OPENVEX_CONTEXT = "https://openvex.dev/ns/v0.2.0"
STATUSES: Final = frozenset({"not_affected", "affected", "fixed", "under_investigation"})
JUSTIFICATIONS: Final = frozenset(
    {
        "component_not_present",
        "vulnerable_code_not_present",
        "vulnerable_code_not_in_execute_path",
        "vulnerable_code_cannot_be_controlled_by_adversary",
        "inline_mitigations_already_exist",
    }
)
WAIVING: Final = frozenset({"not_affected", "fixed"})


class VexError(DataError, ValueError):
    """The document is not valid OpenVEX."""


@dataclass(frozen=True)
class Statement:
    vulnerability: str  # its @id or name: CVE-…, DSA-…, an OSV id
    aliases: frozenset[str]
    products: frozenset[str]
    status: str
    justification: str | None
    note: str  # impact or action statement
    timestamp: str


def parse(doc: object) -> tuple[Statement, ...]:
    """The statements of an OpenVEX document; VexError naming the first problem."""
    if not isinstance(doc, dict):
        raise VexError("an OpenVEX document is a JSON object")
    ctx = doc.get("@context")
    if not isinstance(ctx, str) or not ctx.startswith("https://openvex.dev/ns"):
        raise VexError(f"@context is {ctx!r}, not {OPENVEX_CONTEXT}")
    doc_ts = str(doc.get("timestamp", ""))
    raw = doc.get("statements")
    if not isinstance(raw, list) or not raw:
        raise VexError("the document has no statements")
    out: list[Statement] = []
    for i, s in enumerate(raw):
        where = f"statements[{i}]"
        if not isinstance(s, dict):
            raise VexError(f"{where} is not an object")
        vuln = s.get("vulnerability")
        if isinstance(vuln, dict):
            name = vuln.get("name") or vuln.get("@id")
            aliases = frozenset(str(a) for a in vuln.get("aliases") or [])
        else:
            name, aliases = vuln, frozenset()
        if not isinstance(name, str) or not name:
            raise VexError(f"{where}.vulnerability has no name")
        status = s.get("status")
        if status not in STATUSES:
            raise VexError(f"{where}.status {status!r} is not one of {', '.join(sorted(STATUSES))}")
        just = s.get("justification")
        if status == "not_affected":
            if just is None and not s.get("impact_statement"):
                raise VexError(
                    f"{where}: not_affected needs a justification or an impact_statement"
                )
            if just is not None and just not in JUSTIFICATIONS:
                raise VexError(
                    f"{where}.justification {just!r} is not one of "
                    + ", ".join(sorted(JUSTIFICATIONS))
                )
        if status == "affected" and not s.get("action_statement"):
            raise VexError(f"{where}: affected needs an action_statement")
        products = frozenset(_product_ids(s.get("products") or [], where))
        note = str(s.get("impact_statement") or s.get("action_statement") or "")
        ts = str(s.get("timestamp") or doc_ts)
        out.append(Statement(name, aliases, products, status, just, note, ts))
    return tuple(out)


def _product_ids(products: object, where: str) -> list[str]:
    if not isinstance(products, list):
        raise VexError(f"{where}.products is not a list")
    ids: list[str] = []
    for j, p in enumerate(products):
        pid = p.get("@id") if isinstance(p, dict) else p
        if not isinstance(pid, str) or not pid:
            raise VexError(f"{where}.products[{j}] has no @id")
        ids.append(pid)
        if isinstance(p, dict):
            for sub in p.get("subcomponents") or []:
                if isinstance(sub, dict) and isinstance(sub.get("@id"), str):
                    ids.append(sub["@id"])
    return ids


def _strip(purl: str) -> str:
    return purl.split("?", 1)[0].split("#", 1)[0]


def decide(
    statements: list[Statement],
    *,
    vuln_ids: set[str],
    subject_ids: set[str],
    package_purl: str,
) -> Statement | None:
    """The latest statement that covers this finding, or None."""
    pkg = {package_purl, _strip(package_purl)}
    best: Statement | None = None
    for s in statements:
        if not ({s.vulnerability} | s.aliases) & vuln_ids:
            continue
        if s.products:
            prods = s.products | {_strip(p) for p in s.products}
            if not prods & (pkg | subject_ids):
                continue
        if best is None or s.timestamp >= best.timestamp:
            best = s
    return best


def document(
    *, author: str, doc_id: str, timestamp: str, statements: list[dict[str, object]]
) -> dict[str, object]:
    return {
        "@context": OPENVEX_CONTEXT,
        "@id": doc_id,
        "author": author,
        "timestamp": timestamp,
        "version": 1,
        "statements": statements,
    }
