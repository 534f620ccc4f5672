"""Single sign-on with OpenID Connect: `/signin/oidc` sends the browser to the identity provider
(authorization code flow with PKCE, a state and a nonce sealed in a short-lived cookie), and
`/signin/oidc/callback` takes the code back, exchanges it, validates the ID token and starts a
session for the person with the role their group maps to. Every sign-in and refusal is audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from aiohttp import web

from collector.appkeys import AUTH_LIMITER, CLOCK, SETTINGS, STORE
from collector.oidc import OidcClient, OidcConfig, OidcError, PendingSignIn
from collector.store.base import AuditEntry
from collector.web.people import SIGN_IN_FAILED, SIGNED_IN, safe_next
from collector.web.render import page_routes, render
from collector.web.security import PageError, is_secure
from collector.web.sessions import SESSION_COOKIE, SESSION_LIFETIME, new_session, session_target
from collector.web.state import WEB

routes = page_routes()

OIDC_COOKIE = "rmm_oidc"
OIDC_LIFETIME = timedelta(minutes=10)
_PURPOSE = "rmm web oidc sign-in"


async def oidc_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """The provider's client and its HTTP session, for as long as the app runs."""
    config = OidcConfig.from_settings(app[SETTINGS])
    if config is None:
        yield
        return
    async with aiohttp.ClientSession() as session:
        app[WEB].oidc = OidcClient(config, session)
        yield
        app[WEB].oidc = None


def _client(request: web.Request) -> OidcClient:
    client = request.app[WEB].oidc
    if client is None:
        raise PageError(404, "No single sign-on", "Single sign-on is not set up here.")
    return client


@routes.get("/signin/oidc")
async def start(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    pending = PendingSignIn.new(safe_next(request.query.get("next")))
    try:
        location = await client.authorization_url(pending, force_login="again" in request.query)
    except OidcError as exc:
        raise PageError(503, "Identity provider unavailable", str(exc)) from exc
    sealed = (
        request.app[WEB]
        .sealer()
        .seal_value(
            _PURPOSE,
            {
                "st": pending.state,
                "no": pending.nonce,
                "cv": pending.verifier,
                "nx": pending.next_url,
            },
            request.app[CLOCK].now() + OIDC_LIFETIME,
        )
    )
    response = web.Response(status=303, headers={"Location": location})
    response.set_cookie(
        OIDC_COOKIE,
        sealed,
        path="/signin/oidc",
        max_age=int(OIDC_LIFETIME.total_seconds()),
        httponly=True,
        # Lax: the provider's redirect back is a top-level navigation from another site.
        samesite="Lax",
        secure=is_secure(request),
    )
    return response


async def _refused(request: web.Request, reason: str, message: str) -> web.Response:
    app = request.app
    now = app[CLOCK].now()
    address = app[AUTH_LIMITER].address(request)
    app[WEB].throttle.fail("(oidc)", address, now)
    await app[STORE].add_audit(
        AuditEntry(now, "(oidc)", SIGN_IN_FAILED, "oidc", {"reason": reason, "address": address})
    )
    response = render(
        request,
        "error.html",
        {"status": 401, "title": "Single sign-on refused", "message": message},
        person=None,
        status=401,
    )
    response.del_cookie(OIDC_COOKIE, path="/signin/oidc")
    return response


@routes.get("/signin/oidc/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    app = request.app
    now = app[CLOCK].now()
    data = app[WEB].sealer().open_value(_PURPOSE, request.cookies.get(OIDC_COOKIE, ""), now)
    if data is None:
        return await _refused(
            request, "no_pending_sign_in", "That sign-in took too long or did not start here."
        )
    pending = PendingSignIn(str(data["st"]), str(data["no"]), str(data["cv"]), str(data["nx"]))
    if request.query.get("state") != pending.state:
        return await _refused(request, "wrong_state", "That answer was not for this sign-in.")
    if "error" in request.query:
        return await _refused(
            request,
            "provider_error",
            f"The identity provider said: {request.query.get('error', '')[:200]}",
        )
    code = request.query.get("code", "")
    if not code:
        return await _refused(request, "no_code", "The identity provider sent no code.")
    if app[WEB].throttle.blocked("(oidc)", app[AUTH_LIMITER].address(request), now):
        return await _refused(request, "throttled_address", "Too many failed sign-ins.")
    try:
        identity = await client.validate(await client.exchange(code, pending), pending, now)
    except OidcError as exc:
        return await _refused(request, exc.reason, f"Single sign-on refused: {exc}")
    claims = new_session(
        "oidc",
        identity.subject,
        0,
        now,
        name=identity.name,
        role=identity.role,
        authenticated_at=min(identity.authenticated_at or now, now),
    )
    await app[STORE].add_audit(
        AuditEntry(
            now,
            identity.name,
            SIGNED_IN,
            session_target(claims.session_id),
            {
                "role": identity.role,
                "method": "oidc",
                "subject": identity.subject,
                "groups": json.dumps(list(identity.groups)),
                "address": app[AUTH_LIMITER].address(request),
            },
        )
    )
    response = web.Response(status=303, headers={"Location": pending.next_url})
    response.set_cookie(
        SESSION_COOKIE,
        app[WEB].sealer().seal(claims),
        path="/",
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=is_secure(request),
    )
    response.del_cookie(OIDC_COOKIE, path="/signin/oidc")
    return response
