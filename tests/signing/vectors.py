"""Readers for the interop vectors in vectors/ (see vectors/README.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from powernode.signing import Layer

ROOT = Path(__file__).parent / "vectors"
CI = ROOT / "containers-image"
_MAGIC = b"\x00sigstore-json\n"


def ci_layer(directory: str) -> Layer:
    """The layer cosign pushed, from containers/image's ``signature-1`` file."""
    raw = (CI / directory / "signature-1").read_bytes()
    assert raw.startswith(_MAGIC)
    doc = json.loads(raw[len(_MAGIC) :])
    return Layer(doc["mimeType"], base64.b64decode(doc["payload"]), doc["annotations"])


def ci_digest(directory: str) -> str:
    return "sha256:" + hashlib.sha256((CI / directory / "manifest.json").read_bytes()).hexdigest()
