"""The pages' guard rails: which paths are pages, their security headers, and HTML errors.

Pages are everything outside the API (`/v1/...`) and the operations endpoints (`/healthz`,
`/metrics`), which keep answering JSON errors exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from aiohttp import web

from collector.appkeys import SETTINGS
from collector.errors import RETRY_AFTER_S, Handler
from collector.proxies import forwarded_https, trusted_networks
from collector.store.base import InvalidText
from collector.store.sql import StoreUnavailable

ErrorRenderer = Callable[[web.Request, int, str, str], web.Response]

_NOT_PAGES = ("/v1", "/healthz", "/metrics")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)


_NOT_PAGE_PREFIXES = tuple(p + "/" for p in _NOT_PAGES)


def is_page_path(path: str) -> bool:
    """True for the web pages (and their static files); False for the API and operations."""
    return not (path.startswith(_NOT_PAGE_PREFIXES) or path in _NOT_PAGES)


class PageError(Exception):
    """A request a page refuses; shown as an HTML page with this status."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class Answer(Exception):
    """A page already made (a question to answer before the request can go on)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class Redirect(Exception):
    """Send the browser elsewhere with 303 See Other (after a form, or to sign in)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def is_secure(request: web.Request) -> bool:
    """Served over TLS, by the collector itself or by a trusted reverse proxy in front of it."""
    settings = request.app[SETTINGS]
    return (
        request.secure
        or bool(settings.tls_cert)
        or forwarded_https(request, trusted_networks(settings.trusted_proxies))
    )


def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    # Pages hold what a person may see: never stored; static files are revalidated.
    static = request.path.startswith("/static/")
    headers.setdefault("Cache-Control", "no-cache" if static else "no-store")
    if is_secure(request):
        headers["Strict-Transport-Security"] = "max-age=31536000"


_HTTP_TITLES = {404: "Not found", 405: "Method not allowed", 413: "Too large"}


class PageGuard:
    """How page routes answer: HTML error pages, redirects, and the security headers on every
    page response. It wraps each page handler (see `render.page_routes`) rather than being a
    middleware, so an API request (a heartbeat above all) pays for no extra layer."""

    def __init__(self, render_error: ErrorRenderer) -> None:
        self._render_error = render_error

    def answer(self, request: web.Request, exc: Exception) -> web.Response | None:
        """The page for a refusal raised while serving a page; None if it is not one."""
        if isinstance(exc, Answer):
            return exc.response
        if isinstance(exc, Redirect):
            return web.Response(status=303, headers={"Location": exc.location})
        if isinstance(exc, PageError):
            return self._render_error(request, exc.status, exc.title, exc.message)
        if isinstance(exc, InvalidText):  # the store refused the request's own text
            return self._render_error(request, 400, "Bad request", str(exc))
        if isinstance(exc, StoreUnavailable):
            page = self._render_error(
                request,
                503,
                "Database unavailable",
                f"The collector's database cannot serve this right now ({exc}). "
                "Nothing was changed; try again in a few seconds.",
            )
            page.headers["Retry-After"] = str(RETRY_AFTER_S)
            return page
        if isinstance(exc, web.HTTPException) and exc.status >= 400:
            message = (
                "There is no page here."
                if exc.status == 404
                else f"{request.method} is not allowed on {request.path}."
                if exc.status == 405
                else exc.reason
            )
            page = self._render_error(
                request, exc.status, _HTTP_TITLES.get(exc.status, exc.reason), message
            )
            if "Allow" in exc.headers:
                page.headers["Allow"] = exc.headers["Allow"]
            return page
        return None

    def wrap(self, handler: Handler) -> Handler:
        """`handler` answering refusals as pages, with the security headers on what it returns."""

        @functools.wraps(handler)
        async def page(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except Exception as exc:
                refusal = self.answer(request, exc)
                if refusal is None:
                    raise
                response = refusal
            if not response.prepared:
                add_security_headers(request, response)
            return response

        return page
