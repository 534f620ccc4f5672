"""Who is looking at a page: the signed-in person behind the session cookie, and their role.

Roles and permissions are the API's own (`collector.auth.PERMISSIONS`). The person (or, for a
break-glass token session, the API token) is looked up in the store on every request, so
disabling a person, resetting their second factor, changing their password or revoking the
token ends the session at once.

Actions that change who may do what, or that uninstall software (an offboard, token and user
changes), ask for a fresh code when the last one is older than `REAUTH_AFTER`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote, urlencode, urlsplit

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from collector import accounts
from collector.appkeys import AUTH_LIMITER, CLOCK, SETTINGS, STORE
from collector.auth import PERMISSIONS, Permission
from collector.store.base import ROLES, AuditEntry, AuditFilter, Role
from collector.web.security import Answer, PageError, Redirect
from collector.web.sessions import SESSION_COOKIE, SessionKind, session_target
from collector.web.state import WEB

SIGNED_OUT = "web.signed_out"
SIGNED_IN = "web.signed_in"
SIGN_IN_FAILED = "web.sign_in_failed"
REAUTHENTICATED = "web.reauthenticated"
REAUTH_FAILED = "web.reauth_failed"
REAUTH_AFTER = timedelta(minutes=10)
PASSWORD_PAGE = "/account/password"
# Pages over every client at once: not for a person limited to some clients.
FLEET_WIDE: frozenset[Permission] = frozenset(
    {"clients.manage", "audit.read", "users.manage", "inventory.read"}
)


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: Role
    clients: frozenset[str] | None  # client ids they may see; None = every client
    kind: SessionKind  # "user", or "token" for a break-glass sign-in with an API token
    user_id: str | None
    session_id: str
    csrf: str
    authenticated_at: datetime
    expires_at: datetime
    must_change_password: bool = False

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def may(self, permission: Permission) -> bool:
        """`can`, and not a fleet-wide page for a person limited to some clients."""
        return self.can(permission) and (self.clients is None or permission not in FLEET_WIDE)

    def sees_client(self, client_id: str) -> bool:
        return self.clients is None or client_id in self.clients


async def signed_in(request: web.Request) -> Person | None:
    """The person whose session cookie came with the request, if it is still good: sealed by
    us, unexpired, not signed out, and the person still enabled at the same session epoch (or
    the break-glass token unrevoked, with token sign-in still switched on)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    app = request.app
    sealer = app[WEB].sealer()
    claims = sealer.open(cookie, app[CLOCK].now())
    if claims is None:
        return None
    store = app[STORE]
    signed_out = store.list_audit(
        AuditFilter(target=session_target(claims.session_id), action=SIGNED_OUT, limit=1)
    )
    csrf = sealer.csrf_token("session", claims.session_id)
    if claims.kind == "oidc":
        role = next((r for r in ROLES if r == claims.role), None)
        if not app[SETTINGS].oidc_issuer or role is None or await signed_out:
            return None
        return Person(
            name=claims.name,
            role=role,
            clients=None,
            kind="oidc",
            user_id=None,
            session_id=claims.session_id,
            csrf=csrf,
            authenticated_at=claims.authenticated_at,
            expires_at=claims.expires_at,
        )
    if claims.kind == "token":
        if not app[SETTINGS].web_token_signin:
            return None
        token, ended = await asyncio.gather(store.find_api_token(claims.subject), signed_out)
        if token is None or ended:
            return None
        return Person(
            name=token.name,
            role=token.role,
            clients=getattr(token, "clients", None),
            kind="token",
            user_id=None,
            session_id=claims.session_id,
            csrf=csrf,
            authenticated_at=claims.authenticated_at,
            expires_at=claims.expires_at,
        )
    user, ended = await asyncio.gather(store.get_user(claims.subject), signed_out)
    if (
        user is None
        or ended
        or user.disabled_at is not None
        or user.session_epoch != claims.epoch
        or not user.mfa_enrolled
    ):
        return None
    return Person(
        name=user.name,
        role=user.role,
        clients=user.clients,
        kind="user",
        user_id=user.user_id,
        session_id=claims.session_id,
        csrf=csrf,
        authenticated_at=claims.authenticated_at,
        expires_at=claims.expires_at,
        must_change_password=user.must_change_password,
    )


def _forbidden(person: Person, permission: Permission) -> PageError:
    if person.can(permission):  # only the client scope stands in the way
        return PageError(
            403,
            "Not allowed",
            f"You are signed in as {person.name}, limited to some clients; this page covers "
            "every client.",
        )
    return PageError(
        403,
        "Not allowed",
        f"You are signed in as {person.name} ({person.role}); the {person.role} role may not do "
        f"this (it needs {permission}).",
    )


