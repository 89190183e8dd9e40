"""manifest.yaml: valid forms, every kind of bad input with its message and position."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from powernode.core.manifest import (
    LoadedManifest,
    Manifest,
    ManifestLimits,
    check_manifest,
    load_manifest,
    parse_manifest,
    schema_text,
)
from powernode.errors import ConfigError, ManifestError, Problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"

CANONICAL = """\
schema_version: 1
name: my-nginx
display_name: "nginx 1.26 with TLS hardening"
description: "nginx 1.26 with TLS hardening + /healthz endpoint"
license: "BSD-2-Clause"
package_spec:
  - nginx
  - nginx-extras=1.26.0-1~bpo12+1
file_spec:
  - "/etc/nginx/**"
  - "/var/www/healthz/**"
mask:
  - "/etc/nginx/sites-enabled/default"
protected_spec:
  - "/etc/nginx/conf.d/00-security.conf"
dependencies:
  requires:
    - "powernode/system-base@^1.0"
    - "powernode/security-hardening@^1.0"
    - "powernode/chrony@^1.0"
  provides:
    - "http-server"
allow:
  devices: false
  setuid: true
"""

LEGACY = """\
schema_version: 1
identity:
  name: my-redis
  category: userland
  variety: subscription
  description: Redis 7.4 with TLS + persistence
  cosign_identity_regexp: '^https://registry\\.example\\.com/acme/modules/my-redis@.*$'
  cosign_issuer_regexp: '^https://gitea\\.example\\.org$'
package_spec:
  - redis-server
file_spec:
  include:
    - "/etc/redis/**"
  exclude:
    - "/etc/redis/sentinel.conf"
  mask:
    - "/etc/redis/extra.conf"
protected_spec:
  - "/etc/redis/redis.conf"
dependency_spec:
  - name: system-base
  - name: security-hardening
