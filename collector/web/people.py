"""Who is looking at a page: the signed-in person behind the session cookie, and their role.

Roles and permissions are the API's own (`collector.auth.PERMISSIONS`); the token is looked up in
the store on every request, exactly as the API does with a bearer token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from collector.appkeys import CLOCK, STORE
from collector.auth import PERMISSIONS, Permission
from collector.store.base import ApiTokenInfo, AuditFilter
from collector.web.security import PageError, Redirect
from collector.web.sessions import SESSION_COOKIE, session_target
from collector.web.state import WEB

SIGNED_OUT = "web.signed_out"
SIGNED_IN = "web.signed_in"


@dataclass(frozen=True, slots=True)
class Person:
    token: ApiTokenInfo
    session_id: str
    csrf: str

    @property
    def name(self) -> str:
        return self.token.name

    @property
    def role(self) -> str:
        return self.token.role

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.token.role]


async def signed_in(request: web.Request) -> Person | None:
    """The person whose session cookie came with the request, if it is still good: sealed by
    us, unexpired, not signed out, and its API token not revoked."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    app = request.app
    sealer = app[WEB].sealer()
    claims = sealer.open(cookie, app[CLOCK].now())
    if claims is None:
        return None
    store = app[STORE]
    token, signed_out = await asyncio.gather(
        store.find_api_token(claims.token_hash),
        store.list_audit(
            AuditFilter(target=session_target(claims.session_id), action=SIGNED_OUT, limit=1)
        ),
    )
    if token is None or signed_out:
        return None
    return Person(
        token=token,
        session_id=claims.session_id,
        csrf=sealer.csrf_token("session", claims.session_id),
    )


def _forbidden(person: Person, permission: Permission) -> PageError:
    return PageError(
        403,
        "Not allowed",
        f"You are signed in as {person.name} ({person.role}); the {person.role} role may not do "
        f"this (it needs {permission}).",
    )


async def require(request: web.Request, permission: Permission) -> Person:
    """The signed-in person allowed `permission`; otherwise off to sign in, or 403."""
    person = await signed_in(request)
    if person is None:
        raise Redirect("/signin?" + urlencode({"next": request.path_qs}))
    if not person.can(permission):
        raise _forbidden(person, permission)
    return person


async def require_form(
    request: web.Request, permission: Permission
) -> tuple[Person, MultiDictProxy[str]]:
    """A form post from a signed-in person, with a good CSRF token, allowed `permission`."""
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
    if not person.can(permission):
        raise _forbidden(person, permission)
    fields = MultiDict((key, value) for key, value in form.items() if isinstance(value, str))
    return person, MultiDictProxy(fields)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (`//evil`, `/\\evil`, `https://...`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target
