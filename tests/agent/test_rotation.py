"""Certificate rotation at 75 %: the policy, and the loop with the platform away (manual clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from powernode.agent.certstore import CertInfo, CertStore
from powernode.agent.lifecycle import ManualClock
from powernode.agent.rotation import (
    ROTATED,
    ROTATION_FAILED,
    failure_payload,
    record_failure,
    rotation_due,
)
from tests.agent.fakeplatform import FakePlatform, enrolled_agent, make_runtime

T0 = datetime(2025, 1, 1, tzinfo=UTC)
INFO = CertInfo("i", T0, T0 + timedelta(days=90), 1, "ab")


@pytest.mark.parametrize(
    ("at", "due"),
    [
        (T0 - timedelta(days=1), False),  # clock behind the certificate
        (T0, False),
        (T0 + timedelta(days=67, hours=11, minutes=59), False),
        (T0 + timedelta(days=67, hours=12), True),  # 75 % of 90 days
        (T0 + timedelta(days=95), True),  # expired: still due (and will fail)
    ],
    ids=["before", "issued", "just-before-75", "at-75", "expired"],
)
def test_rotation_due(at: datetime, due: bool) -> None:
    assert rotation_due(INFO, at, 0.75) is due


def test_failure_streak_keeps_its_start() -> None:
    first = record_failure(None, T0, "a")
    second = record_failure(first, T0 + timedelta(hours=1), "b")
    assert (second.since, second.attempts, second.error) == (T0, 2, "b")
    payload = failure_payload(second, INFO, T0 + timedelta(days=89))
    assert payload["seconds_left"] == 86400 and payload["expired"] is False
    assert failure_payload(second, INFO, T0 + timedelta(days=91))["expired"] is True


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform(ManualClock(T0))


def _clock(platform: FakePlatform) -> ManualClock:
    assert isinstance(platform.clock, ManualClock)
    return platform.clock


def test_rotates_at_75_percent_and_archives(tmp_path: Path, platform: FakePlatform) -> None:
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    first = rt.creds.info
    rt.beat()
    assert rt.creds.info.serial == first.serial  # not yet
    _clock(platform).advance(timedelta(days=67, hours=12).total_seconds())
    rt.beat()
    assert rt.creds.info.serial != first.serial
    assert rt.creds.info.instance_id == first.instance_id
    store = CertStore(config.pki_dir)
    [archived] = store.archived()
    assert archived.name == "cert.20250309T120000Z.pem"
    kinds = [e["kind"] for e in platform.events.values()]
    assert kinds == [ROTATED]
    # The next beat does not rotate again: the new cert is at 0 % of its life.
    rt.beat()
    assert len(platform.certs_issued) == 2


def test_platform_away_past_75_percent(tmp_path: Path, platform: FakePlatform) -> None:
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    clock = _clock(platform)
    old = rt.creds.info
    clock.advance(timedelta(days=70).total_seconds())
    platform.down = True
    for _ in range(6):
        assert not rt.beat()
        clock.advance(30)
    # One critical event per heartbeat attempt, all buffered while the platform is away.
    buffered = [e for e in rt.spool.peek(100) if e.kind == ROTATION_FAILED]
    assert len(buffered) == 6
    assert all(e.severity == "critical" for e in buffered)
    assert buffered[-1].payload["attempts"] == 6
    assert buffered[-1].payload["failed_since"] == "2025-03-12T00:00:00Z"
    assert rt.creds.info.serial == old.serial
    platform.down = False
    assert rt.beat()
    assert rt.rotation_failure is None
    assert rt.creds.info.serial != old.serial
    delivered = [e for e in platform.events.values() if e["kind"] == ROTATION_FAILED]
    assert sorted(e["id"] for e in delivered) == sorted(e.id for e in buffered)
    [rotated] = [e for e in platform.events.values() if e["kind"] == ROTATED]
    assert rotated["payload"]["failed_attempts_before"] == 6
    rt.beat()
    assert len([e for e in platform.events.values() if e["kind"] == ROTATION_FAILED]) == 6


def test_refused_rotation_raises_critical_on_every_heartbeat(
    tmp_path: Path, platform: FakePlatform
) -> None:
    import httpx

    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    inner = rt.client._http._transport

    def refuse_rotate(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/certificates/rotate"):
            return httpx.Response(403, json={"detail": "rotation disabled for this instance"})
        return inner.handle_request(request)

    rt.client._http._transport = httpx.MockTransport(refuse_rotate)
    _clock(platform).advance(timedelta(days=80).total_seconds())
    for _ in range(3):
        assert rt.beat()  # heartbeats still work: the certificate is valid
    failed = [e for e in platform.events.values() if e["kind"] == ROTATION_FAILED]
    assert len(failed) == 3
    assert "rotation disabled for this instance" in failed[0]["payload"]["error"]
    assert len(platform.certs_issued) == 1


def test_clock_moved_back_does_not_rotate(tmp_path: Path, platform: FakePlatform) -> None:
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    _clock(platform).shift_wall(-timedelta(days=400))
    assert rt.beat()
    _clock(platform).shift_wall(timedelta(days=400 + 60))
    assert rt.beat()
    assert len(platform.certs_issued) == 1
    _clock(platform).shift_wall(timedelta(days=8))  # day 68: past 75 %
    assert rt.beat()
    assert len(platform.certs_issued) == 2


def test_crash_after_new_key_staged_keeps_old_pair_usable(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = enrolled_agent(tmp_path, platform)
    rt = make_runtime(config, platform)
    old_cert = CertStore(config.pki_dir).cert.read_bytes()
    platform.lose_responses = 3  # every retry's answer is lost: certs issued, none installed
    platform.lose_path = "/node_api/certificates/rotate"
    _clock(platform).advance(timedelta(days=70).total_seconds())
    rt.beat()
    assert rt.rotation_failure is not None
    store = CertStore(config.pki_dir)
    assert store.cert.read_bytes() == old_cert
    assert store.load().info.serial == rt.creds.info.serial
    assert rt.beat()  # the next attempt succeeds
    assert store.cert.read_bytes() != old_cert
