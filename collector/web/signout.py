"""Signing out: the session cookie goes, and the audit log says so."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import CLOCK, STORE
from collector.store.base import AuditEntry
from collector.web.people import SIGNED_OUT, signed_in
from collector.web.render import page_routes
from collector.web.security import PageError
from collector.web.sessions import SESSION_COOKIE, session_target
from collector.web.state import WEB

routes = page_routes()


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
