"""The fleet at a glance, the machines list and each machine's page."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast, get_args

from aiohttp import web

from collector.appkeys import BUFFER, CLOCK, SETTINGS, STORE
from collector.background import state_windows
from collector.store.base import (
    COMPONENT_STATUS_FILTERS,
    MACHINE_STATES,
    AuditFilter,
    ClientOverview,
    CommandFilter,
    ComponentStatusFilter,
    MachineQuery,
    MachineRecord,
    MachineState,
    machine_state,
)
from collector.views import machine_flags, with_buffered
from collector.web import views
from collector.web.audit_rows import AuditRow, audit_rows, named_ids
from collector.web.people import Person, require, require_form
from collector.web.policy import (
    ATTENTION_LIMIT,
    PAGE_SIZE,
    PENDING_FOR,
    STALE_AFTER,
)
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect
from wire.messages import Kind
from wire.times import EXPIRY

routes = page_routes()


def _fleet_totals(clients: list[ClientOverview]) -> dict[str, Any]:
    by_state: dict[MachineState, int] = dict.fromkeys(MACHINE_STATES, 0)
    for client in clients:
        for state, count in client.by_state.items():
            by_state[state] += count
    return {
        "by_state": by_state,
        "total": sum(by_state.values()),
        "in_inventory": sum(c.in_inventory for c in clients),
        "covered": sum(c.covered for c in clients),
        "stale": sum(c.stale for c in clients),
        "exposed": sum(c.exposed for c in clients),
        "pending_overdue": sum(c.pending_overdue for c in clients),
    }


@routes.get("/")
async def overview(request: web.Request) -> web.Response:
    person = await require(request, "machines.read")
    if person.clients is not None:  # the overview counts every client's machines
        raise Redirect("/machines")
    app = request.app
    store = app[STORE]
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    now = windows.now
    clients, (pending, failed), stale, exposed = await asyncio.gather(
        store.client_overview(
            windows, stale_before=now - STALE_AFTER, pending_before=now - PENDING_FOR
        ),
        store.offboards_needing_attention(pending_before=now - PENDING_FOR, limit=ATTENTION_LIMIT),
        store.machine_page(
            MachineQuery(
                state="offline",
                seen_before=now - STALE_AFTER,
                sort="last_seen",
                limit=ATTENTION_LIMIT,
            ),
            windows,
        ),
        store.machine_page(
            MachineQuery(exposed=True, sort="last_seen", limit=ATTENTION_LIMIT), windows
        ),
    )
    return render(
        request,
        "overview.html",
        {
            "clients": clients,
            "client_names": {c.client_id: c.name for c in clients},
            "totals": _fleet_totals(clients),
            "pending": pending,
            "failed": failed,
            "stale": stale,
            "exposed": exposed,
            "stale_days": STALE_AFTER.days,
            "next_cutoff": views.next_cutoff(now),
            "billed_again": views.billed_again,
            "expiry": EXPIRY,
        },
        person=person,
    )


# machines


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    if value not in allowed:
        raise PageError(400, "Bad filter", f"{name} must be one of: {', '.join(allowed)}.")
    return value


def _positive(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1 or int(raw) > 1_000_000:
        raise PageError(400, "Bad filter", f"{name} must be a whole number from 1.")
    return int(raw)


@routes.get("/machines")
async def machines(request: web.Request) -> web.Response:
    person = await require(request, "machines.read")
    app = request.app
    state = _choice(request, "state", MACHINE_STATES)
    kind = _choice(request, "kind", get_args(Kind))
    status = _choice(request, "status", COMPONENT_STATUS_FILTERS)
    sort = _choice(request, "sort", ("hostname", "last_seen")) or "hostname"
    offline_days = _positive(request, "offline_days", None)
    page = _positive(request, "page", 1) or 1
    exposed = request.query.get("exposed") == "1"
    params: dict[str, Any] = {
        "client": request.query.get("client", "").strip(),
        "state": state,
        "kind": kind,
        "component": request.query.get("component", "").strip(),
        "status": status,
        "q": request.query.get("q", "").strip(),
        "offline_days": offline_days,
        "exposed": "1" if exposed else None,
        "sort": sort if sort != "hostname" else None,
    }
    if person.clients is not None and params["client"] not in person.clients:
        params["client"] = min(person.clients)  # a person limited to clients sees one at a time
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    query = MachineQuery(
        client_id=params["client"] or None,
        state=cast(MachineState | None, state),
        kind=kind,
        search=params["q"] or None,
        component=params["component"] or None,
        component_status=cast(ComponentStatusFilter | None, status),
        seen_before=None if offline_days is None else windows.now - timedelta(days=offline_days),
        exposed=exposed,
        sort="last_seen" if sort == "last_seen" else "hostname",
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    found, clients = await asyncio.gather(
        app[STORE].machine_page(query, windows), app[STORE].list_clients()
    )
    clients = [c for c in clients if person.sees_client(c.client_id)]
    return render(
        request,
        "machines.html",
        {
            "machines": [
                (m, machine_state(m, windows))
                for m in (with_buffered(m, app[BUFFER]) for m in found.machines)
            ],
            "summaries": {
                m.machine_id: views.component_summary(m.components_json, m.offboard_state)
                for m in found.machines
            },
            "pager": views.pager("/machines", params, page=page, size=PAGE_SIZE, total=found.total),
            "params": params,
            "clients": clients,
            "client_names": {c.client_id: c.name for c in clients},
            "states": MACHINE_STATES,
            "kinds": get_args(Kind),
            "components": views.KNOWN_COMPONENTS,
            "statuses": views.COMPONENT_STATUS_LABELS,
        },
        person=person,
    )


async def machine_or_404(request: web.Request, machine_id: str, person: Person) -> MachineRecord:
    """The machine, if the person may see its client (otherwise as if there were none)."""
    record = await request.app[STORE].get_machine(machine_id)
    if record is None or not person.sees_client(record.client_id):
        raise PageError(404, "No such machine", "No machine has that id.")
    return record


@routes.get("/machines/{machine_id}")
async def machine(request: web.Request) -> web.Response:
    person = await require(request, "machines.read")
    app = request.app
    store = app[STORE]
    record = await machine_or_404(request, request.match_info["machine_id"], person)
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    since = windows.now - timedelta(days=views.TIMELINE_DAYS) - EXPIRY

    async def audit_trail() -> list[AuditRow]:
        """The machine's audit entries, for those who may read the audit log (as in the API)."""
        if not person.can("audit.read"):
            return []
        entries = await store.list_audit(AuditFilter(target=record.machine_id, limit=50))
        machines, agents = await store.machine_names(named_ids(entries))
        clients = {c.client_id: c.name for c in await store.list_clients()}
        return audit_rows(entries, machines, agents, clients)

    client, commands, history, audit, held = await asyncio.gather(
        store.find_client(record.client_id),
        store.list_commands(CommandFilter(machine_id=record.machine_id, limit=200)),
        store.presence_history(record.machine_id, since=since),
        audit_trail(),
        store.held_enrollments(record.machine_id),
    )
    commands.sort(key=lambda c: c.created_at, reverse=True)
    record = with_buffered(record, request.app[BUFFER])
    return render(
        request,
        "machine.html",
        {
            "machine": record,
            "flags": machine_flags(record),
            "state": machine_state(record, windows),
            "client": client,
            "components": views.components_of(record.components_json),
            "commands": commands,
            "pending": next((c for c in commands if c.state == "offboard_pending"), None),
            "timeline": views.timeline(history, windows.now),
            "audit": audit,
            "held": held,
            "expires_at": record.last_seen + EXPIRY,
        },
        person=person,
    )


@routes.post("/machines/{machine_id}/approve-reenroll")
async def approve_reenroll(request: web.Request) -> web.Response:
    """A technician lets this machine's hardware enroll again without its credential (24 h)."""
    person, _ = await require_form(request, "machines.approve")
    record = await machine_or_404(request, request.match_info["machine_id"], person)
    await request.app[STORE].approve_reenroll(
        record.machine_id, now=request.app[CLOCK].now(), actor=person.name
    )
    raise Redirect(f"/machines/{record.machine_id}")


@routes.post("/machines/{machine_id}/kind")
async def set_kind(request: web.Request) -> web.Response:
    """An admin confirms the kind the agent reports: billed so from now on."""
    person, form = await require_form(request, "machines.reprice")
    kind = form.get("kind")
    if kind not in get_args(Kind):
        raise PageError(400, "Bad request", "The kind must be a PC or a server.")
    record = await machine_or_404(request, request.match_info["machine_id"], person)
    await request.app[STORE].set_kind(
        record.machine_id, str(kind), now=request.app[CLOCK].now(), actor=person.name
    )
    raise Redirect(f"/machines/{record.machine_id}")
