"""Trust policies from the platform or a file, the desired-set document, and the puller's policy
rules (no policy: refused; a policy document: read into a signing policy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powernode.agent.modules.desired import (
    MAX_DESIRED_MODULES,
    load_desired_file,
    parse_desired,
)
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import DesiredModule, PublishPuller
from powernode.agent.modules.trust import PolicyReader, load_policy_file, policy_from_doc
from powernode.errors import ConfigError, DataError, VerificationError
from powernode.node import records
from powernode.signing import generate_private_key, public_key_pem
from powernode.signing.policy import (
    KeylessPolicy,
    PublicKeyPolicy,
    TransparencyLogs,
    UnsafeValidityAtNow,
)

D1 = "sha256:" + "1" * 64
PUB = public_key_pem(generate_private_key()).decode()


def entry(name: str = "app", **kw: Any) -> dict[str, Any]:
    doc = {
        "name": name,
        "version": "1.0.0",
        "composefs_digest": D1,
        "effective_priority": 20,
        "reference": f"127.0.0.1:5000/acme/{name}:1.0.0",
        "trust_policy": {"cosign_public_key": PUB},
    }
    doc.update(kw)
    return doc


# -- trust policies ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["cosign_public_key", "public_key_pem"])
def test_key_policy(field: str) -> None:
    policy = policy_from_doc({field: PUB}, source="m")
    assert isinstance(policy, PublicKeyPolicy) and policy.public_key_pem == PUB.encode()


def test_keyless_policy_needs_and_gets_roots() -> None:
    from tests.signing.testca import FakeCA

    doc = {"cosign_identity_regexp": "https://x/.*", "cosign_issuer_regexp": "https://i"}
    with pytest.raises(ConfigError, match=r"m: keyless trust .* cosign_roots_file"):
        policy_from_doc(doc, source="m")
    roots = FakeCA().root_pem
    # Issue 13 item 10: without a transparency log to prove the signing time, keyless
    # trust is refused, never silently checked at now.
    with pytest.raises(ConfigError, match=r"m: keyless trust needs the transparency log"):
        PolicyReader(roots)(doc, "m")
    policy = PolicyReader(roots, signing_time=UnsafeValidityAtNow())(doc, "m")
    assert isinstance(policy, KeylessPolicy)


def test_reader_from_config_files(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.signing.testca import FakeCA

    roots = tmp_path / "roots.pem"
    roots.write_bytes(FakeCA().root_pem)
    log_key = tmp_path / "rekor.pub"
    log_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    reader = PolicyReader.from_file(roots, log_key)
    assert isinstance(reader.signing_time, TransparencyLogs)
    assert isinstance(
        PolicyReader.from_file(roots, insecure_ignore_tlog=True).signing_time, UnsafeValidityAtNow
    )
    assert PolicyReader.from_file(roots).signing_time is None
    with pytest.raises(ConfigError, match="contradict"):
        PolicyReader.from_file(roots, log_key, insecure_ignore_tlog=True)
    with pytest.raises(ConfigError, match="cannot read the transparency log keys"):
        PolicyReader.from_file(roots, tmp_path / "missing.pub")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "m: a trust policy must be a JSON object"),
        ({}, "m: the trust policy is empty"),
        ({"identity": "x"}, "m: unknown trust policy field.s. identity"),
        ({"cosign_identity_regexp": "x"}, "m: keyless trust needs cosign_issuer_regexp too"),
        ({"cosign_public_key": 5}, "m: field 'cosign_public_key': expected a non-empty string"),
        ({"cosign_public_key": "not a key"}, "m: .*"),
    ],
    ids=["not-object", "empty", "unknown", "half-keyless", "not-string", "bad-pem"],
)
def test_bad_policies_are_refused(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_from_doc(doc, source="m")


def test_policy_file_pem_or_json(tmp_path: Path) -> None:
    pem = tmp_path / "cosign.pub"
    pem.write_text(PUB)
    assert isinstance(load_policy_file(pem), PublicKeyPolicy)
    js = tmp_path / "policy.json"
    js.write_text(json.dumps({"cosign_public_key": PUB}))
    assert isinstance(load_policy_file(js), PublicKeyPolicy)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match=r"bad.json: neither a PEM public key nor .*line 1"):
        load_policy_file(bad)
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read the trust policy"):
        load_policy_file(tmp_path / "missing.json")


# -- the desired set -----------------------------------------------------------------------


def test_parse_desired_reads_modules_and_composition() -> None:
    got = parse_desired({"instance_id": "i", "modules": [entry("a"), entry("b")]})
    assert [m.name for m in got.modules] == ["a", "b"] and got.composition is None
    assert got.modules[0].policy == {"cosign_public_key": PUB}
    assert parse_desired([entry("a")]).modules[0].priority == 20


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"modules": "x"}, "modules: expected a list, got str"),
        ({"modules": [entry(), 3]}, r"modules\.1: expected an object"),
        ({"modules": [entry(composefs_digest="sha256:zz")]}, r"modules\.0\.composefs_digest: inv"),
        ({"modules": [entry(policy=None)]}, r"modules\.0\.policy: unknown field"),
        ({"modules": [entry(), entry()]}, "more than once: app"),
        ({"modules": [], "composition": {"x": 1}}, "composition: "),
        ({"modules": [entry()] * (MAX_DESIRED_MODULES + 1)}, "must have at most 1000 items"),
    ],
    ids=[
        "not-list",
        "not-object",
        "bad-digest",
        "an-alias",
        "duplicate",
        "bad-composition",
        "too-many",
    ],
)
def test_parse_desired_rejects(doc: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_desired(doc, "GET /node_api/modules")


def test_desired_file_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "want.json"
    f.write_text('{"modules": [')
    with pytest.raises(ConfigError, match=r"want.json: not JSON .*line 1 column 14"):
        load_desired_file(f)
    f.write_text(json.dumps({"modules": [{"name": "x"}]}))
    with pytest.raises(ConfigError, match=r"want.json: modules\.0\.composefs_digest: field req"):
        load_desired_file(f)


# -- the puller's policy rules ----------------------------------------------------------------


def test_puller_refuses_a_module_without_policy(tmp_path: Path) -> None:
    called: list[str] = []
    puller = PublishPuller("r", verify=lambda *a: called.append("v"), pull_fn=lambda *a: None)
    lay = NodeLayout(root=tmp_path / "r", state=tmp_path / "s")
    module = DesiredModule("app", "1", D1, 5, "reg.local/acme/app:1", None)
    with pytest.raises(VerificationError, match="no trust policy"):
        puller.pull(module, lay)
    assert called == []


def test_puller_reads_the_platform_policy_document(tmp_path: Path) -> None:
    seen: list[object] = []

    class Done:
        reference = "pinned"
        composefs_digest = D1

    def verify(registry: object, ref: object, policy: object) -> Done:
        seen.append(policy)
        return Done()

    puller = PublishPuller("r", verify=verify, pull_fn=lambda *a: Done(), store_cls=lambda p: p)
    lay = NodeLayout(root=tmp_path / "r", state=tmp_path / "s")
    puller.pull(DesiredModule.from_record(records.DesiredModule.from_json(entry())), lay)
    assert isinstance(seen[0], PublicKeyPolicy) and seen[0].public_key_pem == PUB.encode()
    assert puller.last["app"].composefs_digest == D1


def test_puller_chooses_the_registry_by_reference_and_setting() -> None:
    from powernode.oci.distribution import DistributionRegistry
    from powernode.oci.refs import parse_reference

    def opened(puller: PublishPuller, ref: str) -> str:
        reg = puller._open(DesiredModule("m", "1", D1, 1, ref), parse_reference(ref))
        assert isinstance(reg, DistributionRegistry)
        reg.close()
        return str(reg.base_url).rstrip("/")

    lab = PublishPuller(default_registry="http://10.1.2.3:5000")
    assert opened(lab, "acme/app@sha256:" + "e" * 64) == "http://10.1.2.3:5000"
    assert opened(lab, "10.1.2.3:5000/acme/app:1") == "http://10.1.2.3:5000"  # its scheme
    assert opened(lab, "reg.example/acme/app:1") == "https://reg.example"
    assert opened(PublishPuller(), "127.0.0.1:5000/acme/app:1") == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match="names no registry; set modules_registry"):
        opened(PublishPuller(), "acme/app:1")


def test_module_settings_are_checked() -> None:
    from powernode.agent.config import load_config

    cfg = load_config(None, {"POWERNODE_AGENT_MODULES_REGISTRY": "http://10.1.2.3:5000/"})
    assert cfg.modules_registry == "http://10.1.2.3:5000" and cfg.modules_sync_seconds == 60
    with pytest.raises(ConfigError, match=r"MODULES_REGISTRY: .*http\(s\)://host\[:port\]"):
        load_config(None, {"POWERNODE_AGENT_MODULES_REGISTRY": "10.1.2.3:5000"})
    with pytest.raises(ConfigError, match="POWERNODE_AGENT_MODULES_SYNC_SECONDS: must be > 0"):
        load_config(None, {"POWERNODE_AGENT_MODULES_SYNC_SECONDS": "0"})


_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["app", "", "bad name", 3]),
        "composefs_digest": st.sampled_from([D1, "sha256:", "x", None]),
        "effective_priority": st.sampled_from([1, -5, True, "1", None]),
        "trust_policy": _json,
        "reference": _json,
    },
)


@given(
    doc=_json
    | st.fixed_dictionaries(
        {"modules": st.lists(_fields | _json, max_size=3)}, optional={"composition": _json}
    )
)
def test_parse_desired_takes_anything_and_raises_only_data_errors(doc: object) -> None:
    try:
        got = parse_desired(doc)
    except DataError as e:
        assert str(e).startswith("GET /node_api/modules: ")
        return
    assert all(m.name and m.digest.startswith("sha256:") for m in got.modules)


@given(doc=_json)
def test_policy_from_doc_takes_anything_and_raises_only_config_errors(doc: object) -> None:
    try:
        policy_from_doc(doc, source="p")
    except ConfigError as e:
        assert str(e).startswith("p: ")
