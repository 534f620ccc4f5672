"""Every error leaves the collector as JSON `{"error": code, "detail": sentence}`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
from aiohttp import web

from collector.store.base import InvalidText
from wire.messages import ErrorBody

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ApiError(Exception):
    """A request the collector refuses; raised before any state changes."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def error_response(status: int, code: str, detail: str) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(ErrorBody(error=code, detail=detail)),
        content_type="application/json",
    )


class PageHooks(Protocol):
    """How the web pages answer on their own paths (see `collector.web.security.PageGuard`)."""

    def owns(self, path: str) -> bool: ...

    def answer(self, request: web.Request, exc: Exception) -> web.StreamResponse | None: ...

    def finish(self, request: web.Request, response: web.StreamResponse) -> None: ...


def _json_http_error(request: web.Request, exc: web.HTTPException) -> tuple[str, web.Response]:
    code = _HTTP_CODES.get(exc.status, "http_error")
    detail = exc.reason
    if exc.status == 413:
        detail = "the request body is larger than the 1 MiB limit"
    elif exc.status == 404:
        detail = f"no such endpoint: {request.method} {request.path}"
    elif exc.status == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    return code, error_response(exc.status, code, detail)


def error_middleware(
    on_rejected: Callable[[str], None], pages: PageHooks | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The collector's only middleware: refusals become the JSON error shape (counted by
    reason) on the API, and HTML pages on the web pages' paths.

    One layer, and a success path of one `await` and one prefix check, because every middleware
    is paid for by every heartbeat.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as exc:
            on_rejected(exc.code)
            return error_response(exc.status, exc.code, exc.detail)
        except Exception as exc:
            page = None
            if pages is not None and pages.owns(request.path):
                page = pages.answer(request, exc)
            if page is not None:
                response = page
            elif isinstance(exc, InvalidText):
                # Raised by the store before it changed anything: the request's own text.
                on_rejected("invalid_text")
                return error_response(400, "invalid_text", str(exc))
            elif isinstance(exc, web.HTTPException) and exc.status >= 400:
                code, answer = _json_http_error(request, exc)
                on_rejected(code)
                return answer
            else:
                raise
        if pages is not None and pages.owns(request.path):
            pages.finish(request, response)
        return response

    return middleware
