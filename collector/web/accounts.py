"""The admin page for people: who may sign in, with which role and clients; add a person
(credentials shown once), disable one, reset a lost second factor. Every change asks for a fresh
code (see `people.require_form`) and is audited under the admin's name."""

from __future__ import annotations

from aiohttp import web

from collector import accounts
from collector.appkeys import CLOCK, STORE
from collector.store.base import ROLES, Conflict, NotFound, Role
from collector.web import views
from collector.web.people import Person, require, require_form
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect
from collector.web.signin import qr_svg
from collector.web.state import WEB

routes = page_routes()


async def _people_page(
    request: web.Request,
    person: Person,
    *,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    store = request.app[STORE]
    users = await store.list_users()
    clients = {c.client_id: c.name for c in await store.list_clients()}
    done = request.query.get("done", "")
    return render(
        request,
        "people.html",
        {
            "users": users,
            "clients": clients,
            "roles": ROLES,
            "error": error,
            "values": values or {},
            "done": done if done in ("disabled",) else None,
            "done_name": request.query.get("name", ""),
        },
        person=person,
        status=status,
    )


@routes.get("/people")
async def people(request: web.Request) -> web.Response:
    person = await require(request, "users.manage")
    return await _people_page(request, person)


def _credentials_page(
    request: web.Request, person: Person, made: accounts.NewCredentials, *, title: str
) -> web.Response:
    return render(
        request,
        "credentials_once.html",
        {"made": made, "title": title, "qr": qr_svg(made.totp_uri)},
        person=person,
        status=201,
    )


@routes.post("/people")
async def add_person(request: web.Request) -> web.Response:
    admin, form = await require_form(request, "users.manage", fresh=True)
    name = form.get("name", "").strip()
    role = form.get("role", "")
    client_ids = [c for c in form.getall("client", []) if c]
    values = {"name": name, "role": role}
    problem = accounts.name_problem(name)
    if problem is None and role not in ROLES:
        problem = "Choose one of the roles."
    if problem is not None:
        return await _people_page(
            request, admin, error=problem[0].upper() + problem[1:] + ".", values=values, status=400
        )
    try:
        made = await accounts.create_user(
            request.app[STORE],
            name,
            _role(role),
            clients=client_ids,
            box=request.app[WEB].secret_box(),
            now=request.app[CLOCK].now(),
            actor=admin.name,
        )
    except (Conflict, NotFound) as exc:
        status = 409 if isinstance(exc, Conflict) else 400
        return await _people_page(request, admin, error=str(exc), values=values, status=status)
    return _credentials_page(request, admin, made, title=f"{name} can sign in")


def _role(text: str) -> Role:
    for role in ROLES:
        if role == text:
            return role
    raise PageError(400, "Bad role", "Choose one of the roles.")


@routes.post("/people/{name}/disable")
async def disable_person(request: web.Request) -> web.Response:
    admin, _form = await require_form(request, "users.manage", fresh=True)
    name = request.match_info["name"]
    if name == admin.name:
        raise PageError(409, "Not yourself", "Another admin has to disable your account.")
    try:
        await request.app[STORE].disable_user(name, now=request.app[CLOCK].now(), actor=admin.name)
    except NotFound as exc:
        raise PageError(404, "No such person", str(exc)) from exc
    raise Redirect(views.url("/people", {"done": "disabled", "name": name}))


@routes.post("/people/{name}/reset-mfa")
async def reset_person_mfa(request: web.Request) -> web.Response:
    admin, _form = await require_form(request, "users.manage", fresh=True)
    name = request.match_info["name"]
    try:
        made = await accounts.reset_mfa(
            request.app[STORE],
            name,
            box=request.app[WEB].secret_box(),
            now=request.app[CLOCK].now(),
            actor=admin.name,
        )
    except NotFound as exc:
        raise PageError(404, "No such person", str(exc)) from exc
    return _credentials_page(request, admin, made, title=f"New second factor for {name}")
