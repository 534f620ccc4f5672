"""Offboarding from the pages: the request form, and following the command to its end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from collector.appkeys import CLOCK, OPEN_COMMANDS, SETTINGS, STORE
from collector.background import state_windows
from collector.bodies import json_response
from collector.handlers_commands import command_view
from collector.store.base import (
    CommandFilter,
    CommandRecord,
    Conflict,
    MachineRecord,
    NotFound,
    OffboardRequestRecord,
    Store,
    machine_state,
)
from collector.web import views
from collector.web.fleet import machine_or_404
from collector.web.offboard_plan import offboard_plan
from collector.web.people import (
    Person,
    require,
    require_form,
    signed_in,
)
from collector.web.policy import (
    FINAL_STATES,
    MAX_REASON,
    MAX_TICKET,
)
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect
from collector.web.step_rows import StepRow, first_failed, step_rows
from wire.times import parse_instant

routes = page_routes()


async def _offboard_form(
    request: web.Request,
    person: Person,
    record: MachineRecord,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    store = request.app[STORE]
    client, commands = await asyncio.gather(
        store.find_client(record.client_id),
        store.list_commands(CommandFilter(machine_id=record.machine_id, limit=200)),
    )
    pending = next((c for c in commands if c.state == "offboard_pending"), None)
    return render(
        request,
        "offboard.html",
        {
            "machine": record,
            "client": client,
            "pending": pending,
            "plan": offboard_plan(record.components_json, commands, pending),
            "values": values,
            "errors": errors,
            "max_reason": MAX_REASON,
            "max_ticket": MAX_TICKET,
        },
        person=person,
        status=status,
    )


@routes.get("/machines/{machine_id}/offboard")
async def offboard_form(request: web.Request) -> web.Response:
    person = await require(request, "offboard.request")
    record = await machine_or_404(request, request.match_info["machine_id"], person)
    if record.offboard_state == "offboarded":
        raise PageError(409, "Already offboarded", f"{record.hostname} is already offboarded.")
    return await _offboard_form(request, person, record, values={}, errors={})


@routes.post("/machines/{machine_id}/offboard")
async def offboard(request: web.Request) -> web.Response:
    person, form = await require_form(request, "offboard.request", fresh=True)
    app = request.app
    record = await machine_or_404(request, request.match_info["machine_id"], person)
    reason = form.get("reason", "").strip()
    ticket = form.get("ticket", "").strip()
    errors: dict[str, str] = {}
    if not reason:
        errors["reason"] = "Say why the machine is offboarded; the audit log keeps it."
    elif len(reason) > MAX_REASON:
        errors["reason"] = f"Keep the reason under {MAX_REASON} characters."
    elif "\x00" in reason:
        errors["reason"] = "The reason cannot contain a NUL character."
    if len(ticket) > MAX_TICKET:
        errors["ticket"] = f"Keep the ticket under {MAX_TICKET} characters."
    elif "\x00" in ticket:
        errors["ticket"] = "The ticket cannot contain a NUL character."
    if form.get("confirm") != record.machine_id:
        errors["confirm"] = "Tick the box to confirm this machine and client."
    if errors:
        return await _offboard_form(
            request,
            person,
            record,
            values={"reason": reason, "ticket": ticket},
            errors=errors,
            status=400,
        )
    try:
        command, _created = await app[STORE].request_offboard(
            OffboardRequestRecord(
                machine_id=record.machine_id,
                issuer=person.name,
                reason=reason,
                ticket=ticket or None,
            ),
            now=app[CLOCK].now(),
        )
    except NotFound as exc:
        raise PageError(404, "No such machine", str(exc)) from exc
    except Conflict as exc:
        raise PageError(409, "Already offboarded", str(exc)) from exc
    app[OPEN_COMMANDS].add(command.machine_id)
    raise Redirect(f"/commands/{command.command_id}")


async def _order(store: Store, command: CommandRecord) -> dict[str, Any] | None:
    """Who signed the command's order, and whether the agent will count each signature."""
    if command.order_b64 is None:
        return None
    approvals = await store.command_approvals(command.command_id)
    policy = await store.approval_policy(command.machine_id)
    counted = set(policy.counted(approvals))
    return {
        "approvals_required": policy.required,
        # 0 required: the agent said it takes the collector's signature alone, or never said.
        "policy_reported": policy.pinned is not None,
        "counted": len(counted),
        "approvals": [
            {
                "key_id": a.key_id,
                "operator": a.operator,
                "actor": a.actor,
                "approved_at": a.approved_at,
                "counted": a.key_id in counted,
            }
            for a in approvals
        ],
    }


