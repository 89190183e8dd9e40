"""Identifier checks: UUID form, placeholders in both byte orders, provider IDs, limits."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.agent.identity.validate import (
    PLACEHOLDER_UUIDS,
    InvalidIdentifier,
    parse_aws_instance_id,
    parse_decimal_id,
    parse_uuid,
    swap_uuid_byte_order,
    vmware_serial_to_uuid,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5c08b38e-4d57-4c23-ac45-aca61037f084", "5c08b38e-4d57-4c23-ac45-aca61037f084"),
        ("5C08B38E-4D57-4C23-AC45-ACA61037F084\n", "5c08b38e-4d57-4c23-ac45-aca61037f084"),
        ("  5c08b38e-4d57-4c23-ac45-aca61037f084 ", "5c08b38e-4d57-4c23-ac45-aca61037f084"),
        # version/variant bits are not checked: real SMBIOS UUIDs break them
        ("4c4c4544-0042-3510-8052-b4c04f333432", "4c4c4544-0042-3510-8052-b4c04f333432"),
    ],
    ids=["canonical", "uppercase-pre-4.15-kernel", "whitespace", "dell-non-rfc4122"],
)
def test_uuid_is_normalised(raw: str, expected: str) -> None:
    assert parse_uuid(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("5c08b38e4d574c23ac45aca61037f084", "is not a UUID"),
        ("{5c08b38e-4d57-4c23-ac45-aca61037f084}", "is not a UUID"),
        ("urn:uuid:5c08b38e-4d57-4c23-ac45-aca61037f084", "is not a UUID"),
        ("5c08b38e-4d57-4c23-ac45-aca61037f08g", "is not a UUID"),
        ("5c08b38e-4d57-4c23-ac45\x00-aca61037f084", "control character"),
        ("5c08b38e-4d57\x1b-4c23-ac45-aca61037f084", "control character"),
        ("a" * 300, "limit 256"),
        ("00000000-0000-0000-0000-000000000000", "placeholder"),
        ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "placeholder"),
        ("03000200-0400-0500-0006-000700080009", "placeholder"),
        # the AMI placeholder as it shows with the first three fields swapped
        ("00020003-0004-0005-0006-000700080009", "placeholder"),
        ("deadbeef-dead-beef-dead-beefdeadbeef", "placeholder"),
        ("efbeadde-adde-efbe-dead-beefdeadbeef", "placeholder"),
    ],
    ids=[
        "empty",
        "blank",
        "no-hyphens",
        "braces",
        "urn",
        "non-hex",
        "nul",
        "escape",
        "overlong",
        "nil",
        "max",
        "ami",
        "ami-swapped",
        "deadbeef",
        "deadbeef-swapped",
    ],
)
def test_bad_uuids_are_refused_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message):
        parse_uuid(raw)


def test_swap_matches_the_documented_vmware_example() -> None:
    # IDENTITY_SOURCES.md §9: uuid.bios 421f245c-7fa8-60fa-… shows as 5c241f42-a87f-fa60-…
    assert (
        swap_uuid_byte_order("421f245c-7fa8-60fa-6af6-a46351ced0eb")
        == "5c241f42-a87f-fa60-6af6-a46351ced0eb"
    )


@given(st.uuids())
def test_swap_is_an_involution_and_matches_uuid_bytes_le(u: uuid.UUID) -> None:
    s = str(u)
    assert swap_uuid_byte_order(swap_uuid_byte_order(s)) == s
    assert swap_uuid_byte_order(s) == str(uuid.UUID(bytes=u.bytes_le))


@given(st.uuids())
def test_any_real_uuid_round_trips(u: uuid.UUID) -> None:
    s = str(u)
    if s in PLACEHOLDER_UUIDS or swap_uuid_byte_order(s) in PLACEHOLDER_UUIDS:
        return
    assert parse_uuid(s.upper()) == s


@given(st.text(max_size=80))
def test_parse_uuid_returns_canonical_or_raises(text: str) -> None:
    try:
        value = parse_uuid(text)
    except InvalidIdentifier:
        return
    assert str(uuid.UUID(value)) == value


@pytest.mark.parametrize("raw", ["i-0af01c0123456789a", "i-1234abcd", " i-1234abcd\n"])
def test_aws_ids(raw: str) -> None:
    assert parse_aws_instance_id(raw) == raw.strip()


@pytest.mark.parametrize(
    "raw",
    ["i-123", "i-0AF01C0123456789A", "ami-1234abcd", "i-1234abcd5", "<html>", "i-1234abcd\x07"],
)
def test_bad_aws_ids(raw: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_aws_instance_id(raw)


@pytest.mark.parametrize("raw", ["42", "2756294", "4520031799277581759", str(2**64 - 1)])
def test_decimal_ids(raw: str) -> None:
    assert parse_decimal_id(raw, "id") == raw


@pytest.mark.parametrize("raw", ["0", "042", "-1", "1e9", "12 34", str(2**64), "", "٣"])
def test_bad_decimal_ids(raw: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_decimal_id(raw, "id")


def test_vmware_serial_gives_the_bios_uuid() -> None:
    serial = "VMware-42 1f 24 5c 7f a8 60 fa-6a f6 a4 63 51 ce d0 eb\n"
    assert vmware_serial_to_uuid(serial) == "421f245c-7fa8-60fa-6af6-a46351ced0eb"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("Dell-42 1f 24 5c", "does not start with 'VMware-'"),
        ("VMware-42 1f 24 5c 7f a8 60 fa-6a f6 a4 63 51 ce d0", "16 hex bytes"),
        ("VMware-00 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00", "placeholder"),
    ],
)
def test_bad_vmware_serials(raw: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message):
        vmware_serial_to_uuid(raw)
