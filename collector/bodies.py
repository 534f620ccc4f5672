"""Reading request bodies and query strings: one place that turns bad input into a clear 400."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import msgspec
from aiohttp import web

from collector.appkeys import SETTINGS
from collector.errors import ApiError
from collector.requests import Query, parameter_schemas
from wire.times import InstantError, parse_instant

S = TypeVar("S")
Q = TypeVar("Q", bound=Query)

MAX_BODY = 1024 * 1024


class Decoder(Protocol):
    def decode(self, body: bytes, /) -> Any: ...


_decoders: dict[type[Any], Decoder] = {}


def decode_with(struct: type[Any], decoder: Decoder) -> None:
    """Bodies of `struct` are read by `decoder` (which must answer as msgspec's would)."""
    _decoders[struct] = decoder


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The body, which must arrive within `timeout_s`; a client that trickles it gets a 408
    and its connection is closed once that is sent (the rest of its body is never read)."""
    if request.content.is_eof():
        return await request.read()  # already all in (a heartbeat comes with its headers)
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError as exc:
        raise ApiError(
            408,
            "request_timeout",
            f"the request body did not arrive within {timeout_s:g} s",
            close=True,
        ) from exc


async def read_json(request: web.Request, struct: type[S]) -> S:
    """Decode and validate the body; unknown fields are ignored or refused as `struct` says.

    A body over the app's `client_max_size` (MAX_BODY) is refused by aiohttp while it is read,
    as a 413, before it is all in memory.
    """
    body = await read_body(request, request.app[SETTINGS].body_timeout_s)
    if not body:
        raise ApiError(400, "invalid_json", "the request needs a JSON body")
    decoder = _decoders.get(struct)
    if decoder is None:
        decoder = _decoders[struct] = msgspec.json.Decoder(struct)
    try:
        return cast(S, decoder.decode(body))
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


_AT_FIELD = re.compile(r" - at `\$\.(\w+)`$")


def _refusal(name: str, schema: dict[str, Any], error: str) -> str:
    if "enum" in schema:
        return f"{name} must be one of {', '.join(schema['enum'])}"
    if schema.get("type") == "integer":
        return f"{name} must be a whole number from {schema['minimum']} to {schema['maximum']}"
    if "examples" in schema:
        return f"{name} must look like {schema['examples'][0]}"
    return f"{name}: {error}"


def read_query(request: web.Request, query: type[Q]) -> Q:
    """The query string decoded with `query`, whose fields are also the parameters the OpenAPI
    document lists: a parameter it does not name, a NUL character, or a value outside the
    field's schema is a 400 (`unknown_parameter`, `invalid_parameter`, `invalid_<name>`)."""
    check_query(request, query.__struct_fields__)
    given: dict[str, str] = {}
    for name, value in request.query.items():
        if value or name not in query.blank_is_absent:
            given.setdefault(name, value)  # a repeated parameter: the first one counts
    try:
        return msgspec.convert(given, query, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _AT_FIELD.search(message)
        if at is None:
            raise ApiError(400, "invalid_parameter", message) from exc
        name = at.group(1)
        detail = _refusal(name, parameter_schemas(query)[name], message[: at.start()])
        raise ApiError(400, f"invalid_{name}", detail) from exc


def query_instant(raw: str | None, name: str) -> datetime | None:
    """A query parameter's instant (a field of a `Query` whose schema says date-time)."""
    if raw is None:
        return None
    # An unencoded '+' in an offset arrives as a space (form decoding); read it as meant.
    # RFC 3339 lets the 'T' and 'Z' be lower case.
    text = raw.replace(" ", "+").upper()
    try:
        return parse_instant(text)
    except InstantError as exc:
        raise ApiError(400, f"invalid_{name}", str(exc)) from exc


def json_response(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )
