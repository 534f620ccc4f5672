"""Requests no route takes: a 404, or a 405 naming the methods the path does accept.

Registered last, as a catch-all, so it sees only what every other route declined; it answers as
a page on the pages' paths and as a JSON error elsewhere, like the routes themselves.
"""

from __future__ import annotations

from aiohttp import web

from collector.errors import json_errors
from collector.web.security import PageGuard, is_page_path


async def _unmatched(request: web.Request) -> web.StreamResponse:
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def add_fallback(app: web.Application, pages: PageGuard) -> None:
    as_page = pages.wrap(_unmatched)
    as_json = json_errors(_unmatched)

    async def fallback(request: web.Request) -> web.StreamResponse:
        answer = as_page if is_page_path(request.path) else as_json
        return await answer(request)

    app.router.add_route("*", "/{path:.*}", fallback)
