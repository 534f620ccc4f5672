"""Health, metrics and the OpenAPI document, which must describe exactly the routes served."""

from __future__ import annotations

from collector.openapi import build_spec
from collector.web import is_page_path
from tests.collector.conftest import Harness


async def test_openapi_describes_every_route_and_nothing_else(harness: Harness) -> None:
    """Every API and operations route is described; the web pages (HTML for people, outside
    `/v1/`, `/healthz` and `/metrics`) are not part of the API and are left out by that rule."""
    spec = await harness.get("/v1/openapi.json", {})
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in harness.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not is_page_path(route.resource.canonical)
    }
    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == described
    assert spec == build_spec()
    for schema in ("EnrollRequest", "HeartbeatRequest", "Component", "ErrorBody", "Machine"):
        assert schema in spec["components"]["schemas"]


async def test_healthz_needs_no_token(harness: Harness) -> None:
    assert await harness.get("/healthz", {}) == {"status": "ok"}


async def test_metrics_count_heartbeats_enrollments_rejections_and_states(
    harness: Harness,
) -> None:
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    await harness.heartbeat(agent["agent_token"])
    await harness.flush()
    await harness.client.get("/v1/machines")
    resp = await harness.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert "rmm_heartbeats_total 1.0" in text
    assert "rmm_enrollments_total 1.0" in text
    assert 'rmm_rejected_requests_total{reason="missing_token"} 1.0' in text
    assert 'rmm_machines{state="online"} 1.0' in text
    assert "rmm_last_seen_flush_seconds_count 1.0" in text
