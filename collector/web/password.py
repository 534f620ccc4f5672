"""A person choosing their own password (forced at first sign-in, or whenever they like)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from collector import passwords
from collector.appkeys import CLOCK, STORE
from collector.web.people import PASSWORD_PAGE, require_session_form, signed_in
from collector.web.render import page_routes, render
from collector.web.security import PageError, Redirect
from collector.web.sessions import SessionClaims
from collector.web.signin import set_session_cookie

routes = page_routes()


def _password_page(
    request: web.Request, person: Any, *, error: str | None = None, status: int = 200
) -> web.Response:
    return render(
        request,
        "password.html",
        {
            "error": error,
            "forced": person.must_change_password,
            "min_length": passwords.MIN_PASSWORD,
        },
        person=person,
        status=status,
    )


@routes.get(PASSWORD_PAGE)
async def password_form(request: web.Request) -> web.Response:
    person = await signed_in(request)
    if person is None:
        raise Redirect("/signin?next=" + PASSWORD_PAGE)
    if person.kind != "user":
        raise PageError(403, "Not a person", "A token session has no password to change.")
    return _password_page(request, person)


@routes.post(PASSWORD_PAGE)
async def change_password(request: web.Request) -> web.StreamResponse:
    person, form = await require_session_form(request)
    if person.kind != "user" or person.user_id is None:
        raise PageError(403, "Not a person", "A token session has no password to change.")
    app = request.app
    current = form.get("current", "")
    new = form.get("new", "")
    found = await app[STORE].user_secrets(person.name)
    if found is None or not await passwords.verify_password_async(found.password_hash, current):
        return _password_page(
            request, person, error="Your current password is not right.", status=400
        )
    problem = passwords.password_problem(new)
    if problem is None and new != form.get("repeat", ""):
        problem = "The two new passwords differ."
    if problem is None and new == current:
        problem = "Choose a password other than the one you were given."
    if problem is not None:
        return _password_page(request, person, error=problem, status=400)
    now = app[CLOCK].now()
    user = await app[STORE].set_password(
        person.user_id, await passwords.hash_password_async(new), now=now, actor=person.name
    )
    # Other sessions of the person have ended (a new epoch); this one goes on under it.
    claims = SessionClaims(
        session_id=person.session_id,
        kind="user",
        subject=user.user_id,
        epoch=user.session_epoch,
        authenticated_at=person.authenticated_at,
        expires_at=person.expires_at,
    )
    response = web.Response(status=303, headers={"Location": "/?password_changed=1"})
    set_session_cookie(request, response, claims)
    return response
