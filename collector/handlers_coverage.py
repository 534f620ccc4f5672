"""Coverage for people: a client's unmanaged devices (dismiss, restore) and its monthly coverage
statement (see `collector.rules.network` and `collector.rules.coverage`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from collector.appkeys import CLOCK, SETTINGS, STORE
from collector.bodies import check_query, json_response, read_json, read_query
from collector.clones import note_resolution
from collector.errors import ApiError, json_routes
from collector.handlers_people import person, visible, visible_machine
from collector.requests import (
    CoverageQuery,
    DismissRequest,
    ResolveCloneRequest,
    RestoreRequest,
    UnmanagedQuery,
)
from collector.rules.clones import ResolutionError
from collector.rules.coverage import MonthError, Statement, coverage_statement, month_bounds
from collector.rules.network import device_mac, normalize_mac
from collector.store.base import (
    Client,
    CloneSuspicion,
    Conflict,
    DeviceNotFound,
    DismissedDevice,
    NotFound,
    Store,
    UnmanagedDevice,
)
from wire.times import format_instant

routes = json_routes()


def device_json(device: UnmanagedDevice) -> dict[str, object]:
    return {
        "mac": device.mac,
        "ip": device.ip,
        "first_seen": format_instant(device.first_seen),
        "last_seen": format_instant(device.last_seen),
        "seen_by": list(device.seen_by),
    }


def dismissed_json(device: DismissedDevice) -> dict[str, object]:
    return {
        "mac": device.mac,
        "ip": device.ip,
        "reason": device.reason,
        "dismissed_by": device.actor,
        "dismissed_at": format_instant(device.at),
        "last_seen": None if device.last_seen is None else format_instant(device.last_seen),
    }


def path_mac(request: web.Request) -> str:
    """The device's MAC from the path, normalised; 400 for anything that is not a device MAC."""
    text = request.match_info["mac"]
    mac = device_mac(text)
    if mac is None:
        why = "is noise (broadcast, multicast or all zero)" if normalize_mac(text) else "is no MAC"
        raise ApiError(
            400, "invalid_mac", f"{text!r} {why}; write a unicast MAC like aa:bb:cc:dd:ee:ff"
        )
    return mac


@routes.get("/v1/clients/{client_id}/unmanaged")
async def list_unmanaged(request: web.Request) -> web.Response:
    """Devices the client's agents saw in the last 30 days that carry no agent; with
    `?dismissed=1`, also the devices dismissed (with who and why)."""
    token = await person(request, "machines.read")
    visible(token, request.match_info["client_id"], "client")
    dismissed_flag = read_query(request, UnmanagedQuery).dismissed
    store = request.app[STORE]
    client_id = request.match_info["client_id"]
    try:
        devices = await store.unmanaged_devices(client_id, as_of=request.app[CLOCK].now())
        dismissed = await store.dismissed_devices(client_id) if dismissed_flag == "1" else None
    except NotFound as exc:
        raise ApiError(404, "client_not_found", str(exc)) from exc
    body: dict[str, object] = {"devices": [device_json(d) for d in devices]}
    if dismissed is not None:
        body["dismissed"] = [dismissed_json(d) for d in dismissed]
    return json_response(body)


@routes.post("/v1/clients/{client_id}/unmanaged/{mac}/dismiss")
async def dismiss(request: web.Request) -> web.Response:
    """A technician hides a device that needs no agent; seeing it again does not bring it back."""
    token = await person(request, "devices.dismiss")
    visible(token, request.match_info["client_id"], "client")
    check_query(request, ())
    mac = path_mac(request)
    body = await read_json(request, DismissRequest)
    app = request.app
    try:
        device = await app[STORE].dismiss_device(
            request.match_info["client_id"],
            mac,
            reason=body.reason,
            now=app[CLOCK].now(),
            actor=token.name,
        )
    except DeviceNotFound as exc:
        raise ApiError(404, "device_not_found", str(exc)) from exc
    except NotFound as exc:
        raise ApiError(404, "client_not_found", str(exc)) from exc
    except Conflict as exc:
        raise ApiError(409, "already_dismissed", str(exc)) from exc
    return json_response(dismissed_json(device))


@routes.post("/v1/clients/{client_id}/unmanaged/{mac}/restore")
async def restore(request: web.Request) -> web.Response:
    """Undo a dismissal: the device is listed again while agents keep seeing it."""
    token = await person(request, "devices.dismiss")
    visible(token, request.match_info["client_id"], "client")
    check_query(request, ())
    mac = path_mac(request)
    body = await read_json(request, RestoreRequest) if request.can_read_body else RestoreRequest()
    app = request.app
    try:
        await app[STORE].restore_device(
            request.match_info["client_id"],
            mac,
            reason=body.reason,
            now=app[CLOCK].now(),
            actor=token.name,
        )
    except NotFound as exc:
        raise ApiError(404, "client_not_found", str(exc)) from exc
    except Conflict as exc:
        raise ApiError(409, "not_dismissed", str(exc)) from exc
    return json_response({"mac": mac, "state": "restored"})


@dataclass(frozen=True, slots=True)
class ClientStatement:
    """A coverage statement with what it says about the client's network."""

    client: Client
    month: str
    statement: Statement
    unmanaged: list[UnmanagedDevice]
    dismissed: list[DismissedDevice]


