"""Cloud metadata sources against real HTTP fakes on 127.0.0.1.

Each fake refuses requests that lack the provider's mandatory header or
token, so a FOUND outcome proves the agent sent them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.identity import (
    IdentityConfig,
    Outcome,
    UnresolvableIdentityError,
    discover_identity,
)
from powernode.agent.identity.cascade import SOURCES
from powernode.agent.identity.config import LINK_LOCAL_METADATA
from powernode.agent.identity.source import ProbeContext, SourceMiss
from tests.agent.metadata_servers import (
    Behaviour,
    FakeHost,
    FakeMetadataServer,
    closed_port_url,
    guard_loopback,
)

AWS_ID = "i-0af01c0123456789a"
GCP_ID = "4520031799277581759"
AZURE_ID = "5c08b38e-4d57-4c23-ac45-aca61037f084"
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"
VMID = "/metadata/instance/compute/vmId"

# DMI that gates each provider (IDENTITY_SOURCES.md §3-§7).
SIGNALS: dict[str, dict[str, str]] = {
    "aws": {"board_asset_tag": AWS_ID},
    "gcp": {"product_name": "Google Compute Engine"},
    "azure": {"chassis_asset_tag": AZURE_TAG},
    "digitalocean": {"sys_vendor": "DigitalOcean"},
    "hetzner": {"sys_vendor": "Hetzner"},
}
ANSWERS = {
    "aws": AWS_ID,
    "gcp": GCP_ID,
    "azure": AZURE_ID,
    "digitalocean": "2756294",
    "hetzner": "42",
}


@pytest.fixture(autouse=True)
def refused(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    return guard_loopback(monkeypatch)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeMetadataServer]:
    provider, kwargs = request.param
    fake = FakeMetadataServer(provider, **{"answer": ANSWERS[provider], **kwargs})
    with fake:
        yield fake


def config_for(host: FakeHost, provider: str, url: str, **kw: Any) -> IdentityConfig:
    options: dict[str, Any] = {
        "root": host.root,
        "in_container": False,
        "sources": (provider,),
        "probe_timeout": 0.5,
        "total_timeout": 2.0,
        f"{provider}_url": url,
    }
    options.update(kw)
    return IdentityConfig(**options)


def probe(config: IdentityConfig, name: str) -> tuple[str, str]:
    ctx = ProbeContext(config, in_container=False, network_deadline=config.clock() + 2.0)
    return SOURCES[name].probe(ctx)


def miss(config: IdentityConfig, name: str) -> SourceMiss:
    with pytest.raises(SourceMiss) as info:
        probe(config, name)
    return info.value


# -- the happy path, per provider, with the mandatory headers checked by the fake ------


@pytest.mark.parametrize("server", [(p, {}) for p in ANSWERS], ids=list(ANSWERS), indirect=True)
def test_each_provider_answers_its_id(host: FakeHost, server: FakeMetadataServer) -> None:
    provider = server.provider
    host.dmi(**SIGNALS[provider])
    result = discover_identity(config_for(host, provider, server.url))
    assert result.identity.instance_id == ANSWERS[provider]
    assert result.identity.source == provider
    assert result.trail.outcome_of(provider) is Outcome.FOUND
    for r in server.requests:
        assert "x-forwarded-for" not in r.headers


@pytest.mark.parametrize("server", [("aws", {})], indirect=True)
def test_aws_sends_token_put_with_ttl_then_get_with_token(
    host: FakeHost, server: FakeMetadataServer
) -> None:
    host.dmi(**SIGNALS["aws"])
    discover_identity(config_for(host, "aws", server.url, aws_token_ttl=120))
    put, get = server.requests
    assert (put.method, put.path) == ("PUT", "/latest/api/token")
    assert put.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "120"
    assert (get.method, get.path) == ("GET", "/latest/meta-data/instance-id")
    assert get.headers["x-aws-ec2-metadata-token"]


@pytest.mark.parametrize("server", [("aws", {"aws_expire_first_token": True})], indirect=True)
def test_aws_fetches_a_fresh_token_once_after_401(
    host: FakeHost, server: FakeMetadataServer
) -> None:
    host.dmi(**SIGNALS["aws"])
    result = discover_identity(config_for(host, "aws", server.url))
    assert result.identity.instance_id == AWS_ID
    assert [m for m, _ in server.paths()] == ["PUT", "GET", "PUT", "GET"]


@pytest.mark.parametrize("server", [("gcp", {"gcp_echo_flavor": False})], indirect=True)
def test_gcp_answer_without_flavor_echo_is_not_trusted(
    host: FakeHost, server: FakeMetadataServer
) -> None:
    host.dmi(**SIGNALS["gcp"])
    m = miss(config_for(host, "gcp", server.url), "gcp")
    assert m.outcome is Outcome.INVALID
    assert "lacks 'Metadata-Flavor: Google'" in m.reason
    assert server.requests[0].headers["metadata-flavor"] == "Google"


@pytest.mark.parametrize("server", [("azure", {})], indirect=True)
def test_azure_sends_metadata_header_api_version_and_format(
    host: FakeHost, server: FakeMetadataServer
) -> None:
    host.dmi(**SIGNALS["azure"])
    probe(config_for(host, "azure", server.url), "azure")
    (req,) = server.requests
    assert req.headers["metadata"] == "true"
    assert req.path == "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"


@pytest.mark.parametrize("server", [("azure", {})], indirect=True)
def test_azure_bad_api_version_names_the_setting(
    host: FakeHost, server: FakeMetadataServer
) -> None:
    host.dmi(**SIGNALS["azure"])
    m = miss(config_for(host, "azure", server.url, azure_api_version="1999-01-01"), "azure")
    assert m.outcome is Outcome.ERROR
    assert "api-version is invalid" in m.reason
    assert "azure_api_version '1999-01-01'" in m.reason


@pytest.mark.parametrize(
    ("smbios", "expect"),
    [
        (AZURE_ID, "equals SMBIOS product_uuid (Gen2)"),
        ("8eb3085c-574d-234c-ac45-aca61037f084", "byte-swapped (Gen1)"),
    ],
    ids=["gen2", "gen1"],
)
@pytest.mark.parametrize("server", [("azure", {})], indirect=True)
def test_azure_cross_checks_smbios_uuid_in_both_byte_orders(
    host: FakeHost, server: FakeMetadataServer, smbios: str, expect: str
) -> None:
    host.dmi(chassis_asset_tag=AZURE_TAG, product_uuid=smbios)
    result = discover_identity(config_for(host, "azure", server.url))
    assert expect in result.identity.detail
    assert result.warnings == ()


@pytest.mark.parametrize("server", [("azure", {})], indirect=True)
def test_azure_warns_when_smbios_uuid_disagrees(host: FakeHost, server: FakeMetadataServer) -> None:
    host.dmi(chassis_asset_tag=AZURE_TAG, product_uuid="11111111-2222-3333-4444-555555555555")
    result = discover_identity(config_for(host, "azure", server.url))
    assert result.identity.instance_id == AZURE_ID
    assert any("neither byte order" in w for w in result.warnings)


@pytest.mark.parametrize("server", [("hetzner", {})], indirect=True)
def test_hetzner_answer_contradicting_dmi_serial_is_refused(
    host: FakeHost, server: FakeMetadataServer
) -> None:
    host.dmi(sys_vendor="Hetzner", product_serial="43")
    m = miss(config_for(host, "hetzner", server.url), "hetzner")
    assert m.outcome is Outcome.INVALID
    assert "DMI product_serial is '43'" in m.reason


@pytest.mark.parametrize("server", [("digitalocean", {})], indirect=True)
def test_digitalocean_serial_agreeing_is_noted(host: FakeHost, server: FakeMetadataServer) -> None:
    host.dmi(sys_vendor="DigitalOcean", product_serial="2756294")
    instance_id, detail = probe(config_for(host, "digitalocean", server.url), "digitalocean")
    assert instance_id == "2756294"
    assert "equals DMI product_serial" in detail


# -- the fakes really refuse what the real services refuse ------------------------------


@pytest.mark.parametrize(
    ("provider", "method", "path", "headers", "status"),
    [
        ("aws", "GET", "/latest/meta-data/instance-id", {}, 401),
        ("aws", "PUT", "/latest/api/token", {}, 400),
        (
            "aws",
            "PUT",
            "/2021-03-23/api/token",
            {"X-aws-ec2-metadata-token-ttl-seconds": "60"},
            403,
        ),
        (
            "aws",
            "PUT",
            "/latest/api/token",
            {TTL: "60", "X-Forwarded-For": "10.0.0.1"},
            403,
        ),
        ("gcp", "GET", "/computeMetadata/v1/instance/id", {}, 403),
        (
            "azure",
            "GET",
            "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
            {},
            400,
        ),
        ("azure", "GET", "/metadata/instance/compute/vmId?format=text", {"Metadata": "true"}, 400),
        (
            "azure",
            "GET",
            "/metadata/instance/compute/vmId?api-version=2021-02-01",
            {"Metadata": "true"},
            400,
        ),
        ("azure", "POST", "/metadata/instance?api-version=2021-02-01", {"Metadata": "true"}, 405),
    ],
    ids=[
        "aws-no-token",
        "aws-put-no-ttl",
        "aws-versioned-token-path",
        "aws-x-forwarded-for",
        "gcp-no-flavor",
        "azure-no-metadata-header",
        "azure-no-api-version",
        "azure-leaf-without-format",
        "azure-post",
    ],
)
def test_fakes_refuse_requests_the_real_services_refuse(
    provider: str, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    import httpx

    with FakeMetadataServer(provider, answer=ANSWERS[provider]) as fake:
        response = httpx.request(method, fake.url + path, headers=headers, trust_env=False)
    assert response.status_code == status


# -- misbehaving servers: bounded, reported, never fatal ------------------------------


@pytest.mark.timeout(15)
@pytest.mark.parametrize("provider", list(ANSWERS))
def test_hung_server_is_abandoned_at_the_probe_bound(host: FakeHost, provider: str) -> None:
    # pytest-timeout is the safety net; the assertion is the reason: the probe gave up.
    host.dmi(**SIGNALS[provider])
    with FakeMetadataServer(provider, behaviour=Behaviour.HUNG) as fake:
        m = miss(config_for(host, provider, fake.url, probe_timeout=0.3), provider)
        assert fake.requests, "the fake must have accepted the request"
    assert m.outcome is Outcome.ERROR
    assert "no complete answer within the probe bound (probe_timeout 0.3 s" in m.reason


@pytest.mark.timeout(15)
def test_trickling_server_cannot_stretch_the_bound(host: FakeHost) -> None:
    # Each byte arrives well inside the read timeout; only the total deadline stops it.
    host.dmi(**SIGNALS["gcp"])
    with FakeMetadataServer("gcp", behaviour=Behaviour.TRICKLE) as fake:
        m = miss(config_for(host, "gcp", fake.url, probe_timeout=0.3), "gcp")
    assert m.outcome is Outcome.ERROR
    assert "no complete answer within the probe bound" in m.reason


@pytest.mark.timeout(15)
def test_hung_token_put_mentions_the_hop_limit(host: FakeHost) -> None:
    host.dmi(**SIGNALS["aws"])
    with FakeMetadataServer("aws", behaviour=Behaviour.HUNG) as fake:
        m = miss(config_for(host, "aws", fake.url, probe_timeout=0.3), "aws")
    assert "HttpPutResponseHopLimit" in m.reason


@pytest.mark.parametrize("provider", list(ANSWERS))
def test_server_error_is_an_error_with_the_status(host: FakeHost, provider: str) -> None:
    host.dmi(**SIGNALS[provider])
    with FakeMetadataServer(provider, behaviour=Behaviour.SERVER_ERROR) as fake:
        m = miss(config_for(host, provider, fake.url), provider)
    assert m.outcome is Outcome.ERROR
    assert "HTTP 500" in m.reason


@pytest.mark.parametrize("provider", list(ANSWERS))
def test_non_http_garbage_is_an_error(host: FakeHost, provider: str) -> None:
    host.dmi(**SIGNALS[provider])
    with FakeMetadataServer(provider, behaviour=Behaviour.RAW_GARBAGE) as fake:
        m = miss(config_for(host, provider, fake.url), provider)
    assert m.outcome is Outcome.ERROR
    assert "broken HTTP answer" in m.reason


@pytest.mark.parametrize("provider", list(ANSWERS))
def test_oversized_body_is_refused(host: FakeHost, provider: str) -> None:
    host.dmi(**SIGNALS[provider])
    with FakeMetadataServer(provider, behaviour=Behaviour.HUGE) as fake:
        m = miss(config_for(host, provider, fake.url), provider)
    assert m.outcome is Outcome.INVALID
    assert "larger than 65536 bytes" in m.reason


GARBAGE_BODIES = [
    ("html", "<html><body>captive portal</body></html>"),
    ("control-char", "i-0af01c01\x1b[31m23456789a"),
    ("empty", ""),
    ("newline-inside", "1234\n5678"),
    ("overlong", "9" * 300),
    ("binary", "\x00\x01\x02"),
]


@pytest.mark.parametrize(("label", "body"), GARBAGE_BODIES, ids=[g[0] for g in GARBAGE_BODIES])
@pytest.mark.parametrize("provider", list(ANSWERS))
def test_garbage_bodies_are_invalid(host: FakeHost, provider: str, label: str, body: str) -> None:
    host.dmi(**SIGNALS[provider])
    with FakeMetadataServer(provider, answer=body) as fake:
        m = miss(config_for(host, provider, fake.url), provider)
    assert m.outcome is Outcome.INVALID, (label, m.reason)


def test_undecodable_body_is_invalid(host: FakeHost) -> None:
    host.dmi(**SIGNALS["hetzner"])
    with FakeMetadataServer("hetzner", answer=b"\xff\xfe42") as fake:
        m = miss(config_for(host, "hetzner", fake.url), "hetzner")
    assert m.outcome is Outcome.INVALID
    assert "not UTF-8" in m.reason


def test_connection_refused_is_an_error(host: FakeHost) -> None:
    host.dmi(**SIGNALS["digitalocean"])
    m = miss(config_for(host, "digitalocean", closed_port_url()), "digitalocean")
    assert m.outcome is Outcome.ERROR
    assert "cannot connect" in m.reason


# -- gating: no local signal, no network ---------------------------------------------


@pytest.mark.parametrize("provider", list(ANSWERS))
def test_no_platform_signal_means_no_request(
    host: FakeHost, provider: str, refused: list[object]
) -> None:
    host.dmi(sys_vendor="Dell Inc.", product_name="PowerEdge R650")
    with FakeMetadataServer(provider, answer=ANSWERS[provider]) as fake:
        m = miss(config_for(host, provider, fake.url), provider)
        assert fake.requests == []
    assert m.outcome is Outcome.SKIPPED
    assert "not probed" in m.reason


@pytest.mark.parametrize("provider", list(ANSWERS))
def test_probe_without_signal_when_allowed(host: FakeHost, provider: str) -> None:
    with FakeMetadataServer(provider, answer=ANSWERS[provider]) as fake:
        instance_id, detail = probe(
            config_for(host, provider, fake.url, probe_without_platform_signal=True), provider
        )
    assert instance_id == ANSWERS[provider]
    assert "probe_without_platform_signal" in detail


def test_default_config_on_a_plain_machine_touches_no_network(
    host: FakeHost, refused: list[object]
) -> None:
    # Real link-local defaults, but no cloud DMI: every cloud source must be skipped
    # without a single connect() (the guard would fail the test otherwise).
    host.dmi(sys_vendor="Dell Inc.")
    host.identity_cfg("instance_id = 6b1a24a1-4061-4607-8bf4-a3963d0c5895\n")
    config = IdentityConfig(root=host.root, in_container=False)
    assert config.aws_url == config.gcp_url == config.azure_url == LINK_LOCAL_METADATA
    result = discover_identity(config)
    assert result.identity.source == "local"
    for name in ("aws", "gcp", "azure", "digitalocean", "hetzner"):
        assert result.trail.outcome_of(name) is Outcome.SKIPPED
    assert refused == []


def test_in_a_container_host_dmi_does_not_gate_clouds(host: FakeHost) -> None:
    host.dmi(**SIGNALS["aws"])
    config = config_for(host, "aws", LINK_LOCAL_METADATA, in_container=True)
    with pytest.raises(UnresolvableIdentityError) as info:
        discover_identity(config)
    assert "in a container" in str(info.value)
    assert info.value.trail.outcome_of("aws") is Outcome.SKIPPED
