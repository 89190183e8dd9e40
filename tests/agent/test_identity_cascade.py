"""The cascade: order, first success wins, the trail, the failure report, budgets, config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.identity import (
    DEFAULT_SOURCES,
    IdentityConfig,
    Outcome,
    UnresolvableIdentityError,
    discover_identity,
)
from powernode.errors import ConfigError
from tests.agent.metadata_servers import Behaviour, FakeHost, FakeMetadataServer, guard_loopback

ID = "6b1a24a1-4061-4607-8bf4-a3963d0c5895"
FW_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"
DMI_ID = "4c4c4544-0042-3510-8052-b4c04f333432"
LOCAL_ID = "9d4a1f5e-5c1b-4b8e-9e57-0b6a3d2c1e0f"


@pytest.fixture(autouse=True)
def refused(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    return guard_loopback(monkeypatch)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root")


def config(host: FakeHost, **kw: Any) -> IdentityConfig:
    return IdentityConfig(**{"root": host.root, "in_container": False, **kw})


def test_cmdline_wins_and_later_sources_are_not_touched(host: FakeHost) -> None:
    host.cmdline(f"ro powernode.id={ID}")
    host.fwcfg(FW_ID)
    host.dmi(board_asset_tag="i-0af01c0123456789a", product_uuid=DMI_ID)
    with FakeMetadataServer("aws", answer="i-0af01c0123456789a") as aws:
        result = discover_identity(config(host, aws_url=aws.url))
        assert aws.requests == []
    assert result.identity.instance_id == ID
    assert result.identity.source == "cmdline"
    assert [a.source for a in result.trail.attempts] == ["cmdline"]


def test_each_earlier_source_says_why_it_did_not_win(host: FakeHost) -> None:
    host.cmdline("ro quiet")
    host.write("/sys/firmware/qemu_fw_cfg/rev", "3")
    host.dmi(sys_vendor="Dell Inc.", product_uuid=DMI_ID)
    host.identity_cfg(f"instance_id = {LOCAL_ID}\n")
    result = discover_identity(config(host))
    assert (result.identity.instance_id, result.identity.source) == (DMI_ID, "dmi")
    trail = result.trail
    assert [a.source for a in trail.attempts] == list(DEFAULT_SOURCES[:-1])
    assert trail.outcome_of("cmdline") is Outcome.ABSENT
    assert "no powernode.id= parameter" in (trail.reason_of("cmdline") or "")
    assert trail.outcome_of("fwcfg") is Outcome.ABSENT
    assert "no fw-cfg device" in (trail.reason_of("fwcfg") or "")
    for cloud in ("aws", "gcp", "azure", "digitalocean", "hetzner", "kubevirt", "vsphere"):
        assert trail.outcome_of(cloud) is Outcome.SKIPPED, cloud
    assert trail.outcome_of("dmi") is Outcome.FOUND
    assert trail.outcome_of("local") is None


def test_cloud_wins_after_local_misses(host: FakeHost) -> None:
    host.cmdline("ro")
    host.dmi(chassis_asset_tag="7783-7084-3265-9085-8269-3286-77", product_uuid=DMI_ID)
    vm_id = "5c08b38e-4d57-4c23-ac45-aca61037f084"
    with FakeMetadataServer("azure", answer=vm_id) as azure:
        result = discover_identity(config(host, azure_url=azure.url))
    assert (result.identity.instance_id, result.identity.source) == (vm_id, "azure")
    assert [a.outcome for a in result.trail.attempts] == [
        Outcome.ABSENT,
        Outcome.ABSENT,
        Outcome.SKIPPED,
        Outcome.SKIPPED,
        Outcome.FOUND,
    ]


def test_a_broken_cloud_falls_through_to_dmi(host: FakeHost) -> None:
    host.dmi(sys_vendor="Hetzner", product_uuid=DMI_ID)
    with FakeMetadataServer("hetzner", behaviour=Behaviour.SERVER_ERROR) as hetzner:
        result = discover_identity(config(host, hetzner_url=hetzner.url))
    assert result.identity.source == "dmi"
    assert result.trail.outcome_of("hetzner") is Outcome.ERROR
    assert "HTTP 500" in (result.trail.reason_of("hetzner") or "")


def test_local_file_is_the_last_resort(host: FakeHost) -> None:
    host.identity_cfg(f"instance_id = {LOCAL_ID}\n")
    result = discover_identity(config(host))
    assert (result.identity.instance_id, result.identity.source) == (LOCAL_ID, "local")
    assert len(result.trail.attempts) == len(DEFAULT_SOURCES)


def test_failure_lists_every_source_with_its_reason(host: FakeHost) -> None:
    host.cmdline("powernode.id=garbage")
    host.dmi(product_uuid="03000200-0400-0500-0006-000700080009")
    before = host.snapshot()
    with pytest.raises(UnresolvableIdentityError) as info:
        discover_identity(config(host))
    error = info.value
    assert [a.source for a in error.trail.attempts] == list(DEFAULT_SOURCES)
    assert error.trail.outcome_of("cmdline") is Outcome.INVALID
    assert error.trail.outcome_of("dmi") is Outcome.INVALID
    assert error.trail.outcome_of("local") is Outcome.ABSENT
    message = str(error)
    for name in DEFAULT_SOURCES:
        assert f"  - {name}: " in message
    assert "'garbage' is not a UUID" in message
    assert "firmware placeholder" in message
    assert "powernode.id=<uuid>" in message  # says what to do
    assert host.snapshot() == before  # discovery never writes


def test_results_serialise_for_introspect_json(host: FakeHost) -> None:
    host.dmi(product_uuid=DMI_ID)
    result = discover_identity(config(host, sources=("cmdline", "dmi")))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["resolved"] is True
    assert data["identity"] == {
        "instance_id": DMI_ID,
        "source": "dmi",
        "detail": "SMBIOS system UUID (/sys/class/dmi/id/product_uuid)",
    }
    assert [(t["source"], t["outcome"]) for t in data["trail"]] == [
        ("cmdline", "absent"),
        ("dmi", "found"),
    ]
    assert all(isinstance(t["elapsed_ms"], float) for t in data["trail"])
    assert data["warnings"] == []


def test_failure_serialises_for_introspect_json(host: FakeHost) -> None:
    with pytest.raises(UnresolvableIdentityError) as info:
        discover_identity(config(host, sources=("cmdline", "local")))
    data = json.loads(json.dumps(info.value.to_dict()))
    assert data["resolved"] is False
    assert data["identity"] is None
    assert [t["outcome"] for t in data["trail"]] == ["absent", "absent"]


@pytest.mark.timeout(15)
def test_network_probes_share_one_budget(host: FakeHost) -> None:
    # Three hung clouds, each allowed 0.3 s, all together 0.3 s: the first uses the
    # whole budget, the next are not even sent.
    host.dmi(
        board_asset_tag="i-0af01c0123456789a",
        product_name="Google Compute Engine",
        chassis_asset_tag="7783-7084-3265-9085-8269-3286-77",
        product_uuid=DMI_ID,
    )
    with (
        FakeMetadataServer("aws", behaviour=Behaviour.HUNG) as aws,
        FakeMetadataServer("gcp", behaviour=Behaviour.HUNG) as gcp,
        FakeMetadataServer("azure", behaviour=Behaviour.HUNG) as azure,
    ):
        result = discover_identity(
            config(
                host,
                aws_url=aws.url,
                gcp_url=gcp.url,
                azure_url=azure.url,
                probe_timeout=0.3,
                total_timeout=0.3,
            )
        )
        assert len(aws.requests) == 1
        assert gcp.requests == azure.requests == []
    assert result.identity.source == "dmi"  # local sources still run after the budget
    for name in ("gcp", "azure"):
        assert result.trail.outcome_of(name) is Outcome.ERROR
        assert "network budget of the identity cascade is spent" in (
            result.trail.reason_of(name) or ""
        )


def test_injected_clock_is_what_bounds_the_budget(host: FakeHost) -> None:
    # A clock that jumps 10 s per reading: the budget is gone before any request.
    ticks = iter(range(0, 10_000, 10))
    host.dmi(sys_vendor="DigitalOcean", product_uuid=DMI_ID)
    with FakeMetadataServer("digitalocean", answer="2756294") as do:
        result = discover_identity(
            config(host, digitalocean_url=do.url, clock=lambda: float(next(ticks)))
        )
        assert do.requests == []
    assert result.identity.source == "dmi"
    assert "budget" in (result.trail.reason_of("digitalocean") or "")


@pytest.mark.parametrize("marker", ["/.dockerenv", "/run/systemd/container", "/run/.containerenv"])
def test_container_is_detected_under_root(host: FakeHost, marker: str) -> None:
    host.write(marker, "docker\n")
    host.dmi(product_uuid=DMI_ID)
    host.write("/proc/1/cmdline", f"/init\0powernode.id={ID}\0")
    result = discover_identity(IdentityConfig(root=host.root, sources=("dmi", "cmdline")))
    assert result.trail.outcome_of("dmi") is Outcome.SKIPPED
    assert result.identity.instance_id == ID


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sources": ("cmdline", "ec2")}, "unknown 'ec2'; choose from cmdline, fwcfg"),
        ({"sources": ("dmi", "dmi")}, "listed twice"),
        ({"aws_url": "https://169.254.169.254"}, "aws_url: 'https://169.254.169.254' must be"),
        ({"gcp_url": "http://169.254.169.254/computeMetadata"}, "gcp_url"),
        ({"connect_timeout": 0}, "connect_timeout: 0 s is outside (0, 60]"),
        ({"total_timeout": 600}, "total_timeout: 600 s is outside"),
        ({"aws_token_ttl": 21601}, "outside 1..21600"),
        ({"max_response_bytes": 10}, "max_response_bytes"),
        ({"identity_file": Path("identity.cfg")}, "must be an absolute path"),
        ({"vsphere_guestinfo_key": "powernode.id"}, "must start with 'guestinfo.'"),
    ],
    ids=[
        "unknown-source",
        "duplicate-source",
        "https",
        "url-with-path",
        "zero-timeout",
        "huge-timeout",
        "ttl",
        "response-limit",
        "relative-file",
        "guestinfo-key",
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        IdentityConfig(**kwargs)
    assert message in str(info.value)


def test_defaults_are_the_real_host() -> None:
    c = IdentityConfig()
    assert c.root == Path("/")
    assert c.sources == DEFAULT_SOURCES
    assert c.aws_url == "http://169.254.169.254"
    assert c.connect_timeout == 0.2
    assert c.identity_file == Path("/persist/var/lib/powernode/identity.cfg")
