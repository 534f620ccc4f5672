"""The collector's web pages for the NOC and technicians: server-rendered, same store and roles
as the API. `setup_pages(app)` adds them to an app built by `create_app`."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from collector.appkeys import CLOCK, SETTINGS, SIGNER, STORE
from collector.errors import Handler
from collector.store.base import AuditEntry
from collector.web import (
    accounts,
    admin,
    coverage,
    fleet,
    offboarding,
    oidc,
    password,
    signin,
    signout,
)
from collector.web.render import GUARD, STATIC, make_templates
from collector.web.security import PageGuard, is_page_path
from collector.web.state import WEB, WebState

__all__ = ["is_page_path", "setup_pages"]


def static_files(folder: Path) -> Handler:
    """Serves the files found in `folder` at startup, by name: a name that is not one of them
    (a path, `..`, anything added later) is a 404, so no request can reach outside it."""
    files = {path.name: path for path in folder.iterdir() if path.is_file()}

    async def static(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    return static


TOKEN_SIGNIN_ENABLED = "web.token_signin_enabled"


async def _audit_break_glass(app: web.Application) -> None:
    """Token sign-in to the pages has no second factor: each start with it on is recorded."""
    if app[SETTINGS].web_token_signin:
        await app[STORE].add_audit(
            AuditEntry(app[CLOCK].now(), "system", TOKEN_SIGNIN_ENABLED, "web", {})
        )


def setup_pages(app: web.Application) -> PageGuard:
    """Pages live outside `/v1/`, `/healthz` and `/metrics`; the session secret sits beside the
    command-signing keys, so every instance given that folder shares sessions. The guard
    returned is what answers requests no route took on page paths."""
    app[WEB] = WebState(make_templates(), app[SIGNER].keyring.folder)
    for family in (signin, signout, password, oidc, fleet, offboarding, admin, accounts, coverage):
        app.add_routes(family.routes)
    app.router.add_get("/static/{name}", GUARD.wrap(static_files(STATIC)), name="static")
    app.on_startup.append(_audit_break_glass)
    app.cleanup_ctx.append(oidc.oidc_client_ctx)
    return GUARD
