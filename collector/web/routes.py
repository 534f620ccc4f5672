"""The NOC's and technicians' pages: sign-in, fleet overview, machines, offboarding, following it.

Every page reads and writes through the same store, permissions and audit as the API; a page never
has a path to the data the API does not have.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from typing import Any, cast, get_args

from aiohttp import web

from collector.appkeys import AGENT_TOKENS, AUTH_LIMITER, CLOCK, OPEN_COMMANDS, SETTINGS, STORE
from collector.background import state_windows
from collector.bodies import json_response
from collector.errors import ApiError
from collector.handlers_commands import command_view
from collector.store.base import (
    COMPONENT_STATUS_FILTERS,
    MACHINE_STATES,
    AuditEntry,
    AuditFilter,
    Client,
    ClientOverview,
    CommandFilter,
    CommandRecord,
    ComponentStatusFilter,
    Conflict,
    MachineQuery,
    MachineRecord,
    MachineState,
    NotFound,
    OffboardRequestRecord,
    machine_state,
)
from collector.tokens import hash_token
from collector.web import views
from collector.web.people import (
    SIGNED_IN,
    SIGNED_OUT,
    Person,
    require,
    require_form,
    safe_next,
    signed_in,
)
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect, is_secure
from collector.web.sessions import (
    SESSION_COOKIE,
    SESSION_LIFETIME,
    SIGNIN_COOKIE,
    SIGNIN_LIFETIME,
    new_session,
    session_target,
)
from collector.web.state import WEB
from wire.messages import Kind
from wire.times import EXPIRY

routes = page_routes()

PAGE_SIZE = 50
ATTENTION_LIMIT = 10
# "Offboards pending for days": a request the machine has not picked up within a day.
PENDING_FOR = timedelta(days=1)
# Offline this long but not expired: billed while dark; the client may want it offboarded.
STALE_AFTER = timedelta(days=7)
MAX_REASON = 1000
MAX_TICKET = 200
FINAL_STATES = ("offboarded", "offboard_failed")


# signing in and out


def _set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    path: str,
    max_age: timedelta,
) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        max_age=int(max_age.total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=is_secure(request),
    )


def _signin_page(
    request: web.Request, *, next_url: str, error: str | None = None, status: int = 200
) -> web.Response:
    nonce = secrets.token_urlsafe(18)
    notice = "You are signed out." if request.query.get("signed_out") else None
    response = render(
        request,
        "signin.html",
        {
            "csrf": request.app[WEB].sealer().csrf_token("signin", nonce),
            "next_url": next_url,
            "error": error,
            "notice": notice,
        },
        person=None,
        status=status,
    )
    _set_cookie(request, response, SIGNIN_COOKIE, nonce, path="/signin", max_age=SIGNIN_LIFETIME)
    return response


@routes.get("/signin")
async def signin_form(request: web.Request) -> web.Response:
    next_url = safe_next(request.query.get("next"))
    if await signed_in(request) is not None:
        raise Redirect(next_url)
    return _signin_page(request, next_url=next_url)


@routes.post("/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    app = request.app
    form = await request.post()
    next_url = safe_next(str(form.get("next", "")))
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    given = form.get("csrf")
    if (
        not nonce
        or not isinstance(given, str)
        or not app[WEB].sealer().check_csrf("signin", nonce, given)
    ):
        return _signin_page(
            request,
            next_url=next_url,
            error="The sign-in form had expired or came from elsewhere. Please try again.",
            status=403,
        )
    raw = form.get("token")
    token = raw.strip() if isinstance(raw, str) else ""
    if not token:
        return _signin_page(
            request, next_url=next_url, error="Paste your API token to sign in.", status=400
        )
    token_hash = hash_token(token)
    info = await app[STORE].find_api_token(token_hash)
    if info is None:
        if await app[AGENT_TOKENS].lookup(token) is not None:
            return _signin_page(
                request,
                next_url=next_url,
                error="That is an agent token: it opens only the agent endpoints.",
                status=403,
            )
        error = app[AUTH_LIMITER].fail(
            request,
            ApiError(401, "invalid_token", "That API token is unknown or revoked."),
        )
        return _signin_page(request, next_url=next_url, error=error.detail, status=error.status)
    now = app[CLOCK].now()
    claims = new_session(token_hash, now)
    await app[STORE].add_audit(
        AuditEntry(
            now,
            info.name,
            SIGNED_IN,
            session_target(claims.session_id),
            {"role": info.role, "address": app[AUTH_LIMITER].address(request)},
        )
    )
    response = web.Response(status=303, headers={"Location": next_url})
    _set_cookie(
        request,
        response,
        SESSION_COOKIE,
        app[WEB].sealer().seal(claims),
        path="/",
        max_age=SESSION_LIFETIME,
    )
    response.del_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@routes.post("/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    person = await signed_in(request)
    if person is not None:
        form = await request.post()
        given = form.get("csrf")
        if not isinstance(given, str) or not request.app[WEB].sealer().check_csrf(
            "session", person.session_id, given
        ):
            raise PageError(403, "Form refused", "Sign out from the button on a page of ours.")
        await request.app[STORE].add_audit(
            AuditEntry(
                request.app[CLOCK].now(),
                person.name,
                SIGNED_OUT,
                session_target(person.session_id),
                {},
            )
        )
    response = web.Response(status=303, headers={"Location": "/signin?signed_out=1"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# the fleet overview


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
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    query = MachineQuery(
        client_id=params["client"] or None,
        state=cast(MachineState | None, state),
        kind=kind,
        hostname_contains=params["q"] or None,
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
    return render(
        request,
        "machines.html",
        {
            "machines": [(m, machine_state(m, windows)) for m in found.machines],
            "summaries": {
                m.machine_id: views.component_summary(m.components_json) for m in found.machines
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


async def _machine_or_404(request: web.Request, machine_id: str) -> MachineRecord:
    record = await request.app[STORE].get_machine(machine_id)
    if record is None:
        raise PageError(404, "No such machine", "No machine has that id.")
    return record


@routes.get("/machines/{machine_id}")
async def machine(request: web.Request) -> web.Response:
    person = await require(request, "machines.read")
    app = request.app
    store = app[STORE]
    record = await _machine_or_404(request, request.match_info["machine_id"])
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    since = windows.now - timedelta(days=views.TIMELINE_DAYS) - EXPIRY

    async def audit_trail() -> list[tuple[int, AuditEntry]]:
        """The machine's audit entries, for those who may read the audit log (as in the API)."""
        if not person.can("audit.read"):
            return []
        return await store.list_audit(AuditFilter(target=record.machine_id, limit=50))

    client, commands, history, audit = await asyncio.gather(
        store.find_client(record.client_id),
        store.list_commands(CommandFilter(machine_id=record.machine_id, limit=200)),
        store.presence_history(record.machine_id, since=since),
        audit_trail(),
    )
    commands.sort(key=lambda c: c.created_at, reverse=True)
    return render(
        request,
        "machine.html",
        {
            "machine": record,
            "state": machine_state(record, windows),
            "client": client,
            "components": views.components_of(record.components_json),
            "commands": commands,
            "pending": next((c for c in commands if c.state == "offboard_pending"), None),
            "timeline": views.timeline(history, windows.now),
            "audit": audit,
            "expires_at": record.last_seen + EXPIRY,
        },
        person=person,
    )


