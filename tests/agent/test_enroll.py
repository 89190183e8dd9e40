"""Enrollment against the fake platform: what is written, and what a refusal leaves behind."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from powernode.agent.certstore import CertStore
from powernode.agent.enroll import check_token, enroll
from powernode.agent.lifecycle import ManualClock
from powernode.agent.transport import NodeClient, PlatformRefused
from powernode.errors import ConfigError, VerificationError
from tests.agent.fakeplatform import URL, FakePlatform, client_for, make_ca, pem

NOW = datetime(2025, 1, 1, tzinfo=UTC)
INSTANCE = "6c0f2f8e-8d0b-4a55-9a2f-0d6a3f7e1b21"


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform(ManualClock(NOW))


def _snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name != "key.next.pem"}


def _enroll(store: CertStore, platform: FakePlatform, token: str, **kw: object) -> object:
    with client_for(platform, None) as client:
        return enroll(
            store, client, token, platform_ca_pem=pem(platform.ca_cert).encode(), now=NOW, **kw
        )


def test_enroll_installs_key_cert_and_cas(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    info = _enroll(store, platform, platform.token(INSTANCE), instance_hint=INSTANCE)
    assert info.instance_id == INSTANCE  # type: ignore[attr-defined]
    assert stat.S_IMODE(store.key.stat().st_mode) == 0o600
    assert store.node_ca.read_text() == pem(platform.ca_cert)
    assert store.platform_ca.read_text() == pem(platform.ca_cert)
    creds = store.load()
    assert creds.info.not_after.year == 2025 and creds.info.not_after.month == 4
    # The key never left the node: the platform saw only the CSR's public key.
    assert "PRIVATE" not in "".join(platform.requests)


def test_reused_token_refused_and_nothing_written(tmp_path: Path, platform: FakePlatform) -> None:
    token = platform.token(INSTANCE)
    _enroll(CertStore(tmp_path / "a"), platform, token)
    store = CertStore(tmp_path / "b")
    with pytest.raises(PlatformRefused, match="already used") as info:
        _enroll(store, platform, token)
    assert info.value.status == 401
    assert not store.cert.exists() and not store.key.exists()
    assert not store.platform_ca.exists()


def test_already_enrolled_needs_force(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    _enroll(store, platform, platform.token(INSTANCE))
    before = _snapshot(store.dir)
    with pytest.raises(ConfigError, match=f"already enrolled as instance {INSTANCE}; pass --force"):
        _enroll(store, platform, platform.token(INSTANCE))
    assert _snapshot(store.dir) == before
    _enroll(store, platform, platform.token(INSTANCE), force=True)
    assert len(store.archived()) == 1
    assert store.cert.read_bytes() != before["cert.pem"]


@pytest.mark.parametrize(
    "token", ["", "   ", "a b", "x" * 5000], ids=["empty", "blank", "space", "long"]
)
def test_bad_tokens_refused_before_any_request(
    tmp_path: Path, platform: FakePlatform, token: str
) -> None:
    store = CertStore(tmp_path / "pki")
    with pytest.raises(ConfigError, match="bootstrap token"):
        _enroll(store, platform, token)
    assert platform.requests == []
    assert not store.cert.exists()


def test_answer_naming_another_instance_refused(tmp_path: Path, platform: FakePlatform) -> None:
    def lying(request: httpx.Request) -> httpx.Response:
        answer = platform.handle(request, None)
        doc = answer.json()
        doc["instance_id"] = "someone-else"
        return httpx.Response(201, json=doc)

    store = CertStore(tmp_path / "pki")
    client = NodeClient(URL, transport=httpx.MockTransport(lying), clock=platform.clock)
    with client, pytest.raises(VerificationError, match="names instance someone-else"):
        enroll(
            store,
            client,
            platform.token(INSTANCE),
            platform_ca_pem=pem(platform.ca_cert).encode(),
            now=NOW,
        )
    assert not store.cert.exists() and not store.key.exists()


def test_cert_from_another_ca_refused(tmp_path: Path, platform: FakePlatform) -> None:
    _, other_ca = make_ca("other", NOW)

    def swapped(request: httpx.Request) -> httpx.Response:
        doc = platform.handle(request, None).json()
        doc["ca_pem"] = pem(other_ca)
        return httpx.Response(201, json=doc)

    store = CertStore(tmp_path / "pki")
    client = NodeClient(URL, transport=httpx.MockTransport(swapped), clock=platform.clock)
    with client, pytest.raises(VerificationError, match="not signed by the node CA"):
        enroll(
            store,
            client,
            platform.token(INSTANCE),
            platform_ca_pem=pem(platform.ca_cert).encode(),
            now=NOW,
        )
    assert not store.cert.exists() and not store.platform_ca.exists()


def test_check_token_strips_newline() -> None:
    assert check_token("pnb_abc\n", "file") == "pnb_abc"
