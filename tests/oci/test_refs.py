"""Reference parsing (pure)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from powernode.errors import DataError
from powernode.oci.digest import Digest
from powernode.oci.refs import Reference, parse_reference

D = Digest.of_bytes(b"x")


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("ubuntu", None, "ubuntu", None, None),
        ("library/ubuntu:22.04", None, "library/ubuntu", "22.04", None),
        ("127.0.0.1:5000/mods/base:1.0", "127.0.0.1:5000", "mods/base", "1.0", None),
        ("localhost/a", "localhost", "a", None, None),
        ("reg.example.com/a/b/c@" + str(D), "reg.example.com", "a/b/c", None, D),
        ("host:443/a:t@" + str(D), "host:443", "a", "t", D),
        ("[::1]:5000/a:b", "[::1]:5000", "a", "b", None),
        ("a__b/c-d.e_f---g:_T", None, "a__b/c-d.e_f---g", "_T", None),
    ],
    ids=["bare", "tag", "host-port", "localhost", "digest", "tag+digest", "ipv6", "separators"],
)
def test_parse(
    text: str, registry: str | None, repository: str, tag: str | None, digest: Digest | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Ubuntu", "invalid repository name 'Ubuntu'"),
        ("a//b", "invalid repository name"),
        ("a:", "invalid tag ''"),
        ("a:.x", "invalid tag '.x'"),
        ("a@sha256:abc", "invalid digest 'sha256:abc'"),
        ("a@md5:" + "0" * 32, "invalid digest"),
        ("a_:b", "invalid repository name 'a_'"),
        ("host:port/a", "invalid registry host 'host:port'"),
        ("x" * 2000, "limit is 1024"),
        ("h.io/" + "a" * 252, "name is 257 characters; the limit is 255"),
        ("a" * 256, "repository name is 256 characters"),
        ("", "no repository name"),
    ],
)
def test_reject(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        parse_reference(text)


def test_target() -> None:
    assert parse_reference("a:t").target == "t"
    assert parse_reference(f"a:t@{D}").target == str(D)  # the digest wins
    with pytest.raises(DataError, match="neither a tag nor a digest"):
        _ = parse_reference("a").target


component = st.from_regex(r"[a-z0-9]{1,5}((\.|_|__|-{1,2})[a-z0-9]{1,5}){0,2}", fullmatch=True)
repositories = st.lists(component, min_size=1, max_size=3).map("/".join)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
hosts = st.sampled_from([None, "localhost", "127.0.0.1:5000", "reg.example.com", "[::1]:80"])
digests = st.none() | st.binary(max_size=8).map(Digest.of_bytes)


@given(hosts, repositories, st.none() | tags, digests)
def test_round_trip(host: str | None, repo: str, tag: str | None, digest: Digest | None) -> None:
    # Without a host, a first component holding '.' reads as a host (docker's rule):
    # "0.0/0" is repository "0" on registry "0.0". Such references do not round-trip.
    assume(host is not None or "." not in repo.split("/", maxsplit=1)[0] or "/" not in repo)
    ref = Reference(host, repo, tag, digest)
    assert parse_reference(str(ref)) == ref


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_data_error(text: str) -> None:
    try:
        ref = parse_reference(text)
    except DataError:
        return
    assert parse_reference(str(ref)) == ref