@routes.get("/commands/{command_id}")
async def command(request: web.Request) -> web.Response:
    person = await require(request, "commands.read")
    app = request.app
    found = await app[STORE].get_command(request.match_info["command_id"])
    if found is None or not person.sees_client(found.client_id):
        raise PageError(404, "No such command", "No command has that id.")
    record, client, order = await asyncio.gather(
        app[STORE].get_machine(found.machine_id),
        app[STORE].find_client(found.client_id),
        _order(app[STORE], found),
    )
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    rows = step_rows(_steps(found))
    return render(
        request,
        "command.html",
        {
            "command": found,
            "order": order,
            "view": command_view(found),
            "machine": record,
            "machine_state": None if record is None else machine_state(record, windows),
            "client": client,
            "final": found.state in FINAL_STATES,
            "steps": rows,
            "failed_step": _failed_step(found, rows),
            "running_text": _running_text(found),
            "last_rejection_text": _rejection_text(found),
        },
        person=person,
    )


@routes.get("/commands/{command_id}/live")
async def command_live(request: web.Request) -> web.Response:
    """The follow page's JSON: polled by its script to update the page without reloading."""
    person = await signed_in(request)
    if person is None:
        return json_response(
            {"error": "signed_out", "detail": "the session has ended; sign in again"}, status=401
        )
    if not person.can("commands.read"):
        return json_response(
            {"error": "forbidden", "detail": f"the {person.role} role may not read commands"},
            status=403,
        )
    app = request.app
    found = await app[STORE].get_command(request.match_info["command_id"])
    if found is None or not person.sees_client(found.client_id):
        return json_response(
            {"error": "command_not_found", "detail": "no command has that id"}, status=404
        )
    record = await app[STORE].get_machine(found.machine_id)
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    view = command_view(found)
    state = None if record is None else machine_state(record, windows)
    rows = step_rows(_steps(found))
    failed = _failed_step(found, rows)
    return json_response(
        {
            **view,
            "step_rows": [row.as_json() for row in rows],
            "failed_step": None if failed is None else failed.as_json(),
            "state_label": views.STATE_LABELS[found.state],
            "final": found.state in FINAL_STATES,
            "machine_state": state,
            "machine_state_label": None if state is None else views.STATE_LABELS[state],
            "created_at_text": views.instant(found.created_at),
            "delivered_at_text": views.instant(found.delivered_at),
            "completed_at_text": views.instant(found.completed_at),
            "running_text": _running_text(found),
            "last_rejection_text": _rejection_text(found),
        }
    )


def _progress(command: CommandRecord) -> dict[str, Any]:
    progress: dict[str, Any] = json.loads(command.progress_json or "{}")
    return progress


def _steps(command: CommandRecord) -> list[dict[str, Any]]:
    """The final report's steps, or while it runs the steps the agent has reported so far."""
    if command.steps_json is not None:
        steps: list[dict[str, Any]] = json.loads(command.steps_json)
        return steps
    return list(_progress(command).get("steps") or [])


def _failed_step(command: CommandRecord, rows: list[StepRow]) -> StepRow | None:
    """On a failed offboard, the step that failed (shown first, prominently)."""
    if command.state != "offboard_failed":
        return None
    return first_failed(rows)


def _running_text(command: CommandRecord) -> str | None:
    running = _progress(command).get("running")
    if command.state != "offboard_pending" or not running:
        return None
    argv = " ".join(running.get("argv") or []) or "(a check, no command run)"
    started = running.get("started_at")
    since = f" (since {views.instant(parse_instant(started))})" if started else ""
    return f"{running.get('component') or '—'}: {argv}{since}"


def _rejection_text(command: CommandRecord) -> str | None:
    if command.last_rejection is None:
        return None
    return f"{command.last_rejection} ({views.instant(command.last_rejected_at)})"
