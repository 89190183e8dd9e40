"""``GET /metrics``: scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.platform.conftest import Platform
from tests.platform.test_drift import instance, report
from tests.platform.test_preview import assign, publish


def scrape(p: Platform, role: str = "read") -> dict[str, list[Sample]]:
    r = p.raw("GET", "/metrics", headers=p.headers(role))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_metrics_need_a_token(platform: Platform) -> None:
    r = platform.raw("GET", "/metrics")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"


def test_fleet_and_request_figures(platform: Platform) -> None:
    publish(
        platform, "system-base", category="system-base", files=["/etc/os-release"], state="live"
    )
    publish(
        platform, "my-redis", files=["/etc/redis.conf"], requires=["acme/system-base"], state="live"
    )
    assign(platform, "base", "my-redis")
    in_line = instance(platform, "redis-1")
    drifting = instance(platform, "redis-2")
    report(
        platform,
        in_line,
        {"my-redis": "sha256:my-redis-1.0.0", "system-base": "sha256:system-base-1.0.0"},
    )
    report(platform, drifting, {"my-redis": "sha256:other"})

    m = scrape(platform)
    assert (
        value(m["powernode_instances_drifting"], "powernode_instances_drifting", template="base")
        == 1
    )
    statuses = {s.labels["status"]: s.value for s in m["powernode_instances"]}
    assert sum(statuses.values()) == 2
    assert set(statuses) >= {"pending", "running", "terminated"}
    assert (
        value(
            m["powernode_node_certificates_expiring"],
            "powernode_node_certificates_expiring",
            within="7d",
        )
        == 0
    )
    (build,) = m["powernode_build_info"]
    assert build.labels["version"] and build.value == 1
    # Requests are timed by route template, never by raw path (one series per route).
    latency = m["powernode_http_request_duration_seconds"]
    routes = {s.labels["route"] for s in latency}
    assert "/api/v1/system/node_instances/{instance_id}/drift" in routes
    assert not any(in_line in r for r in routes)
    count = value(
        latency,
        "powernode_http_request_duration_seconds_count",
        route="/api/v1/system/node_instances/{instance_id}/drift",
        method="GET",
        status="2xx",
    )
    assert count == 2


def test_unmatched_paths_share_one_series(platform: Platform) -> None:
    for i in range(3):
        assert platform.raw("GET", f"/no/such/{i}").status_code == 404
    latency = scrape(platform)["powernode_http_request_duration_seconds"]
    assert value(
        latency, "powernode_http_request_duration_seconds_count",
        route="unmatched", method="GET", status="4xx",
    ) == 3  # fmt: skip