async def require(request: web.Request, permission: Permission) -> Person:
    """The signed-in person allowed `permission`; otherwise off to sign in, or 403. A person
    who must still choose their own password is sent to do that first."""
    person = await signed_in(request)
    if person is None:
        raise Redirect("/signin?" + urlencode({"next": request.path_qs}))
    if person.must_change_password:
        raise Redirect(PASSWORD_PAGE)
    if not person.may(permission):
        raise _forbidden(person, permission)
    return person


async def require_session_form(request: web.Request) -> tuple[Person, MultiDictProxy[str]]:
    """A form post from a signed-in person with this session's CSRF token."""
    person = await signed_in(request)
    if person is None:
        raise PageError(
            401, "Signed out", "Your session has ended. Sign in again, then repeat the action."
        )
    form = await request.post()
    given = form.get("csrf")
    if not isinstance(given, str) or not request.app[WEB].sealer().check_csrf(
        "session", person.session_id, given
    ):
        raise PageError(
            403,
            "Form refused",
            "The form did not carry this session's security token. Reload the page and try again.",
        )
    fields = MultiDict((key, value) for key, value in form.items() if isinstance(value, str))
    return person, MultiDictProxy(fields)


async def require_form(
    request: web.Request, permission: Permission, *, fresh: bool = False
) -> tuple[Person, MultiDictProxy[str]]:
    """A form post from a signed-in person, with a good CSRF token, allowed `permission`; with
    `fresh`, also a code given within `REAUTH_AFTER` (asked for on a page that posts the same
    form again with it)."""
    person, form = await require_session_form(request)
    if person.must_change_password:
        raise PageError(403, "Choose your password first", "Choose your own password first.")
    if not person.may(permission):
        raise _forbidden(person, permission)
    if fresh:
        await _require_fresh(request, person, form)
    return person, form


async def _recently_reauthenticated(request: web.Request, person: Person, now: datetime) -> bool:
    if now - person.authenticated_at <= REAUTH_AFTER:
        return True
    entries = await request.app[STORE].list_audit(
        AuditFilter(
            target=session_target(person.session_id),
            action=REAUTHENTICATED,
            since=now - REAUTH_AFTER,
            limit=1,
        )
    )
    return bool(entries)


async def _require_fresh(request: web.Request, person: Person, form: MultiDictProxy[str]) -> None:
    app = request.app
    now = app[CLOCK].now()
    if person.kind == "token":  # break-glass: no second factor to ask for; audited at sign-in
        return
    if await _recently_reauthenticated(request, person, now):
        return
    if person.kind == "oidc":  # the identity provider asks again; the action is repeated after
        raise Answer(oidc_reauth_page(request, person))
    code = form.get("reauth_code", "").strip()
    error = None
    address = app[AUTH_LIMITER].address(request)
    throttle = app[WEB].throttle
    if code and throttle.blocked(person.name, address, now) is not None:
        error = "Too many wrong codes; try again in 15 minutes."
    elif code:
        secrets = await app[STORE].user_secrets(person.name)
        used = (
            None
            if secrets is None
            else await accounts.check_code(
                app[STORE], secrets, code, now, box=app[WEB].secret_box()
            )
        )
        target = session_target(person.session_id)
        if used is not None:
            await app[STORE].add_audit(
                AuditEntry(now, person.name, REAUTHENTICATED, target, {"method": used})
            )
            return
        throttle.fail(person.name, address, now)
        await app[STORE].add_audit(
            AuditEntry(
                now, person.name, REAUTH_FAILED, target, {"path": request.path, "address": address}
            )
        )
        error = "That code is wrong or was used already. Wait for the next one."
    raise Answer(reauth_page(request, person, form, error=error))


def reauth_page(
    request: web.Request, person: Person, form: MultiDictProxy[str], *, error: str | None
) -> web.Response:
    # Imported here: rendering imports this module for `Person`.
    from collector.web.render import render

    fields = [(k, v) for k, v in form.items() if k not in ("csrf", "reauth_code")]
    return render(
        request,
        "reauth.html",
        {"action": request.path_qs, "fields": fields, "error": error},
        person=person,
        status=401 if error else 200,
    )


def oidc_reauth_page(request: web.Request, person: Person) -> web.Response:
    from collector.web.render import render

    # Back to the page the form was on (the pages send no Referer): the form's own path, less
    # the action segments that only take posts.
    back = request.path
    for action in ("/revoke", "/enrollment-tokens", "/disable", "/reset-mfa"):
        back = back.removesuffix(action)
    return render(
        request,
        "reauth_oidc.html",
        {"signin_url": "/signin/oidc?" + urlencode({"next": back, "again": "1"})},
        person=person,
        status=401,
    )


def safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (`//evil`, `/\\evil`, `https://...`), and
    nothing a browser would read as one after dropping control characters (`/\t/evil`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in target):
        return "/"
    if "%" in target and safe_next(unquote(target)) == "/" and unquote(target) != "/":
        return "/"  # encoded: `/%09/evil`, `/%2F%2Fevil`
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return "/"
    return target
