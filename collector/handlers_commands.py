"""Offboarding requests from technicians, command follow-up, results from agents, exposure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from aiohttp import web

from collector.appkeys import (
    AGENT_TOKENS,
    AUTH_LIMITER,
    CLOCK,
    METRICS,
    OPEN_COMMANDS,
    SETTINGS,
    STORE,
)
from collector.auth import authenticate_agent
from collector.background import state_windows
from collector.bodies import check_query, json_response, read_json, read_query
from collector.errors import ApiError, json_routes
from collector.handlers_orders import order_view
from collector.handlers_people import person, visible, visible_machine
from collector.requests import CommandsQuery, OffboardRequest
from collector.store.base import (
    AuditEntry,
    CommandFilter,
    CommandRecord,
    CommandResultRecord,
    Conflict,
    ExposureRow,
    NotFound,
    NotOwner,
    OffboardRequestRecord,
)
from wire.messages import (
    CommandProgressRequest,
    CommandResultRequest,
    CommandResultResponse,
)
from wire.times import format_instant

routes = json_routes()

_encode = msgspec.json.Encoder().encode

PENDING_TOO_LONG = timedelta(days=7)


def command_view(command: CommandRecord) -> dict[str, Any]:
    def instant(value: Any) -> str | None:
        return None if value is None else format_instant(value)

    return {
        "command_id": command.command_id,
        "type": command.type,
        "machine_id": command.machine_id,
        "client_id": command.client_id,
        "agent_id": command.agent_id,
        "state": command.state,
        "issuer": command.issuer,
        "reason": command.reason,
        "ticket": command.ticket,
        "sequence": command.sequence,
        "created_at": instant(command.created_at),
        "delivered_at": instant(command.delivered_at),
        "delivery_count": command.delivery_count,
        "completed_at": instant(command.completed_at),
        "result": None
        if command.result_status is None
        else {
            "status": command.result_status,
            "reason": command.result_reason,
            "steps": msgspec.Raw((command.steps_json or "[]").encode()),
        },
        "rejections": command.rejections,
        "last_rejection": None
        if command.last_rejection is None
        else {"reason": command.last_rejection, "at": instant(command.last_rejected_at)},
        "progress": None
        if command.progress_json is None
        else {
            **msgspec.json.decode(command.progress_json),
            "at": instant(command.progress_at),
        },
    }


@routes.post("/v1/machines/{machine_id}/offboard")
async def request_offboard(request: web.Request) -> web.Response:
    token = await person(request, "offboard.request")
    check_query(request, ())
    body = await read_json(request, OffboardRequest)
    if not body.reason.strip():
        raise ApiError(400, "invalid_body", "reason must say why the machine is offboarded")
    app = request.app
    await visible_machine(request, token, request.match_info["machine_id"])
    await _breaker(app)
    try:
        command, _created = await app[STORE].request_offboard(
            OffboardRequestRecord(
                machine_id=request.match_info["machine_id"],
                issuer=token.name,
                reason=body.reason.strip(),
                ticket=body.ticket,
            ),
            now=app[CLOCK].now(),
        )
    except NotFound as exc:
        raise ApiError(404, "machine_not_found", str(exc)) from exc
    except Conflict as exc:
        raise ApiError(409, "already_offboarded", str(exc)) from exc
    if command.state == "offboard_pending":
        app[OPEN_COMMANDS].add(command.machine_id)
    return json_response(
        {
            "command_id": command.command_id,
            "state": command.state,
            **await order_view(app[STORE], command),
        },
        status=202,
    )


async def _breaker(app: web.Application) -> None:
    """More single offboards in an hour than the setting allows is a 429: a stolen technician
    token cannot queue the whole fleet one machine at a time. A client's whole fleet goes as
    one bulk order, reviewed and signed as one (`POST /v1/clients/{id}/offboard`)."""
    limit = app[SETTINGS].offboard_requests_per_hour
    if limit == 0:
        return
    since = app[CLOCK].now() - timedelta(hours=1)
    if await app[STORE].offboard_requests_since(since) >= limit:
        app[METRICS].security_events.labels(kind="offboard_breaker").inc()
        raise ApiError(
            429,
            "offboard_breaker_open",
            f"more than {limit} offboards were asked for in the last hour; offboard a whole "
            "client as one bulk order, or raise RMM_COLLECTOR_OFFBOARD_REQUESTS_PER_HOUR",
        )


@routes.get("/v1/commands/{command_id}")
async def get_command(request: web.Request) -> web.Response:
    token = await person(request, "commands.read")
    check_query(request, ())
    store = request.app[STORE]
    command = await store.get_command(request.match_info["command_id"])
    if command is None:
        raise ApiError(404, "command_not_found", "no command has that id")
    visible(token, command.client_id, "command")
    return json_response({**command_view(command), **await order_view(store, command)})


@routes.get("/v1/commands")
async def list_commands(request: web.Request) -> web.Response:
    token = await person(request, "commands.read")
    query = read_query(request, CommandsQuery)
    limit = query.limit
    commands = await request.app[STORE].list_commands(
        CommandFilter(
            state=query.state,
            machine_id=query.machine,
            after_command_id=query.cursor,
            limit=limit + 1,
            client_ids=token.clients,
        )
    )
    page = commands[:limit]
    next_cursor = page[-1].command_id if len(commands) > limit else None
    return json_response({"commands": [command_view(c) for c in page], "next_cursor": next_cursor})


@routes.post("/v1/commands/{command_id}/result")
async def command_result(request: web.Request) -> web.Response:
    app = request.app
    identity = await authenticate_agent(request, app[STORE], app[AGENT_TOKENS], app[AUTH_LIMITER])
    body = await read_json(request, CommandResultRequest)
    result = CommandResultRecord(
        command_id=request.match_info["command_id"],
        status=body.status,
        reason=body.reason,
        steps_json=_encode(body.steps).decode(),
        agent_time=body.agent_time,
        suppressed=body.suppressed or 0,
    )
    try:
        command = await app[STORE].record_command_result(identity, result, now=app[CLOCK].now())
    except NotFound as exc:
        raise ApiError(404, "command_not_found", str(exc)) from exc
    except NotOwner as exc:
        app[METRICS].security_events.labels(kind="foreign_result").inc()
        raise ApiError(403, "not_your_command", str(exc)) from exc
    if body.status == "rejected":
        app[METRICS].security_events.labels(kind="command_rejected").inc()
    if command.state != "offboard_pending":
        app[OPEN_COMMANDS].discard(command.machine_id)
    if command.state == "offboarded":
        await app[AGENT_TOKENS].apply_revocations()
    return json_response(CommandResultResponse(command_id=command.command_id, state=command.state))


@routes.post("/v1/commands/{command_id}/progress")
async def command_progress(request: web.Request) -> web.Response:
    """The agent's steps so far while a command runs; heartbeats go on meanwhile."""
    app = request.app
    identity = await authenticate_agent(request, app[STORE], app[AGENT_TOKENS], app[AUTH_LIMITER])
    body = await read_json(request, CommandProgressRequest)
    try:
        command = await app[STORE].record_command_progress(
            identity,
            request.match_info["command_id"],
            _encode({"steps": body.steps, "running": body.running}).decode(),
            now=app[CLOCK].now(),
        )
    except NotFound as exc:
        raise ApiError(404, "command_not_found", str(exc)) from exc
    except NotOwner as exc:
        app[METRICS].security_events.labels(kind="foreign_progress").inc()
        await app[STORE].add_audit(
            AuditEntry(
                app[CLOCK].now(),
                identity.agent_id,
                "command.progress_refused",
                request.match_info["command_id"],
                {"reason": str(exc), "machine_id": identity.machine_id},
            )
        )
        raise ApiError(403, "not_your_command", str(exc)) from exc
    return json_response(CommandResultResponse(command_id=command.command_id, state=command.state))


def _exposure_view(row: ExposureRow) -> dict[str, Any]:
    return {
        "machine_id": row.machine_id,
        "client_id": row.client_id,
        "hostname": row.hostname,
        "kind": row.kind,
        "last_seen": format_instant(row.last_seen),
        "offboard_state": row.offboard_state,
        "command_id": row.command_id,
        "offboard_requested_at": None
        if row.requested_at is None
        else format_instant(row.requested_at),
    }


@routes.get("/v1/reports/exposure")
async def licence_exposure(request: web.Request) -> web.Response:
    """Licensed software the MSP still pays for: expired without offboarding, or stuck pending."""
    token = await person(request, "machines.read")
    check_query(request, ())
    app = request.app
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    expired, pending = await app[STORE].licence_exposure(
        windows, pending_before=windows.now - PENDING_TOO_LONG
    )
    expired = [r for r in expired if token.sees(r.client_id)]
    pending = [r for r in pending if token.sees(r.client_id)]
    return json_response(
        {
            "as_of": format_instant(windows.now),
            "expired_without_offboard": [_exposure_view(r) for r in expired],
            "offboards_pending_over_7_days": [_exposure_view(r) for r in pending],
        }
    )
