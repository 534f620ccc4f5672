"""Every error leaves the collector as JSON `{"error": code, "detail": sentence}`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import msgspec
from aiohttp import web

from collector.store.base import InvalidText, StoreError
from collector.store.sql import StoreUnavailable
from wire.messages import ErrorBody

log = logging.getLogger(__name__)

# What a 503 tells a client to wait before trying again (agents back off on their own too).
RETRY_AFTER_S = 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_H = TypeVar("_H")

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

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.close = close  # end the connection after the answer


def error_response(status: int, code: str, detail: str) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(ErrorBody(error=code, detail=detail)),
        content_type="application/json",
    )


ON_REJECTED: web.AppKey[Callable[[str], None]] = web.AppKey("on_rejected")


def _http_error(request: web.Request, exc: web.HTTPException) -> tuple[str, str]:
    """The JSON error code and sentence for an aiohttp HTTP error (404, 405, 413, ...)."""
    code = _HTTP_CODES.get(exc.status, "http_error")
    detail = exc.reason
    if exc.status == 413:
        detail = "the request body is larger than the 1 MiB limit"
    elif exc.status == 404:
        detail = f"no such endpoint: {request.method} {request.path}"
    elif exc.status == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    return code, detail


def _refuse(request: web.Request, status: int, code: str, detail: str) -> web.Response:
    request.app[ON_REJECTED](code)
    return error_response(status, code, detail)


def json_errors(handler: Handler) -> Handler:
    """`handler` with its refusals answered in the JSON error shape and counted by reason.

    A wrapper per route rather than an aiohttp middleware: a middleware is paid for by every
    request, and on the heartbeat path its layers cost more than the handler's own work.
    """

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            refused = _refuse(request, exc.status, exc.code, exc.detail)
            refused.headers.update(exc.headers)
            if exc.close:
                refused.force_close()
            return refused
        except InvalidText as exc:
            # Raised by the store before it changed anything: the request's own text.
            return _refuse(request, 400, "invalid_text", str(exc))
        except StoreUnavailable as exc:
            response = _refuse(request, 503, "database_unavailable", str(exc))
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except StoreError as exc:
            log.exception("the store failed on %s %s", request.method, request.path)
            return _refuse(request, 500, "store_error", f"the database failed: {exc}")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _refuse(request, exc.status, *_http_error(request, exc))
            if "Allow" in exc.headers:  # a 405 names the methods the path accepts
                response.headers["Allow"] = exc.headers["Allow"]
            return response

    return answer


class WrappedRoutes(web.RouteTableDef):
    """A route table that registers each handler wrapped by `wrap`, which decides how the
    handler's refusals are answered (`json_errors` for the API, the page guard for pages)."""

    def __init__(self, wrap: Callable[[Handler], Handler]) -> None:
        super().__init__()
        self._wrap = wrap

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[_H], _H]:
        register = super().route(method, path, **kwargs)

        def add(handler: _H) -> _H:
            register(self._wrap(cast(Handler, handler)))
            return handler

        return add


def json_routes() -> WrappedRoutes:
    """A route table for the API: its handlers' refusals are JSON errors."""
    return WrappedRoutes(json_errors)
