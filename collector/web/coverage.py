"""Coverage pages: a client's unmanaged devices (dismiss with a reason, restore), its printable
monthly coverage statement, and a suspected clone's two copies (keep one)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal, cast, get_args

from aiohttp import web

from collector.appkeys import CLOCK, SETTINGS, STORE
from collector.clones import note_resolution
from collector.errors import ApiError
from collector.handlers_coverage import client_statement
from collector.rules.clones import ResolutionError
from collector.rules.network import device_mac
from collector.store.base import Client, Conflict, NotFound
from collector.web.fleet import machine_or_404
from collector.web.people import Person, require, require_form
from collector.web.policy import MAX_REASON
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect

routes = page_routes()

Keep = Literal["1", "2", "both"]


async def _client_or_404(request: web.Request, person: Person) -> Client:
    """The client, if the person may see it (otherwise as if there were none)."""
    client_id = request.match_info["client_id"]
    client = await request.app[STORE].find_client(client_id)
    if client is None or client.client_id != client_id or not person.sees_client(client_id):
        raise PageError(404, "No such client", "No client has that id.")
    return client


def _reason_error(reason: str) -> str | None:
    if not reason:
        return "Say why this needs no agent; the audit log keeps it."
    if len(reason) > MAX_REASON:
        return f"Keep the reason under {MAX_REASON} characters."
    if "\x00" in reason:
        return "The reason cannot contain a NUL character."
    return None


def _mac_or_404(request: web.Request) -> str:
    mac = device_mac(request.match_info["mac"])
    if mac is None:
        raise PageError(404, "No such device", "That is not the MAC of a device.")
    return mac


async def _unmanaged_page(
    request: web.Request,
    person: Person,
    client: Client,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> web.Response:
    store = request.app[STORE]
    devices, dismissed = await asyncio.gather(
        store.unmanaged_devices(client.client_id, as_of=request.app[CLOCK].now()),
        store.dismissed_devices(client.client_id),
    )
    return render(
        request,
        "unmanaged.html",
        {
            "client": client,
            "devices": devices,
            "dismissed": dismissed,
            "errors": errors or {},
            "values": values or {},
            "notice": notice,
            "max_reason": MAX_REASON,
        },
        person=person,
        status=status,
    )


@routes.get("/clients/{client_id}/unmanaged")
async def unmanaged(request: web.Request) -> web.Response:
    person = await require(request, "machines.read")
    client = await _client_or_404(request, person)
    notice = {"dismissed": "Dismissed.", "restored": "Listed again."}.get(
        request.query.get("done", "")
    )
    return await _unmanaged_page(request, person, client, notice=notice)


@routes.post("/clients/{client_id}/unmanaged/{mac}/dismiss")
async def dismiss(request: web.Request) -> web.Response:
    person, form = await require_form(request, "devices.dismiss")
    client = await _client_or_404(request, person)
    mac = _mac_or_404(request)
    reason = form.get("reason", "").strip()
    error = _reason_error(reason)
    if error is not None:
        return await _unmanaged_page(
            request, person, client, errors={mac: error}, values={mac: reason}, status=400
        )
    try:
        await request.app[STORE].dismiss_device(
            client.client_id, mac, reason=reason, now=request.app[CLOCK].now(), actor=person.name
        )
    except NotFound as exc:
        raise PageError(404, "No such device", str(exc)) from exc
    except Conflict as exc:
        raise PageError(409, "Already dismissed", str(exc)) from exc
    raise Redirect(f"/clients/{client.client_id}/unmanaged?done=dismissed")


@routes.post("/clients/{client_id}/unmanaged/{mac}/restore")
async def restore(request: web.Request) -> web.Response:
    person, _ = await require_form(request, "devices.dismiss")
    client = await _client_or_404(request, person)
    mac = _mac_or_404(request)
    try:
        await request.app[STORE].restore_device(
            client.client_id, mac, reason=None, now=request.app[CLOCK].now(), actor=person.name
        )
    except Conflict as exc:
        raise PageError(409, "Not dismissed", str(exc)) from exc
    raise Redirect(f"/clients/{client.client_id}/unmanaged?done=restored")


@routes.get("/clients/{client_id}/coverage")
async def coverage(request: web.Request) -> web.Response:
    """The printable statement a client can hand to its insurer."""
    person = await require(request, "machines.read")
    client = await _client_or_404(request, person)
    try:
        found = await client_statement(
            request.app[STORE],
            client.client_id,
            request.query.get("month"),
            request.app[CLOCK].now(),
            grace=timedelta(seconds=request.app[SETTINGS].online_window_s),
        )
    except ApiError as exc:
        raise PageError(exc.status, "No statement", exc.detail) from exc
    return render(request, "coverage.html", {"found": found}, person=person)


async def _clone_page(
    request: web.Request,
    person: Person,
    machine_id: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    store = request.app[STORE]
    record = await machine_or_404(request, machine_id, person)
    client, suspicions = await asyncio.gather(
        store.find_client(record.client_id), store.clone_suspicions(machine_id)
    )
    return render(
        request,
        "clone.html",
        {
            "machine": record,
            "client": client,
            "suspicions": suspicions,
            "error": error,
            "max_reason": MAX_REASON,
        },
        person=person,
        status=status,
    )


@routes.get("/machines/{machine_id}/clone")
async def clone(request: web.Request) -> web.Response:
    person = await require(request, "machines.read")
    return await _clone_page(request, person, request.match_info["machine_id"])


@routes.post("/machines/{machine_id}/clone/resolve")
async def resolve_clone(request: web.Request) -> web.Response:
    person, form = await require_form(request, "machines.approve")
    machine_id = request.match_info["machine_id"]
    await machine_or_404(request, machine_id, person)
    keep = form.get("keep", "")
    reason = form.get("reason", "").strip()
    error = _reason_error(reason)
    if keep not in get_args(Keep):
        error = "Choose the copy that keeps this machine record."
    if error is not None:
        return await _clone_page(request, person, machine_id, error=error, status=400)
    try:
        resolved = await request.app[STORE].resolve_clone(
            machine_id,
            cast(Keep, keep),
            reason=reason,
            now=request.app[CLOCK].now(),
            actor=person.name,
        )
    except NotFound as exc:
        raise PageError(409, "Nothing to resolve", str(exc)) from exc
    except ResolutionError as exc:
        return await _clone_page(request, person, machine_id, error=str(exc), status=409)
    note_resolution(request.app, resolved)
    raise Redirect(f"/machines/{machine_id}/clone")
