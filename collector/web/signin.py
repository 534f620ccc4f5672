"""Signing in to the pages and out again.

A person signs in with their user name, password and a 6-digit code (or a recovery code). The
first time, or after their second factor was reset, the password alone leads to a page showing
the authenticator QR code; the first code entered there sets the factor up, and ten recovery
codes are shown once. A person given a generated password chooses their own before any other
page opens. Failures are throttled per user name and per address, and every sign-in and failure
is audited under the name given.

Signing in with an API token is for break-glass use only: off unless `web_token_signin` is set.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import segno
from aiohttp import web
from markupsafe import Markup

from collector import accounts, passwords, totp
from collector.appkeys import AGENT_TOKENS, AUTH_LIMITER, CLOCK, SETTINGS, STORE
from collector.errors import ApiError
from collector.store.base import AuditEntry, AuditFilter, UserSecrets
from collector.tokens import hash_token
from collector.web.people import (
    PASSWORD_PAGE,
    SIGN_IN_FAILED,
    SIGNED_IN,
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
    SessionClaims,
    new_session,
    session_target,
)
from collector.web.state import WEB
from collector.web.throttle import USER_FAILURES
from collector.web.throttle import WINDOW as THROTTLE_WINDOW

routes = page_routes()

MAX_FIELD = 256
SIGN_IN_THROTTLED = "web.sign_in_throttled"


def user_target(username: str) -> str:
    """How the audit log names the account a sign-in attempt was for."""
    return f"user:{username}"


async def throttled(request: web.Request, username: str, now: datetime) -> str | None:
    """Which limit a sign-in attempt is over, if any: this instance's counts per address and
    name, then the failures for the name that every instance audited within the window (so
    neither a restart nor another instance behind the load balancer starts a fresh count)."""
    app = request.app
    over = app[WEB].throttle.blocked(username, app[AUTH_LIMITER].address(request), now)
    if over is not None:
        return over
    recent = await app[STORE].list_audit(
        AuditFilter(
            target=user_target(username),
            action=SIGN_IN_FAILED,
            since=now - THROTTLE_WINDOW,
            limit=USER_FAILURES,
        )
    )
    return "user" if len(recent) >= USER_FAILURES else None


TOKEN_SIGNED_IN_BREAK_GLASS = "web.signed_in_with_token"


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


def _signin_context(request: web.Request) -> tuple[str, dict[str, Any]]:
    nonce = secrets.token_urlsafe(18)
    return nonce, {
        "csrf": request.app[WEB].sealer().csrf_token("signin", nonce),
        "token_signin": request.app[SETTINGS].web_token_signin,
        "oidc": bool(request.app[SETTINGS].oidc_issuer),
    }


def _signin_page(
    request: web.Request,
    *,
    next_url: str,
    error: str | None = None,
    status: int = 200,
    username: str = "",
    template: str = "signin.html",
    extra: dict[str, Any] | None = None,
) -> web.Response:
    nonce, context = _signin_context(request)
    notice = "You are signed out." if request.query.get("signed_out") else None
    response = render(
        request,
        template,
        {
            **context,
            "next_url": next_url,
            "error": error,
            "notice": notice,
            "username": username,
            **(extra or {}),
        },
        person=None,
        status=status,
    )
    _set_cookie(request, response, SIGNIN_COOKIE, nonce, path="/signin", max_age=SIGNIN_LIFETIME)
    return response


def _field(form: Any, name: str) -> str:
    raw = form.get(name)
    return raw.strip() if isinstance(raw, str) else ""


@routes.get("/signin")
async def signin_form(request: web.Request) -> web.Response:
    next_url = safe_next(request.query.get("next"))
    if await signed_in(request) is not None:
        raise Redirect(next_url)
    return _signin_page(request, next_url=next_url)


def _csrf_ok(request: web.Request, form: Any) -> bool:
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    given = form.get("csrf")
    return (
        bool(nonce)
        and isinstance(given, str)
        and request.app[WEB].sealer().check_csrf("signin", nonce, given)
    )


def _start_session(request: web.Request, claims: SessionClaims, location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    set_session_cookie(request, response, claims)
    return response


def set_session_cookie(
    request: web.Request, response: web.StreamResponse, claims: SessionClaims
) -> None:
    _set_cookie(
        request,
        response,
        SESSION_COOKIE,
        request.app[WEB].sealer().seal(claims),
        path="/",
        max_age=SESSION_LIFETIME,
    )
    response.del_cookie(SIGNIN_COOKIE, path="/signin")


async def _refuse(
    request: web.Request,
    username: str,
    reason: str,
    message: str,
    *,
    next_url: str,
    status: int = 401,
    count: bool = True,
) -> web.Response:
    """Audit a failed sign-in under the name given, count it, and show the form again (an
    attempt refused as throttled is audited apart, and does not count again)."""
    app = request.app
    now = app[CLOCK].now()
    address = app[AUTH_LIMITER].address(request)
    if count:
        app[WEB].throttle.fail(username, address, now)
    await app[STORE].add_audit(
        AuditEntry(
            now,
            username or "(none)",
            SIGN_IN_FAILED if count else SIGN_IN_THROTTLED,
            user_target(username),
            {"reason": reason, "address": address},
        )
    )
    return _signin_page(request, next_url=next_url, error=message, status=status, username=username)


@routes.post("/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    app = request.app
    form = await request.post()
    next_url = safe_next(str(form.get("next", "")))
    if not _csrf_ok(request, form):
        return _signin_page(
            request,
            next_url=next_url,
            error="The sign-in form had expired or came from elsewhere. Please try again.",
            status=403,
        )
    if "token" in form:
        return await _token_signin(request, _field(form, "token"), next_url)
    username = _field(form, "username")
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    code = _field(form, "code")
    if not username or not password:
        return _signin_page(
            request,
            next_url=next_url,
            error="Enter your user name and password.",
            status=400,
            username=username[:MAX_FIELD],
        )
    if len(username) > MAX_FIELD or len(password) > MAX_FIELD or "\x00" in username + password:
        return _signin_page(
            request, next_url=next_url, error="That is not a user name and password.", status=400
        )
    now = app[CLOCK].now()
    over = await throttled(request, username, now)
    if over is not None:
        return await _refuse(
            request,
            username,
            f"throttled_{over}",
            "Too many failed sign-ins; try again in 15 minutes.",
            next_url=next_url,
            status=429,
            count=False,
        )
    found = await app[STORE].user_secrets(username)
    password_ok = await passwords.verify_password_async(
        None if found is None else found.password_hash, password
    )
    if found is None or not password_ok or found.user.disabled_at is not None:
        reason = (
            "unknown_user" if found is None else "wrong_password" if not password_ok else "disabled"
        )
        return await _refuse(
            request,
            username,
            reason,
            "The user name or password is wrong, or the account is disabled.",
            next_url=next_url,
        )
    if not found.user.mfa_enrolled:
        return _mfa_setup_page(request, found, next_url=next_url)
    if not code:
        return _signin_page(
            request,
            next_url=next_url,
            error="Enter the 6-digit code from your authenticator app.",
            status=400,
            username=username,
        )
    method = await accounts.check_code(app[STORE], found, code, now, box=app[WEB].secret_box())
    if method is None:
        return await _refuse(
            request,
            username,
            "wrong_code",
            "The code is wrong or was used already. Wait for the next one.",
            next_url=next_url,
        )
    return await _signed_in(request, found, method, next_url=next_url)


async def _signed_in(
    request: web.Request,
    found: UserSecrets,
    method: str,
    *,
    next_url: str,
    response: web.Response | None = None,
) -> web.Response:
    app = request.app
    now = app[CLOCK].now()
    user = found.user
    app[WEB].throttle.succeeded(user.name)
    claims = new_session("user", user.user_id, user.session_epoch, now)
    detail: dict[str, Any] = {
        "role": user.role,
        "address": app[AUTH_LIMITER].address(request),
        "method": f"password+{method}",
    }
    if method == "recovery":
        detail["recovery_codes_left"] = await app[STORE].recovery_codes_left(user.user_id)
    await app[STORE].add_audit(
        AuditEntry(now, user.name, SIGNED_IN, session_target(claims.session_id), detail)
    )
    location = PASSWORD_PAGE if user.must_change_password else next_url
    if response is None:
        return _start_session(request, claims, location)
    set_session_cookie(request, response, claims)
    return response


def _readable_secret(request: web.Request, found: UserSecrets) -> str:
    secret = accounts.totp_secret(found, request.app[WEB].secret_box())
    if secret is None:
        raise PageError(
            500,
            "Second factor unreadable",
            "This person's authenticator secret was sealed with another keys folder. Give every "
            "instance and the command line the same keys folder, or reset their second factor.",
        )
    return secret


def qr_svg(uri: str) -> Markup:
    """The URI as an inline SVG QR code (inline markup, so the pages' CSP needs no change)."""
    return Markup(segno.make_qr(uri, error="m").svg_inline(scale=4, border=4))


def _mfa_setup_page(
    request: web.Request,
    found: UserSecrets,
    *,
    next_url: str,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    now = request.app[CLOCK].now()
    secret = _readable_secret(request, found)
    uri = totp.provisioning_uri(secret, found.user.name)
    ticket = (
        request.app[WEB].sealer().seal_pending(found.user.user_id, found.user.session_epoch, now)
    )
    return _signin_page(
        request,
        next_url=next_url,
        error=error,
        status=status,
        username=found.user.name,
        template="mfa_setup.html",
        extra={
            "ticket": ticket,
            "qr": qr_svg(uri),
            "uri": uri,
            "secret": secret,
        },
    )


@routes.post("/signin/setup")
async def mfa_setup(request: web.Request) -> web.StreamResponse:
    """The first code from a newly set up authenticator: the second factor is confirmed, the
    session starts, and the recovery codes are shown (this once)."""
    app = request.app
    form = await request.post()
    next_url = safe_next(str(form.get("next", "")))
    if not _csrf_ok(request, form):
        return _signin_page(
            request,
            next_url=next_url,
            error="The sign-in form had expired or came from elsewhere. Please try again.",
            status=403,
        )
    now = app[CLOCK].now()
    pending = app[WEB].sealer().open_pending(_field(form, "ticket"), now)
    if pending is None:
        return _signin_page(
            request,
            next_url=next_url,
            error="That step took too long. Sign in again with your password.",
            status=401,
        )
    user_id, epoch = pending
    user = await app[STORE].get_user(user_id)
    found = None if user is None else await app[STORE].user_secrets(user.name)
    if (
        found is None
        or found.user.disabled_at is not None
        or found.user.session_epoch != epoch
        or found.user.mfa_enrolled
    ):
        return _signin_page(
            request, next_url=next_url, error="Sign in again with your password.", status=401
        )
    address = app[AUTH_LIMITER].address(request)
    over = await throttled(request, found.user.name, now)
    if over is not None:
        return await _refuse(
            request,
            found.user.name,
            f"throttled_{over}",
            "Too many failed sign-ins; try again in 15 minutes.",
            next_url=next_url,
            status=429,
            count=False,
        )
    step = totp.matching_step(_readable_secret(request, found), _field(form, "code"), now)
    codes = passwords.new_recovery_codes()
    if step is None or not await app[STORE].confirm_mfa(
        user_id, step, [passwords.recovery_digest(c) for c in codes], now=now
    ):
        app[WEB].throttle.fail(found.user.name, address, now)
        await app[STORE].add_audit(
            AuditEntry(
                now,
                found.user.name,
                SIGN_IN_FAILED,
                user_target(found.user.name),
                {"reason": "wrong_setup_code", "address": address},
            )
        )
        return _mfa_setup_page(
            request,
            found,
            next_url=next_url,
            error="That code is not right. Check the phone's clock, and enter the code shown now.",
            status=401,
        )
    await app[STORE].add_audit(
        AuditEntry(now, found.user.name, "user.mfa_enrolled", found.user.name, {})
    )
    page = render(
        request,
        "recovery_codes.html",
        {
            "codes": codes,
            "next_url": PASSWORD_PAGE if found.user.must_change_password else next_url,
        },
        person=None,
    )
    return await _signed_in(request, found, "totp", next_url=next_url, response=page)


async def _token_signin(request: web.Request, token: str, next_url: str) -> web.Response:
    """Break-glass: the API token alone, only while `web_token_signin` is on; always audited."""
    app = request.app
    if not app[SETTINGS].web_token_signin:
        return _signin_page(
            request,
            next_url=next_url,
            error="Signing in with an API token is switched off. Sign in with your user name, "
            "password and code.",
            status=403,
        )
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
    claims = new_session("token", token_hash, 0, now)
    await app[STORE].add_audit(
        AuditEntry(
            now,
            info.name,
            SIGNED_IN,
            session_target(claims.session_id),
            {
                "role": info.role,
                "address": app[AUTH_LIMITER].address(request),
                "method": "api_token",
                "break_glass": True,
            },
        )
    )
    return _start_session(request, claims, next_url)
