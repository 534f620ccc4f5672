"""What people change about a machine through the API: its billed kind."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import BUFFER, CLOCK, SETTINGS, STORE
from collector.background import state_windows
from collector.bodies import check_query, json_response, read_json
from collector.errors import ApiError, json_routes
from collector.handlers_people import person
from collector.requests import KindRequest
from collector.store.base import NotFound
from collector.views import machine_view, with_buffered

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
