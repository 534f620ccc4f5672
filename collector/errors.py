"""Every error leaves the collector as JSON `{"error": code, "detail": sentence}`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

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


def error_middleware(
    on_rejected: Callable[[str], None],
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Turn refusals into the JSON error shape and count them by reason."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            on_rejected(exc.code)
            return error_response(exc.status, exc.code, exc.detail)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            on_rejected(code)
            detail = exc.reason
            if exc.status == 413:
                detail = "the request body is larger than the 1 MiB limit"
            elif exc.status == 404:
                detail = f"no such endpoint: {request.method} {request.path}"
            elif exc.status == 405:
                detail = f"{request.method} is not allowed on {request.path}"
            return error_response(exc.status, code, detail)

    return middleware
