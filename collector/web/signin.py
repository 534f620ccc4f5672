"""Signing in to the pages and out again."""

from __future__ import annotations

import secrets
from datetime import timedelta

from aiohttp import web

from collector.appkeys import AGENT_TOKENS, AUTH_LIMITER, CLOCK, STORE
from collector.errors import ApiError
from collector.store.base import (
    AuditEntry,
)
from collector.tokens import hash_token
from collector.web.people import (
    SIGNED_IN,
    SIGNED_OUT,
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

routes = page_routes()


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