"""


def parse(text: str, **kw: object) -> LoadedManifest:
    return parse_manifest(text, filename="m.yaml", **kw)  # type: ignore[arg-type]


def problems(text: str | bytes, **kw: object) -> list[Problem]:
    with pytest.raises(ManifestError) as e:
        parse_manifest(text, filename="m.yaml", **kw)  # type: ignore[arg-type]
    return e.value.problems


# --- valid --------------------------------------------------------------------------


def test_canonical_form_reads_every_field() -> None:
    loaded = parse(CANONICAL)
    m = loaded.manifest
    assert loaded.warnings == ()
    assert m.name == "my-nginx"
    assert m.display_name == "nginx 1.26 with TLS hardening"
    assert m.license == "BSD-2-Clause"
    assert m.package_spec == ("nginx", "nginx-extras=1.26.0-1~bpo12+1")
    assert m.file_spec == ("/etc/nginx/**", "/var/www/healthz/**")
    assert m.mask == ("/etc/nginx/sites-enabled/default",)
    assert m.protected_spec == ("/etc/nginx/conf.d/00-security.conf",)
    assert m.requires == (
        "powernode/system-base@^1.0",
        "powernode/security-hardening@^1.0",
        "powernode/chrony@^1.0",
    )
    assert m.provides == ("http-server",)
    assert (m.allow_devices, m.allow_setuid) == (False, True)
    assert dict(m.registration_hints) == {}
    assert str(m.requirements()[0]) == "powernode/system-base@^1.0"


def test_legacy_form_is_normalised_with_one_warning_per_moved_field() -> None:
    loaded = parse(LEGACY)
    m = loaded.manifest
    assert m.name == "my-redis"
    assert m.description == "Redis 7.4 with TLS + persistence"
    assert m.file_spec == ("/etc/redis/**",)
    assert m.mask == ("/etc/redis/sentinel.conf", "/etc/redis/extra.conf")
    assert m.requires == ("powernode/system-base@*", "powernode/security-hardening@*")
    assert dict(m.registration_hints) == {
        "category": "userland",
        "variety": "subscription",
        "cosign_identity_regexp": r"^https://registry\.example\.com/acme/modules/my-redis@.*$",
        "cosign_issuer_regexp": r"^https://gitea\.example\.org$",
    }
    where = [(w.line, w.column, w.path) for w in loaded.warnings]
    assert where == [
        (3, 3, "identity.name"),
        (4, 3, "identity.category"),
        (5, 3, "identity.variety"),
        (6, 3, "identity.description"),
        (7, 3, "identity.cosign_identity_regexp"),
        (8, 3, "identity.cosign_issuer_regexp"),
        (12, 3, "file_spec.include"),
        (14, 3, "file_spec.exclude"),
        (16, 3, "file_spec.mask"),
        (20, 1, "dependency_spec"),
    ]
    by_path = {w.path: w.message for w in loaded.warnings}
    assert "top-level key 'name'" in by_path["identity.name"]
    assert "moved to platform registration" in by_path["identity.category"]
    assert "'mask:'" in by_path["file_spec.exclude"]
    assert "'powernode/system-base@*'" in by_path["dependency_spec"]


def test_legacy_default_owner_is_a_parameter() -> None:
    m = parse(LEGACY, default_owner="acme").manifest
    assert m.requires == ("acme/system-base@*", "acme/security-hardening@*")
    with pytest.raises(ConfigError, match="not a lowercase slug"):
        parse(LEGACY, default_owner="Acme")


def test_legacy_form_equals_its_canonical_rewrite() -> None:
    canonical = parse(
        "schema_version: 1\nname: my-redis\ndescription: Redis 7.4 with TLS + persistence\n"
        "package_spec: [redis-server]\nfile_spec: ['/etc/redis/**']\n"
        "mask: ['/etc/redis/sentinel.conf', '/etc/redis/extra.conf']\n"
        "protected_spec: ['/etc/redis/redis.conf']\ndependencies:\n  requires:\n"
        "    - powernode/system-base@*\n    - powernode/security-hardening@*\n"
    ).manifest
    assert parse(LEGACY).manifest.to_dict() == canonical.to_dict()


@pytest.mark.parametrize(
    ("text", "check"),
    [
        pytest.param("schema_version: 1\nname: a\n", {"name": "a", "file_spec": []}, id="minimal"),
        pytest.param("schema_version: 1\nname: x1-y\nlicense: ''\n", {"license": ""}, id="empty"),
        pytest.param(
            "schema_version: 1\nname: a\nallow: {devices: true}\n",
            {"allow": {"devices": True, "setuid": False}},
            id="allow-devices-only",
        ),
        pytest.param(
            "schema_version: 1\nname: a\ndescription: 2024-01-01\n",
            {"description": "2024-01-01"},
            id="timestamp-stays-text",
        ),
        pytest.param("\ufeffschema_version: 1\nname: a\n", {"name": "a"}, id="byte-order-mark"),
        pytest.param(
            "schema_version: 1\nname: a\ndependencies: {provides: [x]}\n"
            "dependency_spec: [{name: b}]\n",
            {"dependencies": {"requires": ["powernode/b@*"], "provides": ["x"]}},
            id="legacy-deps-with-provides",
        ),
        pytest.param(
            "schema_version: 1\nname: a\nfile_spec: {include: ['/etc/a']}\nmask: ['/etc/a/b']\n",
            {"file_spec": ["/etc/a"], "mask": ["/etc/a/b"]},
            id="legacy-include-with-canonical-mask",
        ),
        pytest.param(
            "schema_version: 1\nname: " + "a" * 63 + "\n", {"name": "a" * 63}, id="name-63"
        ),
        pytest.param(
            "schema_version: 1\nname: a\npackage_spec: ['libstdc++6=12.2.0-14', g++, 'x.y']\n",
            {"package_spec": ["libstdc++6=12.2.0-14", "g++", "x.y"]},
            id="debian-names",
        ),
    ],
)
def test_valid(text: str, check: dict[str, object]) -> None:
    d = parse(text).manifest.to_dict()
    for key, value in check.items():
        assert d[key] == value


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_example_modules_are_valid(name: str) -> None:
    loaded = load_manifest(EXAMPLES / name / "manifest.yaml")
    assert loaded.manifest.name == name


# --- invalid: one table, each case names message text and position ------------------

BAD = [
    pytest.param(
        "schema_version: 1\nname: a\nfle_spec: []\n",
        [(3, 1, "fle_spec", "unknown key 'fle_spec'; did you mean 'file_spec'?")],
        id="unknown-key",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependencies:\n  require: []\n",
        [(4, 3, "dependencies.require", "unknown key 'require'; did you mean 'requires'?")],
        id="unknown-nested-key",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nvariety: config\n",
        [(3, 1, "variety", "variety is set at platform registration")],
        id="platform-field-at-top",
    ),
    pytest.param(
        "schema_version: 1\n",
        [(1, 1, "", "missing required key 'name'")],
        id="missing-name",
    ),
    pytest.param(
        "schema_version: 2\nname: a\n",
        [(1, 17, "schema_version", "unsupported schema_version 2; this powernode reads")],
        id="schema-version",
    ),
    pytest.param(
        "schema_version: true\nname: a\n",
        [(1, 17, "schema_version", "unsupported schema_version True")],
        id="schema-version-bool",
    ),
    pytest.param(
        "schema_version: 1\nname: My_Module\n",
        [(2, 7, "name", "'My_Module' is not a lowercase slug")],
        id="bad-name",
    ),
    pytest.param(
        "schema_version: 1\nname: -a\n",
        [(2, 7, "name", "'-a' is not a lowercase slug")],
        id="name-leading-dash",
    ),
    pytest.param(
        "schema_version: 1\nname: " + "a" * 64 + "\n",
        [(2, 7, "name", "is not a lowercase slug")],
        id="name-too-long",
    ),
    pytest.param(
        'schema_version: 1\nname: "a\\n"\n',
        [(2, 7, "name", "'a\\n' is not a lowercase slug")],
        id="name-trailing-newline",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndisplay_name: yes\n",
        [(3, 15, "display_name", "must be a string, not a boolean (true); put it in quotes")],
        id="wrong-type-unquoted-bool",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nlicense: 2\n",
        [(3, 10, "license", "must be a string, not an integer (2); put it in quotes")],
        id="wrong-type-int",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec: /etc/a\n",
        [(3, 12, "file_spec", "must be a list, not a string ('/etc/a'); write a list")],
        id="wrong-type-string-for-list",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nallow: {setuid: 'yes'}\n",
        [(3, 17, "allow.setuid", "must be true or false, not a string ('yes')")],
        id="wrong-type-bool",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependencies: []\n",
        [(3, 15, "dependencies", "must be a mapping, not a list")],
        id="wrong-type-mapping",
    ),
    pytest.param(
        "- a\n- b\n",
        [(1, 1, "", "a manifest is a mapping (key: value lines), not a list")],
        id="not-a-mapping",
    ),
    pytest.param("", [(1, 1, "", "a manifest is a mapping")], id="empty-file"),
    pytest.param(
        "schema_version: 1\nname: a\npackage_spec: [nginx, 'Nginx Extras']\n",
        [(3, 23, "package_spec[1]", "'Nginx Extras' is not a Debian package name")],
        id="bad-package",
    ),
    pytest.param(
        "schema_version: 1\nidentity:\n  name: a\nname: b\n",
        [(3, 3, "identity.name", "given both here and as top-level 'name'")],
        id="legacy-canonical-mix-name",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec:\n  include: ['/a']\n  exclude: ['/b']\n"
        "mask: ['/c']\n",
        [(5, 3, "file_spec.exclude", "file_spec.exclude and the top-level 'mask' are both")],
        id="legacy-canonical-mix-mask",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependency_spec: [{name: b}]\n"
        "dependencies: {requires: ['x/y']}\n",
        [(3, 1, "dependency_spec", "dependency_spec and dependencies.requires are both given")],
        id="legacy-canonical-mix-deps",
    ),
    pytest.param(
        "schema_version: 1\nidentity:\n  name: a\n  colour: blue\n",
        [(4, 3, "identity.colour", "unknown key 'colour'")],
        id="legacy-unknown-identity-key",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependency_spec:\n  - name: b\n    version: '1'\n  - c\n",
        [
            (5, 5, "dependency_spec[0].version", "unknown key 'version'"),
            (6, 5, "dependency_spec[1]", "must be a mapping {name: <module>}, not a string ('c')"),
        ],
        id="legacy-bad-dependency-spec",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependency_spec:\n  - name: Bad\n",
        [(4, 11, "dependency_spec[0].name", "invalid requirement 'powernode/Bad@*'")],
        id="legacy-bad-dependency-name",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec: {include: ['/a'], exclude: '/b'}\n",
        [(3, 39, "file_spec.exclude", "must be a list, not a string ('/b')")],
        id="legacy-exclude-not-list",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec: {include: ['/a', 3]}\n",
        [(3, 29, "file_spec.include[1]", "must be a string, not an integer (3)")],
        id="legacy-include-entry-located",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec: &x ['/a']\nmask: *x\n",
        [
            (3, 12, "file_spec", "YAML anchor &x is not allowed"),
            (4, 7, "mask", "YAML alias *x is not allowed: aliases can expand exponentially"),
        ],
        id="alias",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nname: b\n",
        [(3, 1, "name", "duplicate key 'name' (first at line 2)")],
        id="duplicate-key",
    ),
    pytest.param(
        "schema_version: 1\nname: a\n1: x\n",
        [(3, 1, "", "key 1 is not a string; quote it")],
        id="non-string-key",
    ),
    pytest.param(
        "schema_version: 1\nname: a\n? [k]\n: x\n",
        [(3, 3, "", "a mapping or list is used as a key")],
        id="complex-key",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec: ['/a'\n",
        [(4, 1, "", "YAML syntax error: while parsing a flow sequence")],
        id="syntax-error-unclosed",
    ),
    pytest.param(
        "schema_version: 1\nname: a: b\n",
        [(2, 8, "", "YAML syntax error: mapping values are not allowed")],
        id="syntax-error-mapping",
    ),
    pytest.param(
        "schema_version: 1\nname: a\n---\nname: b\n",
        [(3, 1, "", "more than one YAML document")],
        id="two-documents",
    ),
    pytest.param(
        "schema_version: 1\nname: !!binary aGk=\n",
        [(2, 7, "name", "YAML tag !!binary is not allowed")],
        id="binary-tag",
    ),
    pytest.param(
        "schema_version: 1\nname: !!python/object:os.system x\n",
        [(2, 7, "name", "YAML tag !!python/object:os.system is not allowed")],
        id="python-tag",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec: !!set {a: null}\n",
        [(3, 12, "file_spec", "YAML tag !!set is not allowed here")],
        id="set-tag",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndescription: \x07\n",
        [(3, 14, "", "control characters are not allowed (#x0007)")],
        id="control-character",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndescription: \ud800\n",
        [(3, 14, "", "lone surrogate U+D800 is not valid text")],
        id="lone-surrogate",
    ),
    pytest.param(
        "schema_version: 1\nname: a\n<<: {x: 1}\n",
        [(3, 1, "<<", "unknown key '<<'")],
        id="merge-key-is-just-unknown",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nx: !!int abc\n",
        [(3, 1, "x", "unknown key 'x'"), (3, 4, "x", "cannot read 'abc' as int")],
        id="bad-explicit-int",
    ),
    pytest.param(
        b"schema_version: 1\nname: a\ndescription: \xff\n",
        [(3, 14, "", "not valid UTF-8 (byte 0xff)")],
        id="bad-utf8",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec:\n  - '/etc/[abc'\n",
        [(4, 11, "file_spec[0]", "glob '/etc/[abc' at offset 5: '[' has no closing ']'")],
        id="bad-glob",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nprotected_spec: ['/etc//x']\n",
        [(3, 24, "protected_spec[0]", "empty path component '//'")],
        id="bad-glob-protected",
    ),
    pytest.param(
        'schema_version: 1\nname: a\nfile_spec: ["etc/../../root/.ssh/**"]\n',
        [(3, 18, "file_spec[0]", "at offset 4: path component '..'")],
        id="dotdot-glob-issue-13-item-14",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nmask:\n  - /etc/./x\n",
        [(4, 10, "mask[0]", "at offset 5: path component '.'")],
        id="dot-glob-plain",
    ),
    pytest.param(
        'schema_version: 1\nname: a\nmask: ["/\\u00e9/../x"]\n',
        [(3, 8, "mask[0]", "at offset 3: path component '..'")],
        id="dotdot-glob-escaped-keeps-value-column",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nfile_spec:\n  include: ['/x/../y']\n",
        [(4, 17, "file_spec.include[0]", "path component '..'")],
        id="dotdot-glob-legacy-form",
    ),
    pytest.param(
        "schema_version: 1\nname: a\nmask: ['']\n",
        [(3, 8, "mask[0]", "must not be empty")],
        id="empty-glob",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependencies:\n  requires:\n    - a/b@^1\n    - a/b@>>1\n",
        [(6, 7, "dependencies.requires[1]", "invalid requirement 'a/b@>>1': at offset 5")],
        id="bad-requirement",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependencies: {requires: [nope]}\n",
        [(3, 27, "dependencies.requires[0]", "missing '/'")],
        id="requirement-without-owner",
    ),
    pytest.param(
        "schema_version: 1\nname: a\ndependencies: {provides: [Web]}\n",
        [(3, 27, "dependencies.provides[0]", "'Web' is not a lowercase slug")],
        id="bad-provides",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_invalid(text: str | bytes, expected: list[tuple[int, int, str, str]]) -> None:
    got = problems(text)
    assert len(got) == len(expected), [str(p) for p in got]
    for p, (line, column, path, message) in zip(got, expected, strict=True):
        assert p.file == "m.yaml"
        assert (p.line, p.column, p.path) == (line, column, path), str(p)
        assert message in p.message, str(p)


SMALL = ManifestLimits(
    max_bytes=200, max_depth=4, max_list_entries=3, max_string_length=20, max_nodes=30
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "schema_version: 1\nname: a\ndescription: '" + "x" * 200 + "'\n",
            (0, 0, "", "file is 242 bytes; the limit is 200"),
            id="too-large",
        ),
        pytest.param(
            "schema_version: 1\nname: a\nx: [[[[1]]]]\n",
            (3, 7, "x[0][0][0]", "nested deeper than 4 levels"),
            id="too-deep",
        ),
        pytest.param(
            "schema_version: 1\nname: a\nfile_spec: ['/a', '/b', '/c', '/d']\n",
            (3, 12, "file_spec", "4 entries; the limit is 3"),
            id="too-many-globs",
        ),
        pytest.param(
            "schema_version: 1\nname: a\ndescription: " + "y" * 21 + "\n",
            (3, 14, "description", "text of 21 characters; the limit is 20"),
            id="string-too-long",
        ),
        pytest.param(
            "schema_version: 1\nname: a\nx: [" + ", ".join("1" * 30) + "]\n",
            (3, 74, "x[23]", "more than 30 YAML nodes; the limit is 30"),
            id="too-many-nodes",
        ),
    ],
)
def test_limits(text: str, expected: tuple[int, int, str, str]) -> None:
    got = problems(text, limits=SMALL)
    assert len(got) == 1, [str(p) for p in got]
    p = got[0]
    assert (p.line, p.column, p.path) == expected[:3], str(p)
    assert expected[3] in p.message


def test_default_limits() -> None:
    assert ManifestLimits() == ManifestLimits(
        max_bytes=262144,
        max_depth=16,
        max_list_entries=1000,
        max_string_length=4096,
        max_nodes=20000,
    )
    deep = "schema_version: 1\nname: a\nx: " + "[" * 16 + "]" * 16 + "\n"
    assert "deeper than 16" in problems(deep)[0].message
    many = "schema_version: 1\nname: a\nfile_spec:\n" + "".join(f"- /f{i}\n" for i in range(1001))
    assert "1001 entries; the limit is 1000" in problems(many)[0].message


def test_billion_laughs_is_refused_at_the_first_alias_without_expanding() -> None:
    lines = ["schema_version: 1", "name: a", 'l0: &l0 ["lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    got = problems("\n".join(lines) + "\n")
    aliases = [p for p in got if "alias" in p.message]
    anchors = [p for p in got if "anchor" in p.message]
    assert (aliases[0].line, aliases[0].column) == (4, 10)
    assert "billion laughs" in aliases[0].message
    assert len(anchors) == 10
    assert len(got) <= 101  # capped, never one per expanded node


def test_many_problems_in_one_file_are_all_reported() -> None:
    text = textwrap.dedent("""\
        schema_version: 1
        name: Bad_Name
        colour: blue
        file_spec:
          - "/etc/[x"
        dependencies:
          requires: ["powernode/a@^1", "nope"]
        allow: {devices: 1}
        """)
    got = problems(text)
    assert [(p.line, p.column, p.path) for p in got] == [
        (2, 7, "name"),
        (3, 1, "colour"),
        (5, 11, "file_spec[0]"),  # the column of the unclosed "["
        (7, 32, "dependencies.requires[1]"),
        (8, 18, "allow.devices"),
    ]
    assert str(got[0]).startswith("m.yaml:2:7: name: 'Bad_Name' is not a lowercase slug")


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ManifestError) as e:
        parse("schema_version: 3\nname: A\n")
    assert str(e.value).splitlines() == [
        "m.yaml:1:17: schema_version: unsupported schema_version 3; this powernode reads "
        "schema_version 1",
        "m.yaml:2:7: name: 'A' is not a lowercase slug: a-z, 0-9 and '-', not starting "
        "with '-', at most 63 characters",
    ]


def test_check_manifest_keeps_warnings_when_invalid() -> None:
    check = check_manifest(
        "schema_version: 1\nidentity: {name: A, variety: config}\n", filename="m.yaml"
    )
    assert not check.ok and check.manifest is None
    assert [p.path for p in check.problems] == ["identity.name"]
    assert [w.path for w in check.warnings] == ["identity.name", "identity.variety"]


# --- files ---------------------------------------------------------------------------


def test_load_manifest_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text("schema_version: 1\nname: a\nbogus: 1\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    assert str(e.value) == f"{path}:3:1: bogus: unknown key 'bogus'; known keys: " + (
        "allow, dependencies, description, display_name, file_spec, init_actions, license, mask, "
        "migrations, name, package_spec, protected_spec, schema_version, templates"
    )
    assert path.read_text() == "schema_version: 1\nname: a\nbogus: 1\n"  # never rewritten


def test_load_manifest_refuses_a_large_file_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_bytes(b"#" * (256 * 1024 + 1))
    with pytest.raises(ManifestError, match=r"file is 262145 bytes; the limit is 262144"):
        load_manifest(path)


def test_load_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest: No such file"):
        load_manifest(tmp_path / "absent.yaml")


# --- model ---------------------------------------------------------------------------


def test_to_dict_is_the_canonical_form_and_from_dict_reads_it() -> None:
    m = parse(CANONICAL).manifest
    d = m.to_dict()
    assert list(d) == [
        "schema_version",
        "name",
        "display_name",
        "description",
        "license",
        "package_spec",
        "file_spec",
        "mask",
        "protected_spec",
        "dependencies",
        "allow",
    ]
    assert Manifest.from_dict(d) == m
    assert Manifest.from_dict(json.loads(m.to_json())) == m
    assert m.to_json().endswith(b"}\n")


def test_from_dict_validates_and_names_the_source() -> None:
    d = parse(CANONICAL).manifest.to_dict()
    d["name"] = "Bad"
    d["identity"] = {}
    with pytest.raises(ManifestError) as e:
        Manifest.from_dict(d, source="artifact/manifest.json")
    assert [str(p) for p in e.value.problems] == [
        "artifact/manifest.json: identity: unknown key 'identity'; known keys: allow, "
        "dependencies, description, display_name, file_spec, init_actions, license, mask, "
        "migrations, name, package_spec, protected_spec, schema_version, templates",
        "artifact/manifest.json: name: 'Bad' is not a lowercase slug: a-z, 0-9 and '-', not "
        "starting with '-', at most 63 characters",
    ]


def test_from_dict_applies_limits() -> None:
    d = parse(CANONICAL).manifest.to_dict()
    d["description"] = "x" * 5000
    with pytest.raises(ManifestError, match="text of 5000 characters; the limit is 4096"):
        Manifest.from_dict(d)


def test_manifest_is_frozen_and_hashable() -> None:
    m = Manifest(name="a", file_spec=["/a"], registration_hints={"variety": "config"})  # type: ignore[arg-type]
    assert m.file_spec == ("/a",)
    assert hash(m) == hash(Manifest(name="a", file_spec=("/a",)))
    with pytest.raises(TypeError):
        m.registration_hints["variety"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        m.name = "b"  # type: ignore[misc]


def test_shipped_schema_is_valid_draft_2020_12() -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # "migrations" is in the canonical form only when declared (older manifests keep their bytes)
    assert set(schema["properties"]) == set(parse(CANONICAL).manifest.to_dict()) | {
        "migrations",
        "init_actions",
        "templates",
    }


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (EXAMPLES.parents[1] / "docs" / "manifest.md").read_text()
    yaml_block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my-module").mkdir()
    (tmp_path / "my-module" / "manifest.yaml").write_text(yaml_block)
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {"Path": Path}
    exec(compile(code, "docs/manifest.md", "exec"), scope)  # noqa: S102 - our own docs
    loaded = scope["loaded"]
    assert isinstance(loaded, LoadedManifest)
    assert loaded.manifest.name == "my-nginx"
