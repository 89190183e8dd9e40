"""Any JSON a node sends is answered 200 or a 4xx problem, never a 500 (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.platform.nodeapi.conftest import NodePlatform

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "id": st.uuids().map(str) | st.text(max_size=40),
        "kind": st.sampled_from(["task.completed", "x", "A.b", "system.cert.rotation_failed"]),
        "severity": st.sampled_from(["info", "critical", "loud", ""]),
        "occurred_at": st.sampled_from(["2026-05-01T12:00:00Z", "2026-05-01", "yesterday"]),
        "payload": JSON,
    },
)
PATHS = {
    "/status/heartbeat": st.dictionaries(
        st.sampled_from(["boot_id", "agent_version", "running_module_digests", "load", "mem", "x"]),
        JSON,
    ),
    "/events": st.fixed_dictionaries({"events": st.lists(EVENTISH, max_size=3)}) | JSON,
    "/tasks/lease": st.dictionaries(st.sampled_from(["max", "min"]), JSON),
    "/certificates/rotate": st.dictionaries(st.sampled_from(["csr_pem"]), JSON),
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(sorted(PATHS)), data=st.data())
def test_any_body_is_a_result_or_a_4xx(node_platform: NodePlatform, path: str, data: Any) -> None:
    p = node_platform
    if not hasattr(p, "_creds"):
        p._creds = p.enroll()  # type: ignore[attr-defined]
    body = data.draw(PATHS[path])
    r = p.node(p._creds, "POST", path, json=body)  # type: ignore[attr-defined]
    assert r.status_code in (200, 401, 403, 409, 413, 422), r.text
    if r.status_code != 200:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail"]
