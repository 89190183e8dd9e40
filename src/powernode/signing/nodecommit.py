"""The statement a node signs when it announces a version it made (``powernode-agent commit``).

The trust policy of node-made versions: the version is what the node's own
key (the key of its live client certificate, ``<state>/pki/key.pem``) signed,
and nothing else. The signature (cosign's schemes, :mod:`powernode.signing.scheme`)
covers the *statement*, the canonical JSON (sorted keys, no spaces) of::

    {"composefs_digest": …, "file_list_sha256": "<hex>", "instance_id": …,
     "kind": "powernode.node-commit/v1", "manifest_digest": …,
     "manifest_sha256": "<hex>", "module": …, "reference": …, "version": …}

where ``manifest_sha256`` is the SHA-256 of the module manifest's canonical
JSON and ``file_list_sha256`` that of the file list's: everything the platform
records about the version is signed, and the instance it names is the one the
platform takes from the caller's certificate, so a statement made for one
instance does not verify as another's. The pushed artifact carries the
node's cosign signature over its manifest digest too (annotated
``dev.powernode.made-by: node``); the statement binds that digest to the
composefs digest, the manifest and the file list the platform records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from powernode.errors import DataError
from powernode.signing.keys import PrivateKey, PublicKey
from powernode.signing.scheme import sign_bytes, verify_bytes

KIND = "powernode.node-commit/v1"
MAX_SIGNATURE = 512  # base64 of a 64-byte Ed25519 or ~72-byte DER ECDSA signature


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class CommitStatement:
    instance_id: str
    module: str
    version: str
    composefs_digest: str
    manifest_digest: str
    reference: str
    manifest: Mapping[str, object]
    file_list: Sequence[str]

    def statement(self) -> bytes:
        return _canonical(
            {
                "kind": KIND,
                "instance_id": self.instance_id,
                "module": self.module,
                "version": self.version,
                "composefs_digest": self.composefs_digest,
                "manifest_digest": self.manifest_digest,
                "reference": self.reference,
                "manifest_sha256": hashlib.sha256(_canonical(dict(self.manifest))).hexdigest(),
                "file_list_sha256": hashlib.sha256(_canonical(list(self.file_list))).hexdigest(),
            }
        )

    def sign(self, key: PrivateKey) -> str:
        """The base64 signature over the statement."""
        return base64.b64encode(sign_bytes(key, self.statement())).decode()

    def verify(self, key: PublicKey, signature: str) -> None:
        """Return if ``signature`` (base64) is ``key``'s over the statement; raise otherwise.

        ``DataError`` for a signature that is not base64; ``SignatureInvalidError``
        (a ``VerificationError``) for one made by another key or over other fields.
        """
        if len(signature) > MAX_SIGNATURE:
            raise DataError(f"signature: longer than {MAX_SIGNATURE} characters")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError) as e:
            raise DataError(f"signature: not base64: {e}") from e
        what = f"the commit statement of {self.module} {self.version}"
        verify_bytes(key, self.statement(), raw, what=what)
