"""Coverage for people: a client's unmanaged devices (dismiss, restore) and its monthly coverage
statement (see `collector.rules.network` and `collector.rules.coverage`)."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import CLOCK, STORE
from collector.bodies import check_query, json_response, read_json
from collector.errors import ApiError, json_routes
from collector.handlers_people import person
from collector.requests import DismissRequest, RestoreRequest
from collector.rules.network import device_mac, normalize_mac
from collector.store.base import (
    Conflict,
    DeviceNotFound,
    DismissedDevice,
    NotFound,
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
    await person(request, "machines.read")
    check_query(request, ("dismissed",))
    dismissed_flag = request.query.get("dismissed")
    if dismissed_flag not in (None, "0", "1"):
        raise ApiError(400, "invalid_dismissed", "dismissed must be 0 or 1")
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
