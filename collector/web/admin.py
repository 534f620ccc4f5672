"""Admin pages: clients and their enrollment tokens (shown once), and the audit log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from collector.appkeys import CLOCK, SETTINGS, STORE
from collector.background import state_windows
from collector.store.base import AuditFilter, Client, Conflict, NotFound
from collector.tokens import hash_token, new_token
from collector.web import views
from collector.web.audit_rows import audit_rows, named_ids
from collector.web.people import Person, require, require_form
from collector.web.policy import PENDING_FOR, STALE_AFTER
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect
from wire.times import InstantError, parse_instant

routes = page_routes()

AUDIT_PAGE = 100
MAX_CLIENT_NAME = 200


async def _clients_page(
    request: web.Request,
    person: Person,
    *,
    error: str | None = None,
    name: str = "",
    status: int = 200,
) -> web.Response:
    app = request.app
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    clients = await app[STORE].client_overview(
        windows,
        stale_before=windows.now - STALE_AFTER,
        pending_before=windows.now - PENDING_FOR,
    )
    return render(
        request,
        "clients.html",
        {"clients": clients, "error": error, "name": name, "max_name": MAX_CLIENT_NAME},
        person=person,
        status=status,
    )


@routes.get("/clients")
async def clients(request: web.Request) -> web.Response:
    person = await require(request, "clients.manage")
    return await _clients_page(request, person)


async def _issue_token(request: web.Request, person: Person, client: Client) -> web.Response:
    """A new enrollment token, shown on this response only: it is stored as a digest."""
    app = request.app
    token = new_token("enrollment")
    now = app[CLOCK].now()
    info = await app[STORE].add_enrollment_token(
        client.client_id,
        hash_token(token),
        expires_at=now + timedelta(days=app[SETTINGS].enrollment_token_ttl_days),
        now=now,
        actor=person.name,
    )
    return render(
        request,
        "token_once.html",
        {"client": client, "token": token, "info": info},
        person=person,
        status=201,
    )


@routes.post("/clients")
async def add_client(request: web.Request) -> web.Response:
    person, form = await require_form(request, "clients.manage", fresh=True)
    name = form.get("name", "").strip()
    if not name or len(name) > MAX_CLIENT_NAME:
        return await _clients_page(
            request,
            person,
            error=f"Give the client a name of 1 to {MAX_CLIENT_NAME} characters.",
            name=name,
            status=400,
        )
    try:
        client = await request.app[STORE].create_client(
            name, now=request.app[CLOCK].now(), actor=person.name
        )
    except Conflict as exc:
        return await _clients_page(request, person, error=str(exc), name=name, status=409)
    return await _issue_token(request, person, client)


async def _client_or_404(request: web.Request) -> Client:
    client = await request.app[STORE].find_client(request.match_info["client_id"])
    if client is None or client.client_id != request.match_info["client_id"]:
        raise PageError(404, "No such client", "No client has that id.")
    return client


@routes.get("/clients/{client_id}")
async def client_page(request: web.Request) -> web.Response:
    person = await require(request, "clients.manage")
    client = await _client_or_404(request)
    tokens = await request.app[STORE].list_enrollment_tokens(client.client_id)
    now = request.app[CLOCK].now()

    def token_state(revoked_at: datetime | None, expires_at: datetime) -> str:
        if revoked_at is not None:
            return "revoked"
        return "expired" if expires_at <= now else "active"

    rows = [(t, token_state(t.revoked_at, t.expires_at)) for t in reversed(tokens)]
    revoked = request.query.get("revoked", "")
    return render(
        request,
        "client.html",
        {
            "client": client,
            "tokens": rows,
            "active": sum(state == "active" for _, state in rows),
            "revoked": int(revoked) if revoked.isdigit() else None,
        },
        person=person,
    )


@routes.post("/clients/{client_id}/enrollment-tokens")
async def new_enrollment_token(request: web.Request) -> web.Response:
    person, _form = await require_form(request, "clients.manage", fresh=True)
    client = await _client_or_404(request)
    return await _issue_token(request, person, client)


@routes.post("/clients/{client_id}/enrollment-tokens/revoke")
async def revoke_enrollment_tokens(request: web.Request) -> web.Response:
    person, form = await require_form(request, "clients.manage", fresh=True)
    client = await _client_or_404(request)
    token_id = form.get("token_id", "").strip() or None
    try:
        count = await request.app[STORE].revoke_enrollment_tokens(
            client.client_id, token_id=token_id, now=request.app[CLOCK].now(), actor=person.name
        )
    except NotFound as exc:
        raise PageError(404, "No such client", str(exc)) from exc
    raise Redirect(views.url(f"/clients/{client.client_id}", {"revoked": str(count)}))


# the audit log


def _since(raw: str) -> datetime | None:
    """A date (`2026-03-01`, midnight UTC) or an instant with an offset."""
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        return parse_instant(raw)
    except (ValueError, InstantError) as exc:
        raise PageError(
            400, "Bad filter", "since must be a date (2026-03-01) or an ISO-8601 instant."
        ) from exc


@routes.get("/audit")
async def audit(request: web.Request) -> web.Response:
    person = await require(request, "audit.read")
    query = request.query
    params: dict[str, Any] = {
        name: query.get(name, "").strip() for name in ("actor", "action", "target", "since")
    }
    before_raw = query.get("before", "").strip()
    if before_raw and not before_raw.isdigit():
        raise PageError(400, "Bad filter", "before must be an entry number.")
    audit_filter = AuditFilter(
        actor=params["actor"] or None,
        action=params["action"] or None,
        target=params["target"] or None,
        since=_since(params["since"]),
        before_id=int(before_raw) if before_raw else None,
        limit=AUDIT_PAGE,
    )
    store = request.app[STORE]
    entries = await store.list_audit(audit_filter)
    (machines, agents), clients = await asyncio.gather(
        store.machine_names(named_ids(entries)), store.list_clients()
    )
    older = (
        views.url("/audit", {**params, "before": entries[-1][0]})
        if len(entries) == AUDIT_PAGE
        else None
    )
    return render(
        request,
        "audit.html",
        {
            "entries": audit_rows(
                entries, machines, agents, {c.client_id: c.name for c in clients}
            ),
            "params": params,
            "older_url": older,
            "newest_url": views.url("/audit", params) if before_raw else None,
            "actions": views.KNOWN_ACTIONS,
            "machine_actions": views.MACHINE_ACTIONS,
        },
        person=person,
    )
