"""NodeScripts: an operator's script, signed, versioned, run on a node (seed 000 ``exec``).

A NodeScript is a document::

    {"name": "rotate-logs", "version": 3, "interpreter": "/bin/sh",
     "script": "…", "timeout_seconds": 60,
     "limits": {"memory_bytes": 268435456, "tasks_max": 64, "cpu_seconds": 60,
                "output_bytes": 65536},
     "signature": "<base64>", "key_fingerprint": "<sha256 hex of the key>"}

The signature (cosign's schemes, :mod:`powernode.signing.scheme`: ECDSA
P-256/SHA-256 DER or Ed25519) covers the *statement*, the canonical JSON
(sorted keys, no spaces) of everything but ``signature`` and
``key_fingerprint``, with the script replaced by its SHA-256::

    {"interpreter": …, "kind": "powernode.nodescript/v1", "limits": {…}, "name": …,
     "script_sha256": "<hex>", "timeout_seconds": …, "version": …}

so the interpreter, the limits and the timeout are signed with the body: a
platform or a relay cannot loosen them. The platform stores and versions
NodeScripts; the agent runs one only when the signature verifies with a key
in its ``nodescript_keys_file``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field

from powernode.errors import DataError
from powernode.signing.keys import PrivateKey, PublicKey, key_fingerprint
from powernode.signing.scheme import sign_bytes, verify_bytes

KIND = "powernode.nodescript/v1"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_SCRIPT_BYTES = 256 * 1024
MAX_TIMEOUT_SECONDS = 86_400
LIMIT_BOUNDS: dict[str, tuple[int, int]] = {
    "memory_bytes": (1 << 20, 1 << 40),
    "tasks_max": (1, 100_000),
    "cpu_seconds": (1, MAX_TIMEOUT_SECONDS),
    "output_bytes": (0, 16 << 20),
}
DEFAULT_LIMITS: dict[str, int] = {
    "memory_bytes": 256 << 20,
    "tasks_max": 64,
    "cpu_seconds": 600,
    "output_bytes": 64 << 10,
}


@dataclass(frozen=True)
class NodeScript:
    name: str
    version: int
    script: str
    interpreter: str = "/bin/sh"
    timeout_seconds: int = 60
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    signature: str = ""  # base64
    key_fingerprint: str = ""

    def statement(self) -> bytes:
        """The bytes the signature covers (see the module docstring)."""
        doc = {
            "kind": KIND,
            "name": self.name,
            "version": self.version,
            "interpreter": self.interpreter,
            "script_sha256": hashlib.sha256(self.script.encode()).hexdigest(),
            "timeout_seconds": self.timeout_seconds,
            "limits": dict(sorted(self.limits.items())),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: PrivateKey) -> NodeScript:
        sig = base64.b64encode(sign_bytes(key, self.statement())).decode()
        return NodeScript(
            self.name,
            self.version,
            self.script,
            self.interpreter,
            self.timeout_seconds,
            dict(self.limits),
            sig,
            key_fingerprint(key),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "script": self.script,
            "interpreter": self.interpreter,
            "timeout_seconds": self.timeout_seconds,
            "limits": dict(self.limits),
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
        }

    def verify(self, keys: list[PublicKey]) -> str:
        """The fingerprint of the key in ``keys`` the signature verifies with; DataError if none.

        An unsigned script, a signature no trusted key made, and an altered
        script (body, interpreter, limits or timeout) are all refused here.
        """
        what = f"NodeScript {self.name} v{self.version}"
        if not self.signature:
            raise DataError(f"{what} is unsigned: refusing to run it")
        try:
            raw = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError) as e:
            raise DataError(f"{what}: signature is not base64: refusing to run it") from e
        if not keys:
            raise DataError(f"{what}: no NodeScript keys are trusted here (nodescript_keys_file)")
        errors = []
        for key in keys:
            try:
                verify_bytes(key, self.statement(), raw, what=f"{what}'s signature")
            except Exception as e:
                errors.append(str(e))
                continue
            return key_fingerprint(key)
        raise DataError(
            f"{what}: signature verifies with none of the {len(keys)} trusted key(s): "
            f"refusing to run it ({errors[0]})"
        )


def _int(doc: dict[str, object], name: str, low: int, high: int, default: int | None) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DataError(f"{name}: expected an integer {low}-{high}, got {value!r}")
    return value


def parse(doc: object) -> NodeScript:
    """A NodeScript from its JSON document; DataError naming the field that is wrong."""
    if not isinstance(doc, dict):
        raise DataError("a NodeScript is a JSON object")
    unknown = set(doc) - {
        "name", "version", "script", "interpreter", "timeout_seconds", "limits",
        "signature", "key_fingerprint",
    }  # fmt: skip
    if unknown:
        raise DataError(f"unknown field(s): {', '.join(sorted(unknown))}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise DataError(f"name: {name!r} is not [a-z0-9][a-z0-9._-]{{0,63}}")
    script = doc.get("script")
    if not isinstance(script, str) or not script:
        raise DataError("script: a non-empty string")
    if len(script) > MAX_SCRIPT_BYTES:
        raise DataError(f"script: longer than {MAX_SCRIPT_BYTES} characters")
    interpreter = doc.get("interpreter", "/bin/sh")
    if not isinstance(interpreter, str) or not interpreter.startswith("/") or " " in interpreter:
        raise DataError("interpreter: an absolute path, no arguments")
    limits_doc = doc.get("limits", {})
    if not isinstance(limits_doc, dict):
        raise DataError("limits: an object")
    bad = set(limits_doc) - set(LIMIT_BOUNDS)
    if bad:
        raise DataError(f"limits: unknown {', '.join(sorted(bad))}")
    limits = {
        k: _int(limits_doc, k, lo, hi, DEFAULT_LIMITS[k]) for k, (lo, hi) in LIMIT_BOUNDS.items()
    }
    for text in ("signature", "key_fingerprint"):
        if not isinstance(doc.get(text, ""), str):
            raise DataError(f"{text}: a string")
    return NodeScript(
        name,
        _int(doc, "version", 1, 1_000_000, None),
        script,
        interpreter,
        _int(doc, "timeout_seconds", 1, MAX_TIMEOUT_SECONDS, 60),
        limits,
        doc.get("signature", ""),
        doc.get("key_fingerprint", ""),
    )
