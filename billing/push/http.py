"""One HTTP exchange with a PSA, and the retry policy every target shares.

5xx answers, timeouts and dropped connections are retried with random exponential backoff; a 429
waits what its Retry-After says; any other 4xx is final. Sleep is injected so tests do not wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from billing.push.errors import PushError, RateLimited, Refused, Transient

__all__ = [
    "Answer",
    "PushError",
    "RateLimited",
    "Refused",
    "Sleep",
    "Transient",
    "exchange",
    "retrying",
]

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

REQUEST_TIMEOUT_S = 30.0
MAX_RETRY_AFTER_S = 120.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body) if self.body else None


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0  # an HTTP date: wait a little rather than parse the peer's clock
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    form: Mapping[str, str] | None = None,
    deadline_s: float = REQUEST_TIMEOUT_S,
) -> Answer:
    """One request; raises Transient, RateLimited or Refused for answers that are not 2xx."""
    try:
        async with asyncio.timeout(deadline_s):
            async with session.request(
                method, url, headers=headers, data=form if form is not None else body
            ) as response:
                content = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
    except TimeoutError as exc:
        raise Transient(f"{method} {url}: no answer within {deadline_s:g} s") from exc
    except aiohttp.ClientError as exc:
        raise Transient(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
    if 200 <= status < 300:
        return Answer(status, content)
    shown = content[:300].decode("utf-8", "replace")
    if status == 429:
        raise RateLimited(f"{method} {url}: 429 rate limited", _retry_after(retry_after))
    if status >= 500:
        raise Transient(f"{method} {url}: {status} {shown}")
    raise Refused(f"{method} {url}: {status} {shown}", status)


def _wait(state: RetryCallState) -> float:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, RateLimited):
        return error.retry_after
    return float(wait_random_exponential(multiplier=0.5, max=10)(state))


async def retrying(call: Callable[[], Awaitable[T]], *, attempts: int, sleep: Sleep) -> T:
    """`call()` until it succeeds, is refused, or `attempts` transient failures went by."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_wait,
        retry=retry_if_exception_type(Transient),
        sleep=sleep,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")
