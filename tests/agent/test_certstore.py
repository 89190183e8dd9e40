"""The pki directory: modes, atomic writes, install order and crash repair."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from powernode.agent.certstore import (
    CertInfo,
    CertStore,
    build_csr,
    generate_key,
    key_to_pem,
)
from powernode.agent.lifecycle import ManualClock
from powernode.durable import write_bytes
from powernode.errors import ConfigError, VerificationError
from tests.agent.fakeplatform import FakePlatform, pem

NOW = datetime(2025, 1, 1, tzinfo=UTC)
INSTANCE = "0b0e7a52-6f6e-4c55-9d6c-6a1f0f5d9c11"


def _issue(platform: FakePlatform, key_pem_key: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert isinstance(key_pem_key, Ed25519PrivateKey)
    cert = platform.issue(build_csr(key_pem_key, INSTANCE).decode(), INSTANCE)
    return pem(cert).encode()


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform(ManualClock(NOW))


def _install_first(store: CertStore, platform: FakePlatform) -> CertInfo:
    key = generate_key()
    store.stage_key(key)
    return store.install(
        _issue(platform, key),
        key,
        NOW,
        node_ca_pem=pem(platform.ca_cert).encode(),
        platform_ca_pem=pem(platform.ca_cert).encode(),
    )


def test_write_atomic_mode_and_no_temp_left(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    old = os.umask(0)
    try:
        write_bytes(target, b"secret", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"secret"
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_install_writes_pair_with_modes(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    info = _install_first(store, platform)
    assert info.instance_id == INSTANCE
    assert stat.S_IMODE(store.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert not store.next_key.exists()
    creds = store.load()
    assert creds.info == info
    assert store.archived() == []


def test_second_install_archives_old_cert(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    _install_first(store, platform)
    old_cert = store.cert.read_bytes()
    key = generate_key()
    store.stage_key(key)
    later = NOW + timedelta(days=70)
    store.install(_issue(platform, key), key, later)
    [archived] = store.archived()
    assert archived.name == "cert.20250312T000000Z.pem"
    assert archived.read_bytes() == old_cert
    assert store.load().info.serial == platform.certs_issued[-1].serial_number


def test_install_refuses_cert_for_other_key_and_changes_nothing(
    tmp_path: Path, platform: FakePlatform
) -> None:
    store = CertStore(tmp_path / "pki")
    _install_first(store, platform)
    before = {p.name: p.read_bytes() for p in store.dir.iterdir()}
    key, other = generate_key(), generate_key()
    store.stage_key(key)
    with pytest.raises(VerificationError, match="different public key"):
        store.install(_issue(platform, other), key, NOW)
    after = {p.name: p.read_bytes() for p in store.dir.iterdir() if p.name != "key.next.pem"}
    assert after == before


def test_install_refuses_cert_from_another_ca(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    _install_first(store, platform)
    before = store.cert.read_bytes()
    rogue = FakePlatform(ManualClock(NOW))
    key = generate_key()
    store.stage_key(key)
    with pytest.raises(VerificationError, match="not signed by the node CA"):
        store.install(_issue(rogue, key), key, NOW)
    assert store.cert.read_bytes() == before
    assert store.archived() == []


def test_install_refuses_expired_cert(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    key = generate_key()
    store.stage_key(key)
    with pytest.raises(VerificationError, match="expired at 2025-04-01T00:00:00Z"):
        store.install(
            _issue(platform, key),
            key,
            NOW + timedelta(days=100),
            node_ca_pem=pem(platform.ca_cert).encode(),
        )
    assert not store.cert.exists()


def test_load_finishes_rotation_interrupted_between_renames(
    tmp_path: Path, platform: FakePlatform
) -> None:
    store = CertStore(tmp_path / "pki")
    _install_first(store, platform)
    key = generate_key()
    store.stage_key(key)
    # The crash: new cert renamed into place, staged key not yet renamed.
    write_bytes(store.cert, _issue(platform, key), mode=0o644)
    creds = store.load()
    assert store.key.read_bytes() == key_to_pem(key)
    assert not store.next_key.exists()
    assert creds.info.serial == platform.certs_issued[-1].serial_number


def test_load_with_unmatched_key_says_reenroll(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    _install_first(store, platform)
    write_bytes(store.key, key_to_pem(generate_key()), mode=0o600)
    with pytest.raises(ConfigError, match="enroll --force"):
        store.load()


def test_load_before_enrollment_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not enrolled yet; run 'powernode-agent enroll"):
        CertStore(tmp_path / "pki").load()


def test_archive_keeps_newest_sixteen(tmp_path: Path, platform: FakePlatform) -> None:
    store = CertStore(tmp_path / "pki")
    _install_first(store, platform)
    for day in range(20):
        key = generate_key()
        store.stage_key(key)
        store.install(_issue(platform, key), key, NOW + timedelta(days=day, seconds=1))
    names = [p.name for p in store.archived()]
    assert len(names) == 16
    assert names[-1] == "cert.20250120T000001Z.pem"
