"""The collector's web pages for the NOC and technicians: server-rendered, same store and roles
as the API. `setup_pages(app)` adds them to an app built by `create_app`."""

from __future__ import annotations

from aiohttp import web

from collector.appkeys import SIGNER
from collector.web import admin, routes
from collector.web.render import STATIC, make_templates, render_error
from collector.web.security import PageGuard, is_page_path
from collector.web.state import WEB, WebState

__all__ = ["is_page_path", "setup_pages"]


def setup_pages(app: web.Application) -> PageGuard:
    """Pages live outside `/v1/`, `/healthz` and `/metrics`; the session secret sits beside the
    command-signing keys, so every instance given that folder shares sessions. The guard returned
    is what the app's error middleware runs on page paths."""
    app[WEB] = WebState(make_templates(), app[SIGNER].keyring.folder)
    app.add_routes(routes.routes)
    app.add_routes(admin.routes)
    app.router.add_static("/static/", STATIC, name="static")
    return PageGuard(render_error)
