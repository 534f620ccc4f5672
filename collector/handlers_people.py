"""Endpoints for the NOC, technicians and the billing job: read with an API token and a role."""

from __future__ import annotations

import msgspec
from aiohttp import web

from collector.appkeys import AGENT_TOKENS, AUTH_LIMITER, BUFFER, CLOCK, SETTINGS, STORE
from collector.auth import Permission, authenticate_person
from collector.background import state_windows
from collector.bodies import check_query, json_response, query_instant, read_query
from collector.errors import ApiError, json_routes
from collector.requests import AuditQuery, EventsQuery, InventoryQuery, MachinesQuery
from collector.store.base import (
    ApiTokenInfo,
    AuditFilter,
    MachineFilter,
    UnmanagedDevice,
)
from collector.views import audit_view, machine_view, with_buffered
from wire.times import format_instant

routes = json_routes()

_encode = msgspec.json.Encoder().encode


async def person(request: web.Request, permission: Permission) -> ApiTokenInfo:
    app = request.app
    return await authenticate_person(
        request, app[STORE], app[AGENT_TOKENS], app[AUTH_LIMITER], permission
    )


def visible(token: ApiTokenInfo, client_id: str, what: str = "machine") -> None:
    """A token limited to some clients finds nothing of the others: the same 404 as for
    something that does not exist, so it learns nothing about them."""
    if not token.sees(client_id):
        raise ApiError(404, f"{what}_not_found", f"no {what} has that id")


async def visible_machine(request: web.Request, token: ApiTokenInfo, machine_id: str) -> None:
    if token.clients is None:
        return
    record = await request.app[STORE].get_machine(machine_id)
    if record is not None:
        visible(token, record.client_id)


def whole_fleet(token: ApiTokenInfo, what: str) -> None:
    if token.clients is not None:
        raise ApiError(403, "forbidden", f"a token limited to some clients cannot read {what}")


@routes.get("/v1/machines")
async def list_machines(request: web.Request) -> web.Response:
    token = await person(request, "machines.read")
    query = read_query(request, MachinesQuery)
    limit = query.limit
    machine_filter = MachineFilter(
        client_id=query.client,
        state=query.state,
        kind=query.kind,
        hostname_contains=query.hostname,
        search=(query.q or "").strip() or None,
        after_machine_id=query.cursor,
        limit=limit + 1,
        client_ids=token.clients,
    )
    windows = state_windows(request.app[CLOCK], request.app[SETTINGS].online_window_s)
    records = await request.app[STORE].list_machines(machine_filter, windows)
    page = records[:limit]
    next_cursor = page[-1].machine_id if len(records) > limit else None
    return json_response(
        {
            "machines": [
                machine_view(with_buffered(r, request.app[BUFFER]), windows) for r in page
            ],
            "next_cursor": next_cursor,
        }
    )


@routes.get("/v1/machines/{machine_id}")
async def get_machine(request: web.Request) -> web.Response:
    token = await person(request, "machines.read")
    check_query(request, ())
    record = await request.app[STORE].get_machine(request.match_info["machine_id"])
    if record is None:
        raise ApiError(404, "machine_not_found", "no machine has that id")
    visible(token, record.client_id)
    windows = state_windows(request.app[CLOCK], request.app[SETTINGS].online_window_s)
    return json_response(machine_view(with_buffered(record, request.app[BUFFER]), windows))


@routes.get("/v1/machines/{machine_id}/events")
async def machine_events(request: web.Request) -> web.Response:
    token = await person(request, "machines.read")
    query = read_query(request, EventsQuery)
    machine_id = request.match_info["machine_id"]
    record = await request.app[STORE].get_machine(machine_id)
    if record is None:
        raise ApiError(404, "machine_not_found", "no machine has that id")
    visible(token, record.client_id)
    events = await request.app[STORE].list_events(machine_id, limit=query.limit)
    return json_response(
        {
            "events": [
                {
                    "event_id": e.event_id,
                    "at": format_instant(e.at),
                    "type": e.type,
                    "detail": msgspec.Raw(e.detail_json.encode()),
                }
                for e in events
            ]
        }
    )


def inventory_device(device: UnmanagedDevice) -> dict[str, str]:
    return {
        "client_id": device.client_id,
        "mac": device.mac,
        "ip": device.ip,
        "first_seen": format_instant(device.first_seen),
        "last_seen": format_instant(device.last_seen),
    }


@routes.get("/v1/inventory")
async def inventory(request: web.Request) -> web.StreamResponse:
    """Every machine enrolled before `as_of`, each field as it stood then; streamed in batches."""
    whole_fleet(await person(request, "inventory.read"), "the whole inventory")
    query = read_query(request, InventoryQuery)
    now = request.app[CLOCK].now()
    as_of = query_instant(query.as_of, "as_of") or now
    if as_of > now:
        raise ApiError(
            400,
            "as_of_in_future",
            "as_of is in the future; an inventory can only be taken of the past",
        )
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"as_of":' + _encode(format_instant(as_of)) + b',"machines":[')
    first = True
    # The store writes the rows' JSON itself: over a million machines, nothing here is per row.
    async for chunk in request.app[STORE].iter_inventory_json(as_of):
        if not first:
            await response.write(b",")
        await response.write(chunk)
        first = False
    # Devices without an agent as of `as_of`, for billing's reports (coverage): one query.
    unmanaged = await request.app[STORE].unmanaged_as_of(as_of)
    await response.write(b'],"unmanaged":' + _encode([inventory_device(d) for d in unmanaged]))
    await response.write(b"}")
    await response.write_eof()
    return response


@routes.get("/v1/audit")
async def audit(request: web.Request) -> web.Response:
    await person(request, "audit.read")
    query = read_query(request, AuditQuery)
    audit_filter = AuditFilter(
        actor=query.actor,
        action=query.action,
        target=query.target,
        since=query_instant(query.since, "since"),
        before_id=query.before,
        limit=query.limit,
    )
    entries = await request.app[STORE].list_audit(audit_filter)
    next_before = entries[-1][0] if len(entries) == audit_filter.limit else None
    return json_response(
        {"entries": [audit_view(i, e) for i, e in entries], "next_before": next_before}
    )


@routes.get("/v1/clients")
async def list_clients(request: web.Request) -> web.Response:
    """The clients, by name (to find a client's id, e.g. for a bulk offboard)."""
    token = await person(request, "machines.read")
    check_query(request, ())
    clients = [c for c in await request.app[STORE].list_clients() if token.sees(c.client_id)]
    return json_response({"clients": [{"client_id": c.client_id, "name": c.name} for c in clients]})
