"""Kernel command line: the kernel's next_arg() splitting and the powernode.id source."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.agent.identity import IdentityConfig, Outcome
from powernode.agent.identity.cmdline import CmdlineSource, parse_cmdline, parse_nul_argv
from powernode.agent.identity.source import ProbeContext, SourceMiss
from tests.agent.metadata_servers import FakeHost

ID = "6b1a24a1-4061-4607-8bf4-a3963d0c5895"
OTHER = "0f0e0d0c-0b0a-0908-0706-050403020100"


@pytest.mark.parametrize(
    ("line", "pairs"),
    [
        ("ro quiet", [("ro", None), ("quiet", None)]),
        ("root=/dev/vda1  console=ttyS0\n", [("root", "/dev/vda1"), ("console", "ttyS0")]),
        ('k="a b" x=1', [("k", "a b"), ("x", "1")]),
        # GRUB rewrites foo="a b" into "foo=a b" (bootc-dev/bootc#1737): same result
        ('"k=a b" x=1', [("k", "a b"), ("x", "1")]),
        ('"flag"', [("flag", None)]),
        ("k=a=b", [("k", "a=b")]),
        ('k=""', [("k", "")]),
        ('k="', [("k", "")]),
        ('k=a"b c"d', [("k", 'a"b c"d')]),
        ("ro -- powernode.id=x", [("ro", None)]),
        ('ro "--" x=1', [("ro", None), ("--", None), ("x", "1")]),
        ("\tro\x0bquiet", [("ro", None), ("quiet", None)]),
        ("", []),
    ],
    ids=[
        "flags",
        "values",
        "quoted-value",
        "quoted-token",
        "quoted-flag",
        "equals-in-value",
        "empty-quoted",
        "lone-quote",
        "inner-quotes",
        "double-dash-stops",
        "quoted-double-dash",
        "other-whitespace",
        "empty",
    ],
)
def test_parse_cmdline_like_the_kernel(line: str, pairs: list[tuple[str, str | None]]) -> None:
    assert parse_cmdline(line) == pairs


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-/:", min_size=1, max_size=12)


@given(st.lists(st.tuples(_word, _word), max_size=8))
def test_unquoted_pairs_round_trip(pairs: list[tuple[str, str]]) -> None:
    pairs = [(k, v) for k, v in pairs if k != "--"]
    line = " ".join(f"{k}={v}" for k, v in pairs)
    assert parse_cmdline(line) == pairs


@given(st.lists(st.tuples(_word, st.text(alphabet="abc xyz=", max_size=10)), max_size=6))
def test_quoted_values_round_trip_in_both_grub_forms(pairs: list[tuple[str, str]]) -> None:
    pairs = [(k, v) for k, v in pairs if "=" not in k]
    plain = " ".join(f'{k}="{v}"' for k, v in pairs)
    grub = " ".join(f'"{k}={v}"' for k, v in pairs)
    assert parse_cmdline(plain) == pairs
    assert parse_cmdline(grub) == pairs


@given(st.text(max_size=200))
def test_parse_cmdline_never_crashes(text: str) -> None:
    for key, value in parse_cmdline(text):
        assert isinstance(key, str)
        assert value is None or isinstance(value, str)


def test_nul_argv() -> None:
    assert parse_nul_argv(f"/sbin/init\0powernode.id={ID}\0--\0") == [
        ("/sbin/init", None),
        ("powernode.id", ID),
        ("--", None),
    ]


def _probe(tmp_path: Path, line: str | None, in_container: bool = False) -> tuple[str, str]:
    host = FakeHost(tmp_path)
    if line is not None:
        if in_container:
            host.write("/proc/1/cmdline", line)
        else:
            host.cmdline(line)
    config = IdentityConfig(root=tmp_path, in_container=in_container)
    ctx = ProbeContext(config, in_container=in_container, network_deadline=0.0)
    return CmdlineSource().probe(ctx)


@pytest.mark.parametrize(
    "line",
    [
        f"ro powernode.id={ID} quiet",
        f"powernode.id={ID.upper()}",
        f'powernode.id="{ID}"',
        f'"powernode.id={ID}"',
        f"powernode.id={ID} powernode.id={ID}",
    ],
    ids=["plain", "uppercase", "quoted-value", "grub-quoted", "repeated-same"],
)
def test_cmdline_source_finds_the_id(tmp_path: Path, line: str) -> None:
    assert _probe(tmp_path, line) == (ID, "powernode.id= in /proc/cmdline")


@pytest.mark.parametrize(
    ("line", "outcome", "message"),
    [
        ("ro quiet", Outcome.ABSENT, "no powernode.id= parameter"),
        (f"ro -- powernode.id={ID}", Outcome.ABSENT, "no powernode.id= parameter"),
        ("powernode.id", Outcome.INVALID, "without '=<uuid>'"),
        ("powernode.id=", Outcome.INVALID, "is empty"),
        ("powernode.id=node-7", Outcome.INVALID, "is not a UUID"),
        (
            "powernode.id=00000000-0000-0000-0000-000000000000",
            Outcome.INVALID,
            "placeholder",
        ),
        (f"powernode.id={ID} powernode.id={OTHER}", Outcome.INVALID, "different values"),
        (None, Outcome.ABSENT, "does not exist"),
    ],
    ids=["absent", "after-double-dash", "flag", "empty", "not-uuid", "nil", "conflict", "no-file"],
)
def test_cmdline_source_misses_say_why(
    tmp_path: Path, line: str | None, outcome: Outcome, message: str
) -> None:
    with pytest.raises(SourceMiss) as info:
        _probe(tmp_path, line)
    assert info.value.outcome is outcome
    assert message in info.value.reason


def test_similar_keys_are_not_taken(tmp_path: Path) -> None:
    with pytest.raises(SourceMiss) as info:
        _probe(tmp_path, f"xpowernode.id={ID} powernode.idx={ID} powernode_id={ID}")
    assert info.value.outcome is Outcome.ABSENT


def test_in_a_container_pid1_argv_is_read(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cmdline(f"powernode.id={OTHER}")  # the host's, must be ignored
    instance_id, detail = _probe(tmp_path, f"/sbin/init\0powernode.id={ID}\0", in_container=True)
    assert instance_id == ID
    assert "/proc/1/cmdline" in detail
    assert host.root.joinpath("proc/cmdline").exists()


def test_oversized_cmdline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceMiss) as info:
        _probe(tmp_path, "x" * (64 * 1024 + 10))
    assert info.value.outcome is Outcome.INVALID
    assert "larger than 65536 bytes" in info.value.reason
