"""The pages' guard rails: which paths are pages, their security headers, and HTML errors.

Pages are everything outside the API (`/v1/...`) and the operations endpoints (`/healthz`,
`/metrics`), which keep answering JSON errors exactly as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from collector.appkeys import SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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


def is_page_path(path: str) -> bool:
    """True for the web pages (and their static files); False for the API and operations."""
    return not any(path == p or path.startswith(p + "/") for p in _NOT_PAGES)


class PageError(Exception):
    """A request a page refuses; shown as an HTML page with this status."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class Redirect(Exception):
    """Send the browser elsewhere with 303 See Other (after a form, or to sign in)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def is_secure(request: web.Request) -> bool:
    """Served over TLS, by the collector itself or by the reverse proxy in front of it."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or bool(request.app[SETTINGS].tls_cert) or forwarded == "https"


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


def page_middleware(render_error: ErrorRenderer) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_page_path(request.path):
            return await handler(request)
        response: web.StreamResponse
        try:
            response = await handler(request)
        except Redirect as redirect:
            response = web.Response(status=303, headers={"Location": redirect.location})
        except PageError as error:
            response = render_error(request, error.status, error.title, error.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = (
                "There is no page here."
                if exc.status == 404
                else f"{request.method} is not allowed on {request.path}."
                if exc.status == 405
                else exc.reason
            )
            response = render_error(
                request, exc.status, _HTTP_TITLES.get(exc.status, exc.reason), message
            )
        if not response.prepared:
            add_security_headers(request, response)
        return response

    return middleware
