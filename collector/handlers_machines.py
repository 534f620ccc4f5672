"""What people change about a machine through the API: its billed kind."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import BUFFER, CLOCK, SETTINGS, STORE
from collector.background import state_windows
from collector.bodies import check_query, json_response, read_json, read_query
from collector.errors import ApiError, json_routes
from collector.handlers_people import person, visible_machine
from collector.requests import HeldQuery, KindRequest
from collector.rules.enrollment import approval_lapses
from collector.store.base import NotFound
from collector.views import held_view, machine_view, with_buffered
from wire.times import format_instant

routes = json_routes()


@routes.post("/v1/machines/{machine_id}/kind")
async def set_kind(request: web.Request) -> web.Response:
    """An admin confirms the kind a machine reports (or sets one): billed so from now on."""
    token = await person(request, "machines.reprice")
    check_query(request, ())
    body = await read_json(request, KindRequest)
    app = request.app
    try:
        record = await app[STORE].set_kind(
            request.match_info["machine_id"], body.kind, now=app[CLOCK].now(), actor=token.name
        )
    except NotFound as exc:
        raise ApiError(404, "machine_not_found", str(exc)) from exc
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    return json_response(machine_view(with_buffered(record, app[BUFFER]), windows))


@routes.post("/v1/machines/{machine_id}/approve-reenroll")
async def approve_reenroll(request: web.Request) -> web.Response:
    """A technician lets known hardware enroll again without its credential (24 h, once)."""
    token = await person(request, "machines.approve")
    check_query(request, ())
    app = request.app
    machine_id = request.match_info["machine_id"]
    await visible_machine(request, token, machine_id)
    try:
        held = await app[STORE].approve_reenroll(machine_id, now=app[CLOCK].now(), actor=token.name)
    except NotFound as exc:
        raise ApiError(404, "machine_not_found", str(exc)) from exc
    return json_response(
        {
            "machine_id": machine_id,
            "approved_until": format_instant(approval_lapses(app[CLOCK].now())),
            "held": None if held is None else held_view(held),
        }
    )


@routes.get("/v1/enrollments/held")
async def list_held(request: web.Request) -> web.Response:
    """Enrollments of known hardware waiting for a technician, newest first."""
    token = await person(request, "machines.read")
    machine_id = read_query(request, HeldQuery).machine
    held = await request.app[STORE].held_enrollments(machine_id)
    return json_response({"held": [held_view(h) for h in held if token.sees(h.client_id)]})
