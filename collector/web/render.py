"""Rendering pages from the jinja2 templates, with what every page needs in its context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from collector import __version__
from collector.appkeys import CLOCK, HEALTH
from collector.errors import WrappedRoutes
from collector.web import views
from collector.web.people import Person
from collector.web.security import PageGuard
from collector.web.state import WEB

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["instant"] = views.instant
    env.filters["iso"] = views.iso
    env.globals.update(
        state_labels=views.STATE_LABELS,
        url=views.url,
        percent=views.percent,
        ago=views.ago,
        span=views.span,
        version=__version__,
    )
    return env


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    person: Person | None,
    status: int = 200,
) -> web.Response:
    health = request.app[HEALTH]
    html = (
        request.app[WEB]
        .templates.get_template(template)
        .render(
            person=person,
            now=request.app[CLOCK].now(),
            path=request.path,
            # Shown on every page: what it shows may lag the fleet while writes fail.
            stale_writes=health.describe() if health.stale else None,
            **context,
        )
    )
    return web.Response(text=html, content_type="text/html", status=status)


def render_error(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(
        request,
        "error.html",
        {"status": status, "title": title, "message": message},
        person=None,
        status=status,
    )


GUARD = PageGuard(render_error)


def page_routes() -> WrappedRoutes:
    """A route table for pages: their refusals are pages, their responses carry the headers."""
    return WrappedRoutes(GUARD.wrap)
