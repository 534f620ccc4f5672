"""Endpoints for operations: health, metrics and the API description. No token needed."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import CLOCK, HEALTH, METRICS, SETTINGS, STORE
from collector.background import state_windows
from collector.bodies import json_response
from collector.errors import RETRY_AFTER_S, ApiError, json_routes
from collector.openapi import build_spec
from collector.views import CLOCK_SKEW_MS

routes = json_routes()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 only while the database answers reads and recently took a write: a collector that
    acknowledges heartbeats it cannot persist is not healthy (`collector.health`)."""
    health = request.app[HEALTH]
    try:
        await request.app[STORE].find_client("")
    except Exception as exc:
        raise _unavailable(f"the database does not answer: {exc}") from exc
    if health.stale:
        raise _unavailable(health.describe())
    return json_response({"status": "ok"})


def _unavailable(detail: str) -> ApiError:
    return ApiError(
        503, "database_unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    metrics = app[METRICS]
    metrics.set_machine_counts(await app[STORE].count_machines_by_state(windows))
    metrics.clock_skewed.set(await app[STORE].count_clock_skewed(CLOCK_SKEW_MS))
    metrics.last_write_age.set(app[HEALTH].age_s)
    return web.Response(
        body=app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_spec())
