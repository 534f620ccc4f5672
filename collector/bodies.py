"""Reading request bodies and query strings: one place that turns bad input into a clear 400."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

import msgspec
from aiohttp import web

from collector.errors import ApiError
from wire.times import InstantError, parse_instant

S = TypeVar("S")

MAX_BODY = 1024 * 1024


async def read_json(request: web.Request, struct: type[S]) -> S:
    """Decode and validate the body; unknown fields are ignored or refused as `struct` says."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", "the request body is larger than the 1 MiB limit")
    body = await request.read()
    if not body:
        raise ApiError(400, "invalid_json", "the request needs a JSON body")
    try:
        return msgspec.json.decode(body, type=struct)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"the body does not fit: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


def check_query(request: web.Request, allowed: Iterable[str]) -> None:
    """People's endpoints refuse parameters they do not know, rather than silently ignore them."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(
            400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}"
        )
    if any("\x00" in value for value in request.query.values()):
        raise ApiError(400, "invalid_parameter", "a query parameter contains a NUL character")


def query_instant(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    # An unencoded '+' in an offset arrives as a space (form decoding); read it as meant.
    raw = raw.replace(" ", "+")
    try:
        return parse_instant(raw)
    except InstantError as exc:
        raise ApiError(400, f"invalid_{name}", str(exc)) from exc


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid_{name}", f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise ApiError(400, f"invalid_{name}", f"{name} must be between {low} and {high}")
    return value


def json_response(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )
