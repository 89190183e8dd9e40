"""Properties of the manifest reader: round trips, and nothing but ManifestError escapes."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powernode.core.manifest import Manifest, ManifestLimits, parse_manifest
from powernode.errors import ManifestError

slugs = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
packages = st.from_regex(r"[a-z0-9][a-z0-9+.-]{1,15}(=[0-9][a-z0-9.+~:-]{0,8})?", fullmatch=True)
segments = st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,10}", fullmatch=True)
globs = st.builds(
    lambda parts, tail: "/" + "/".join(parts) + tail,
    st.lists(segments, min_size=1, max_size=4),
    st.sampled_from(["", "/", "/**", "/*", "/*.conf"]),
)
constraints = st.sampled_from(["", "@*", "@^1.0", "@~2.3.4", "@>=1.2.0 <2", "@1.x", "@=0.1.0"])
requirements = st.builds(lambda o, n, c: f"{o}/{n}{c}", slugs, slugs, constraints)
texts = st.text(max_size=40)
small = {"max_size": 5}

manifests = st.builds(
    Manifest,
    name=slugs,
    display_name=texts,
    description=texts,
    license=texts,
    package_spec=st.lists(packages, **small).map(tuple),
    file_spec=st.lists(globs, **small).map(tuple),
    mask=st.lists(globs, **small).map(tuple),
    protected_spec=st.lists(globs, **small).map(tuple),
    requires=st.lists(requirements, **small).map(tuple),
    provides=st.lists(slugs, **small).map(tuple),
    allow_devices=st.booleans(),
    allow_setuid=st.booleans(),
)


@given(manifests)
def test_to_dict_from_dict_round_trip(m: Manifest) -> None:
    assert Manifest.from_dict(m.to_dict()) == m


@given(manifests)
def test_yaml_of_to_dict_reads_back_the_same_manifest(m: Manifest) -> None:
    text = yaml.safe_dump(m.to_dict(), sort_keys=False)
    loaded = parse_manifest(text, filename="m.yaml")
    assert loaded.manifest == m
    assert loaded.warnings == ()


YAMLISH = st.text(
    alphabet=st.sampled_from([*list("ab1-_:[]{},&*!|>'\"#?%@`~.\\/ \t\n"), "\x00", "é"]),
    max_size=120,
)
SMALL = ManifestLimits(max_bytes=4096, max_depth=6, max_nodes=200, max_string_length=64)


def _only_manifest_error(data: str | bytes) -> None:
    try:
        parse_manifest(data, filename="f.yaml", limits=SMALL)
    except ManifestError as e:
        assert e.problems, "a ManifestError always lists at least one problem"
        for p in e.problems:
            assert p.file == "f.yaml" and p.message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_random_yamlish_text_raises_only_manifest_error(text: str) -> None:
    _only_manifest_error(text)


@given(st.binary(max_size=120))
def test_random_bytes_raise_only_manifest_error(data: bytes) -> None:
    _only_manifest_error(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "file_spec",
                    "mask",
                    "dependencies",
                    "requires",
                    "provides",
                    "identity",
                    "include",
                    "exclude",
                    "dependency_spec",
                    "allow",
                    "devices",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "schema_version",
                "name",
                "identity",
                "file_spec",
                "mask",
                "dependencies",
                "dependency_spec",
                "allow",
                "package_spec",
                "license",
            ]
        ),
        json_values,
    )
)
def test_random_documents_raise_only_manifest_error(doc: dict[str, object]) -> None:
    _only_manifest_error(yaml.safe_dump(doc))
    try:
        Manifest.from_dict(doc)
    except ManifestError as e:
        assert e.problems