async def client_statement(
    store: Store, client_id: str, month: str | None, now: datetime, *, grace: timedelta
) -> ClientStatement:
    """The statement of `month` (default: the current one); ApiError for bad input."""
    month = month or now.strftime("%Y-%m")
    try:
        start, end = month_bounds(month, now)
    except MonthError as exc:
        raise ApiError(400, "invalid_month", str(exc)) from exc
    client = await store.find_client(client_id)
    if client is None or client.client_id != client_id:
        raise ApiError(404, "client_not_found", "no client has that id")
    until = min(end, now)
    histories = await store.coverage_histories(client_id, start, until)
    unmanaged, dismissed = await store.devices_in_month(client_id, start, until, now=now)
    statement = coverage_statement(histories, start, end, now, grace=grace)
    return ClientStatement(client, month, statement, unmanaged, dismissed)


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def statement_json(found: ClientStatement) -> dict[str, object]:
    statement = found.statement
    return {
        "client_id": found.client.client_id,
        "client_name": found.client.name,
        "month": found.month,
        "from": format_instant(statement.start),
        "to": format_instant(statement.end),
        "complete": statement.complete,
        "summary": statement.summary,
        "machines_total": len(statement.machines),
        "machines_protected": statement.protected,
        "machines": [
            {
                "machine_id": m.machine_id,
                "hostname": m.hostname,
                "kind": m.kind,
                "protected": m.protected,
                "heard_s": round(m.heard_s, 3),
                "components": [
                    {
                        "name": c.name,
                        "share": _share(c.share),
                        "gaps": [
                            {
                                "component": g.component,
                                "from": format_instant(g.start),
                                "to": format_instant(g.end),
                                "status": g.status,
                            }
                            for g in c.gaps
                        ],
                    }
                    for c in m.components
                ],
                "silences": [
                    {"from": format_instant(a), "to": format_instant(b)} for a, b in m.silences
                ],
            }
            for m in statement.machines
        ],
        "unmanaged": [
            {k: v for k, v in device_json(d).items() if k != "seen_by"} for d in found.unmanaged
        ],
        "dismissed": [dismissed_json(d) for d in found.dismissed],
    }


@routes.get("/v1/clients/{client_id}/coverage")
async def coverage(request: web.Request) -> web.Response:
    """The month's coverage statement of the client (viewer and up): see
    `collector.rules.coverage` for what it counts."""
    token = await person(request, "machines.read")
    visible(token, request.match_info["client_id"], "client")
    month = read_query(request, CoverageQuery).month
    found = await client_statement(
        request.app[STORE],
        request.match_info["client_id"],
        month,
        request.app[CLOCK].now(),
        grace=timedelta(seconds=request.app[SETTINGS].online_window_s),
    )
    return json_response(statement_json(found))


def suspicion_json(s: CloneSuspicion) -> dict[str, object]:
    return {
        "id": s.id,
        "machine_id": s.machine_id,
        "kind": s.kind,
        "detected_at": format_instant(s.detected_at),
        "candidates": s.candidates,
        "state": "open" if s.resolved_at is None else "resolved",
        "resolved_at": None if s.resolved_at is None else format_instant(s.resolved_at),
        "resolved_by": s.resolved_by,
        "reason": s.reason,
        "kept_hostname": s.kept_hostname,
        "split_hostname": s.split_hostname,
        "split_machine_id": s.split_machine_id,
    }


@routes.get("/v1/machines/{machine_id}/clones")
async def list_clone_suspicions(request: web.Request) -> web.Response:
    """The machine's clone suspicions, the open one first, with the two copies seen."""
    token = await person(request, "machines.read")
    await visible_machine(request, token, request.match_info["machine_id"])
    check_query(request, ())
    machine_id = request.match_info["machine_id"]
    store = request.app[STORE]
    if await store.get_machine(machine_id) is None:
        raise ApiError(404, "machine_not_found", "no machine has that id")
    suspicions = await store.clone_suspicions(machine_id)
    return json_response({"suspicions": [suspicion_json(s) for s in suspicions]})


@routes.post("/v1/machines/{machine_id}/clone/resolve")
async def resolve_clone(request: web.Request) -> web.Response:
    """A technician keeps one copy; the other gets its own machine record at its next
    enrollment, and its heartbeats under the kept copy's credential are refused."""
    token = await person(request, "machines.approve")
    await visible_machine(request, token, request.match_info["machine_id"])
    check_query(request, ())
    body = await read_json(request, ResolveCloneRequest)
    app = request.app
    machine_id = request.match_info["machine_id"]
    if await app[STORE].get_machine(machine_id) is None:
        raise ApiError(404, "machine_not_found", "no machine has that id")
    try:
        resolved = await app[STORE].resolve_clone(
            machine_id, body.keep, reason=body.reason, now=app[CLOCK].now(), actor=token.name
        )
    except NotFound as exc:
        raise ApiError(409, "no_clone_suspected", str(exc)) from exc
    except ResolutionError as exc:
        raise ApiError(409, "clone_indistinct", str(exc)) from exc
    note_resolution(app, resolved)
    return json_response(suspicion_json(resolved))
