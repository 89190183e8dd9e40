"""Local identity.cfg: the last source, and the one writer for it.

Format (ours), UTF-8, at most 4 KiB::

    # written by powernode-agent
    instance_id = 5c08b38e-4d57-4c23-ac45-aca61037f084
    platform_fingerprint = dmi:4c4c4544-0042-3510-8052-b4c04f333432

A file holding just one UUID line (machine-id(5)/node-id style) is accepted
too. Rules from IDENTITY_SOURCES.md §11: an empty or garbled file (power
lost before fsync) is refused, never silently replaced by a new identity;
creation is first-writer-wins (``link(2)`` of a fsynced temporary file, since
``rename(2)`` would let the last writer win); and the platform fingerprint
seen at creation is stored so a cloned or moved disk is flagged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from powernode.agent.identity.dmi import dmi_field
from powernode.agent.identity.model import IdentityError, Outcome
from powernode.agent.identity.source import ProbeContext, SourceMiss, read_host_text
from powernode.agent.identity.validate import InvalidIdentifier, parse_uuid
from powernode.durable import create_once

log = logging.getLogger(__name__)

MAX_CFG_BYTES = 4096


class IdentityFileError(IdentityError):
    """identity.cfg cannot be written, or an existing one cannot be used."""


_KEYS = ("instance_id", "platform_fingerprint")


def parse_identity_cfg(text: str, where: str) -> tuple[str, str | None]:
    """Return ``(instance_id, platform_fingerprint)`` or raise ``InvalidIdentifier``.

    Messages name ``where:line``.
    """
    values: dict[str, tuple[str, int]] = {}
    lines = text.splitlines()
    content = [(n, line.strip()) for n, line in enumerate(lines, 1)]
    content = [(n, s) for n, s in content if s and not s.startswith("#")]
    if not content:
        raise InvalidIdentifier(
            f"{where}: empty (power lost before it was synced?); restore it or delete it "
            "and re-enroll — it is not regenerated silently"
        )
    if len(content) == 1 and "=" not in content[0][1]:
        n, bare = content[0]
        return parse_uuid(bare, f"{where}:{n}: instance ID"), None
    for n, stripped in content:
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep:
            raise InvalidIdentifier(f"{where}:{n}: expected 'key = value', got {stripped[:60]!r}")
        if key not in _KEYS:
            raise InvalidIdentifier(
                f"{where}:{n}: unknown key {key[:40]!r}; allowed: {', '.join(_KEYS)}"
            )
        if key in values:
            raise InvalidIdentifier(
                f"{where}:{n}: {key} given again (first on line {values[key][1]})"
            )
        values[key] = (value.strip(), n)
    if "instance_id" not in values:
        raise InvalidIdentifier(f"{where}: no instance_id line")
    raw_id, line = values["instance_id"]
    instance_id = parse_uuid(raw_id, f"{where}:{line}: instance_id")
    fingerprint = values.get("platform_fingerprint", (None, 0))[0]
    if fingerprint is not None and (len(fingerprint) > 128 or not fingerprint.isprintable()):
        raise InvalidIdentifier(
            f"{where}:{values['platform_fingerprint'][1]}: platform_fingerprint is longer "
            "than 128 characters or not printable"
        )
    return instance_id, fingerprint or None


def platform_fingerprint(ctx: ProbeContext) -> str | None:
    """What the firmware says this machine is (``dmi:<uuid>``), or ``None`` if unknown."""
    uuid = dmi_field(ctx, "product_uuid")
    if uuid is None:
        return None
    try:
        return "dmi:" + parse_uuid(uuid)
    except InvalidIdentifier:
        return None


def render_identity_cfg(instance_id: str, fingerprint: str | None) -> str:
    lines = ["# powernode node identity; do not copy into images", f"instance_id = {instance_id}"]
    if fingerprint:
        lines.append(f"platform_fingerprint = {fingerprint}")
    return "\n".join(lines) + "\n"


def write_identity_file(path: Path, instance_id: str, fingerprint: str | None = None) -> str:
    """Create ``path`` holding ``instance_id`` unless it exists; return the ID the file holds.

    First writer wins: if another process (or an earlier boot) created the
    file, its ID is returned and ours is discarded. Raises ``IdentityFileError``
    when the existing file is unusable or the directory cannot be written.
    """
    try:
        instance_id = parse_uuid(instance_id, "instance_id")
    except InvalidIdentifier as e:
        raise IdentityFileError(f"{path}: not written: {e}") from e
    if fingerprint is not None and (len(fingerprint) > 128 or not fingerprint.isprintable()):
        raise IdentityFileError(
            f"{path}: not written: platform fingerprint is longer than 128 characters "
            "or not printable"
        )
    data = render_identity_cfg(instance_id, fingerprint).encode()
    try:
        _publish_once(path, data)
    except OSError as e:
        raise IdentityFileError(
            f"{path}: cannot be written: {e.strerror or e}; check the directory exists "
            "on persistent storage and is writable by the agent"
        ) from e
    try:
        existing = path.read_text(encoding="utf-8")
        return parse_identity_cfg(existing, str(path))[0]
    except (OSError, UnicodeDecodeError, InvalidIdentifier) as e:
        raise IdentityFileError(
            f"{path}: exists but cannot be used ({e}); fix or remove it, then retry"
        ) from e


def _publish_once(path: Path, data: bytes) -> None:
    """Write ``data`` to a fsynced temporary file, then ``link(2)`` it to ``path`` if absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not create_once(path, data, mode=0o644):
        log.info("identity: %s already exists; keeping the ID it holds", path)


class LocalFileSource:
    name = "local"

    def probe(self, ctx: ProbeContext) -> tuple[str, str]:
        path = ctx.path(ctx.config.identity_file)
        text = read_host_text(path, MAX_CFG_BYTES)
        if text is None:
            raise SourceMiss(Outcome.ABSENT, f"{path}: does not exist")
        try:
            instance_id, stored = parse_identity_cfg(text, str(path))
        except InvalidIdentifier as e:
            raise SourceMiss(Outcome.INVALID, str(e)) from e
        detail = f"local file {ctx.config.identity_file}"
        if stored is not None:
            current = platform_fingerprint(ctx)
            if current is not None and current != stored:
                ctx.warn(
                    f"{path} was written on a machine with fingerprint {stored}, this one is "
                    f"{current}: the disk was cloned or moved; the platform should treat "
                    "this node as a possible duplicate"
                )
                detail += " (platform fingerprint changed)"
        return instance_id, detail


__all__ = [
    "IdentityFileError",
    "LocalFileSource",
    "parse_identity_cfg",
    "platform_fingerprint",
    "write_identity_file",
]
