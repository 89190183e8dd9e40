"""A fake transparency log (Rekor-shaped) for keyless tests: its own key, in-test.

``bundle()`` writes what cosign attaches as ``dev.sigstore.cosign/bundle``: a
hashedrekord v0.0.1 entry for the signature, and the log's signed entry
timestamp (ECDSA-SHA256 over the canonical JSON of the payload) at the
integration time the test chooses.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.signing.tlog import canonical_json, log_id, signed_entry_timestamp_payload


def hashedrekord(payload: bytes, signature_b64: str, certificate_pem: bytes) -> bytes:
    entry = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {
                "content": signature_b64,
                "publicKey": {"content": base64.b64encode(certificate_pem).decode()},
            },
        },
    }
    return json.dumps(entry, separators=(",", ":")).encode()


@dataclass
class FakeLog:
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    index: int = 0

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def log_id(self) -> str:
        return log_id(self.key.public_key())

    def bundle(
        self,
        payload: bytes,
        signature_b64: str,
        certificate_pem: bytes,
        at: datetime.datetime,
        *,
        body: bytes | None = None,
    ) -> str:
        """The bundle for one signature integrated at ``at`` (``body`` overrides the entry)."""
        self.index += 1
        entry = body if body is not None else hashedrekord(payload, signature_b64, certificate_pem)
        doc = signed_entry_timestamp_payload(entry, int(at.timestamp()), self.index, self.log_id)
        set_ = self.key.sign(canonical_json(doc), ec.ECDSA(hashes.SHA256()))
        return json.dumps({"SignedEntryTimestamp": base64.b64encode(set_).decode(), "Payload": doc})
