"""The simple-signing payload: cosign's exact bytes, strict parsing."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.signing import PayloadError, SigningSetupError, build_payload, parse_payload
from powernode.signing.payload import MAX_PAYLOAD_SIZE, repository_of
from tests.signing.vectors import ci_digest, ci_layer

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "directory",
    ["dir-img-cosign-valid", "dir-img-cosign-key-rekor-valid", "dir-img-cosign-fulcio-rekor-valid"],
)
def test_builds_cosigns_bytes(directory: str) -> None:
    """Byte for byte the payload cosign signed (containers/image fixtures)."""
    layer = ci_layer(directory)
    parsed = parse_payload(layer.data)
    assert parsed.manifest_digest == ci_digest(directory)
    assert parsed.optional is None
    assert build_payload(parsed.docker_reference, parsed.manifest_digest) == layer.data


def test_annotations_sorted_and_go_escaped() -> None:
    data = build_payload("r.example/a/b", DIGEST, {"z": "1", "a": "<&>\u2028é"})
    text = data.decode()
    assert text.endswith('"optional":{"a":"\\u003c\\u0026\\u003e\\u2028é","z":"1"}}')
    assert parse_payload(data).optional == {"a": "<&>\u2028é", "z": "1"}


@pytest.mark.parametrize(
    "repo",
    [
        "registry.example.com/acme/nginx:1.2",
        "registry.example.com/acme/nginx@" + DIGEST,
        "Registry.example.com/Acme/nginx",
        "",
        "a//b",
    ],
)
def test_build_rejects_bad_repository(repo: str) -> None:
    with pytest.raises(SigningSetupError, match="is not a repository name"):
        build_payload(repo, DIGEST)


@pytest.mark.parametrize("digest", ["sha256:abc", "sha512:" + "a" * 128, "SHA256:" + "a" * 64])
def test_build_rejects_bad_digest(digest: str) -> None:
    with pytest.raises(SigningSetupError, match="is not a manifest digest"):
        build_payload("r.example/a", digest)


def good() -> dict[str, object]:
    return json.loads(build_payload("r.example:5000/a/b", DIGEST))  # type: ignore[no-any-return]


def mutate(path: list[str], value: object) -> bytes:
    doc = good()
    target: dict[str, object] = doc
    for key in path[:-1]:
        target = target[key]  # type: ignore[assignment]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\xff", "payload is not UTF-8", id="utf8"),
        pytest.param(b"{", "payload is not JSON", id="json"),
        pytest.param(b"[]", "payload must be a JSON object", id="array"),
        pytest.param(b'{"critical":{},"critical":{}}', "has the key 'critical' twice", id="dup"),
        pytest.param(
            b'{"optional":null}', "payload is missing field(s) 'critical'", id="no-critical"
        ),
        pytest.param(b'{"critical":1,"x":2}', "payload has unknown field(s) 'x'", id="extra-top"),
        pytest.param(
            mutate(["critical", "type"], "atomic container signature"),
            "critical.type is 'atomic container signature'",
            id="type",
        ),
        pytest.param(
            mutate(["critical", "extra"], 1), "critical has unknown field(s) 'extra'", id="extra"
        ),
        pytest.param(
            mutate(["critical", "identity"], KeyError),
            "critical is missing field(s) 'identity'",
            id="no-identity",
        ),
        pytest.param(
            mutate(["critical", "image", "docker-manifest-digest"], "sha256:12"),
            "docker-manifest-digest must be sha256:<64 hex>",
            id="digest",
        ),
        pytest.param(
            mutate(["critical", "identity", "docker-reference"], 5),
            "docker-reference must be a non-empty string",
            id="reference-type",
        ),
        pytest.param(mutate(["optional"], [1]), "optional must be a JSON object", id="optional"),
        pytest.param(b'{"critical": NaN}', "contains NaN", id="nan"),
        pytest.param(b"[" * 50000 + b"]" * 50000, "payload is", id="deep-or-large"),
        pytest.param(b" " * (MAX_PAYLOAD_SIZE + 1), f"the limit is {MAX_PAYLOAD_SIZE}", id="size"),
    ],
)
def test_parse_rejects(data: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_payload(data)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("reference", "repo"),
    [
        ("r.example:5000/a/b", "r.example:5000/a/b"),
        ("r.example:5000/a/b:v1", "r.example:5000/a/b"),
        ("r.example/a@" + DIGEST, "r.example/a"),
        ("r.example/a:t@" + DIGEST, "r.example/a"),
    ],
)
def test_repository_of(reference: str, repo: str) -> None:
    assert repository_of(reference) == repo


_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)
_repos = st.builds(
    lambda host, parts: "/".join([host, *parts]),
    st.sampled_from(["r.example", "localhost:5000", "10.0.0.1:443", "reg-1.example.com"]),
    st.lists(_component, min_size=1, max_size=4),
)
_annotations = st.none() | st.dictionaries(
    st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=5
)


@given(_repos, st.binary(min_size=32, max_size=32), _annotations)
def test_round_trip(repo: str, digest: bytes, annotations: dict[str, str] | None) -> None:
    manifest_digest = "sha256:" + digest.hex()
    data = build_payload(repo, manifest_digest, annotations)
    parsed = parse_payload(data)
    assert parsed.docker_reference == repo
    assert parsed.manifest_digest == manifest_digest
    assert parsed.optional == (annotations or None)


@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes_raises_only_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_payload(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
        ),
        max_leaves=20,
    )
)
def test_parse_arbitrary_json_raises_only_payload_error(doc: object) -> None:
    with contextlib.suppress(PayloadError):
        parse_payload(json.dumps({"critical": doc}).encode())
