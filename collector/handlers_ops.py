"""Endpoints for operations: health, metrics and the API description. No token needed."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import CLOCK, METRICS, SETTINGS, STORE
from collector.background import state_windows
from collector.bodies import json_response
from collector.errors import ApiError, json_routes
from collector.openapi import build_spec

routes = json_routes()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].find_client("")
    except Exception as exc:
        raise ApiError(503, "database_unavailable", "the database does not answer") from exc
    return json_response({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    app[METRICS].set_machine_counts(await app[STORE].count_machines_by_state(windows))
    return web.Response(
        body=app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_spec())