# offboarding


def _offboard_form(
    request: web.Request,
    person: Person,
    record: MachineRecord,
    client: Client | None,
    *,
    pending: CommandRecord | None,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "offboard.html",
        {
            "machine": record,
            "client": client,
            "pending": pending,
            "values": values,
            "errors": errors,
            "max_reason": MAX_REASON,
            "max_ticket": MAX_TICKET,
        },
        person=person,
        status=status,
    )


async def _pending_command(request: web.Request, machine_id: str) -> CommandRecord | None:
    pending = await request.app[STORE].list_commands(
        CommandFilter(state="offboard_pending", machine_id=machine_id, limit=1)
    )
    return pending[0] if pending else None


@routes.get("/machines/{machine_id}/offboard")
async def offboard_form(request: web.Request) -> web.Response:
    person = await require(request, "offboard.request")
    record = await _machine_or_404(request, request.match_info["machine_id"])
    if record.offboard_state == "offboarded":
        raise PageError(409, "Already offboarded", f"{record.hostname} is already offboarded.")
    client, pending = await asyncio.gather(
        request.app[STORE].find_client(record.client_id),
        _pending_command(request, record.machine_id),
    )
    return _offboard_form(request, person, record, client, pending=pending, values={}, errors={})


@routes.post("/machines/{machine_id}/offboard")
async def offboard(request: web.Request) -> web.Response:
    person, form = await require_form(request, "offboard.request")
    app = request.app
    record = await _machine_or_404(request, request.match_info["machine_id"])
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
        client, pending = await asyncio.gather(
            app[STORE].find_client(record.client_id),
            _pending_command(request, record.machine_id),
        )
        return _offboard_form(
            request,
            person,
            record,
            client,
            pending=pending,
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


@routes.get("/commands/{command_id}")
async def command(request: web.Request) -> web.Response:
    person = await require(request, "commands.read")
    app = request.app
    found = await app[STORE].get_command(request.match_info["command_id"])
    if found is None:
        raise PageError(404, "No such command", "No command has that id.")
    record, client = await asyncio.gather(
        app[STORE].get_machine(found.machine_id), app[STORE].find_client(found.client_id)
    )
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    return render(
        request,
        "command.html",
        {
            "command": found,
            "view": command_view(found),
            "machine": record,
            "machine_state": None if record is None else machine_state(record, windows),
            "client": client,
            "final": found.state in FINAL_STATES,
            "steps": json.loads(found.steps_json or "[]"),
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
    if found is None:
        return json_response(
            {"error": "command_not_found", "detail": "no command has that id"}, status=404
        )
    record = await app[STORE].get_machine(found.machine_id)
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    view = command_view(found)
    state = None if record is None else machine_state(record, windows)
    return json_response(
        {
            **view,
            "state_label": views.STATE_LABELS[found.state],
            "final": found.state in FINAL_STATES,
            "machine_state": state,
            "machine_state_label": None if state is None else views.STATE_LABELS[state],
            "created_at_text": views.instant(found.created_at),
            "delivered_at_text": views.instant(found.delivered_at),
            "completed_at_text": views.instant(found.completed_at),
        }
    )
