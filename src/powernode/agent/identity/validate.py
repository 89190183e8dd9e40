"""Pure checks for every identifier a source hands us: format, length, placeholders.

Each check takes the raw text, returns the normalised identifier or raises
``InvalidIdentifier`` whose message says what was wrong. Nothing here does I/O.

UUID rules follow the SMBIOS pitfalls in IDENTITY_SOURCES.md §10: compare in
lowercase, reject all-zero and all-F, reject known BIOS placeholders in
*both* byte orders, and do not reject on RFC 4122 version/variant bits,
because real SMBIOS UUIDs often break them.
"""

from __future__ import annotations

import re

from powernode.errors import DataError

# Longest raw value we even look at; every ID we accept is far shorter.
MAX_RAW_LENGTH = 256

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# AWS instance IDs: "i-" and 8 (older) or 17 hex digits (EC2 User Guide, "Instance IDs").
_AWS_RE = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_DECIMAL_RE = re.compile(r"[1-9][0-9]{0,19}")
_UINT64_MAX = 2**64 - 1

# Placeholders firmware writes instead of a real UUID (IDENTITY_SOURCES.md §10).
PLACEHOLDER_UUIDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",  # AMI BIOS default
        "00010203-0405-0607-0809-0a0b0c0d0e0f",
        "fefefefe-fefe-fefe-fefe-fefefefefefe",
        "deadbeef-dead-beef-dead-beefdeadbeef",
    }
)


class InvalidIdentifier(DataError, ValueError):
    """A value that is not an acceptable identifier; the message says why."""


def _clean(raw: str, what: str) -> str:
    """Strip surrounding whitespace and refuse control characters and overlong values."""
    if len(raw) > MAX_RAW_LENGTH:
        raise InvalidIdentifier(f"{what} is {len(raw)} characters long (limit {MAX_RAW_LENGTH})")
    value = raw.strip()
    if not value:
        raise InvalidIdentifier(f"{what} is empty")
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F or not ch.isprintable():
            raise InvalidIdentifier(f"{what} contains the control character {ch!r}")
    return value


def swap_uuid_byte_order(value: str) -> str:
    """Swap the first three fields between big- and little-endian encoding.

    SMBIOS 2.6+ stores time_low, time_mid and time_hi little-endian; firmware
    that disagrees with its declared version (VMware HW13, Azure Gen1) shows
    up swapped in Linux, so comparisons must try both orders.
    """
    hexdigits = value.replace("-", "")
    raw = bytes.fromhex(hexdigits)
    swapped = raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]
    h = swapped.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_uuid(raw: str, what: str = "UUID") -> str:
    """Return ``raw`` as a lowercase canonical UUID, or raise ``InvalidIdentifier``."""
    value = _clean(raw, what).lower()
    if not _UUID_RE.fullmatch(value):
        raise InvalidIdentifier(
            f"{what} {value[:64]!r} is not a UUID in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
        )
    if value in PLACEHOLDER_UUIDS or swap_uuid_byte_order(value) in PLACEHOLDER_UUIDS:
        raise InvalidIdentifier(
            f"{what} {value} is a firmware placeholder, not a unique ID (shared by many machines)"
        )
    return value


def parse_aws_instance_id(raw: str) -> str:
    """Return an EC2 instance ID (``i-`` and 8 or 17 lowercase hex digits)."""
    value = _clean(raw, "EC2 instance-id")
    if not _AWS_RE.fullmatch(value):
        raise InvalidIdentifier(
            f"EC2 instance-id {value[:64]!r} is not 'i-' followed by 8 or 17 hex digits"
        )
    return value


def parse_decimal_id(raw: str, what: str) -> str:
    """Return a positive decimal ID that fits in 64 bits (GCE, DigitalOcean, Hetzner)."""
    value = _clean(raw, what)
    if not _DECIMAL_RE.fullmatch(value) or int(value) > _UINT64_MAX:
        raise InvalidIdentifier(f"{what} {value[:64]!r} is not a positive decimal 64-bit number")
    return value


def vmware_serial_to_uuid(raw: str) -> str:
    """Turn a DMI serial ``VMware-42 1f 24 5c 7f a8 60 fa-6a f6 …`` into the BIOS UUID.

    The serial carries the 16 bytes of vSphere ``uuid.bios`` in order
    (IDENTITY_SOURCES.md §9), unlike ``product_uuid`` which may be swapped.
    """
    value = _clean(raw, "VMware serial")
    if not value.startswith("VMware-"):
        raise InvalidIdentifier(f"VMware serial {value[:64]!r} does not start with 'VMware-'")
    hexdigits = value.removeprefix("VMware-").replace(" ", "").replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{32}", hexdigits):
        raise InvalidIdentifier(f"VMware serial {value[:64]!r} does not hold 16 hex bytes")
    h = hexdigits
    return parse_uuid(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", "VMware BIOS UUID")
