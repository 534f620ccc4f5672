"""The agent's HTTP client for the collector.

An async context manager around the agent's own small HTTP/1.1 client (`agent/http.py`, one
kept-alive connection), with a timeout per call and exceptions that say what happened:

- `CollectorUnavailable`: transport errors, timeouts, 5xx, or an answer that is not the collector's;
  worth retrying later.
- `Rejected`: a 4xx with the collector's `{"error", "detail"}`; retrying the same request won't
  help.
- `Unauthorized`: a 401; the agent token is revoked or invalid.

Retries are declared once, in `retrying()`: random exponential backoff with a cap, only for
`CollectorUnavailable`, with the sleep injected. The token travels only in the `Authorization`
header and never appears in a log line, a URL or an exception message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import msgspec
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from agent.events import Event, EventsRequest, EventsResponse
from agent.http import HttpClient, HttpError
from wire.messages import (
    EnrollPending,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    HeartbeatRequest,
    HeartbeatResponse,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class CollectorError(Exception):
    """Base of everything the collector client raises."""


class CollectorUnavailable(CollectorError):
    """The collector could not be reached or answered with a server error; try again later."""


class Rejected(CollectorError):
    """The collector refused the request (4xx)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"collector refused the request ({status} {error}): {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class Unauthorized(Rejected):
    """401: the agent token is revoked or invalid (for example, the machine was enrolled again)."""


class AwaitingApproval(CollectorError):
    """202 to an enrollment: known hardware without proof of the previous credential waits for
    a technician (`rmm-collector machine approve-reenroll`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail or "the enrollment waits for a technician's approval")
        self.detail = detail


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify the collector against the system store, or only against the pinned CA file."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()


def retrying(
    *,
    max_wait: float,
    sleep: Callable[[float], Awaitable[None]],
    attempts: int | None = None,
) -> AsyncRetrying:
    """The one retry policy: transport errors and 5xx only, random exponential backoff, capped.

    Never retries a 4xx (`Rejected`).
    """
    return AsyncRetrying(
        retry=retry_if_exception_type(CollectorUnavailable),
        wait=wait_random_exponential(multiplier=1, max=max_wait),
        stop=stop_after_attempt(attempts) if attempts else stop_never,
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    delay = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning(
        "collector unavailable (%s); attempt %d failed, retrying in %.1f s",
        error,
        state.attempt_number,
        delay,
    )


class CollectorClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ssl: ssl.SSLContext | None = None,
        proxy: str | None = None,
        request_timeout: float = 30.0,
        user_agent: str = "rmm-agent",
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._ssl = ssl
        self._proxy = proxy
        self._timeout = request_timeout
        self._user_agent = user_agent
        self._http: HttpClient | None = None

    def __repr__(self) -> str:
        return f"CollectorClient({self._base_url!r})"

    def with_token(self, token: str) -> None:
        self._token = token

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    def _get_http(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                self._base_url,
                ssl_context=self._ssl,
                proxy=self._proxy,
                max_answer_bytes=MAX_RESPONSE_BYTES,
            )
        return self._http

    async def enroll(self, request: EnrollRequest) -> EnrollResponse:
        """201 with a credential, or `AwaitingApproval` (202) while a technician must approve."""
        path = "/v1/enroll"
        status, data = await self._post_raw(path, msgspec.json.encode(request), False)
        if status == 202:
            try:
                held = msgspec.json.decode(data, type=EnrollPending)
            except msgspec.DecodeError as exc:
                raise CollectorUnavailable(f"POST {path} answered 202 without a state") from exc
            raise AwaitingApproval(held.detail[:500])
        return _decode(path, status, data, EnrollResponse)

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        return await self._post("/v1/heartbeat", request, HeartbeatResponse)

    async def send_events(self, events: Sequence[Event]) -> int:
        response = await self._post(
            "/v1/events", EventsRequest(events=list(events)), EventsResponse
        )
        return response.accepted

    async def send_result(self, command_id: str, body: bytes) -> None:
        """Deliver a command result; any 2xx is an acknowledgement."""
        await self._post_raw(f"/v1/commands/{quote(command_id, safe='')}/result", body)

    async def send_progress(self, command_id: str, body: bytes) -> None:
        """Report a running command's steps so far; any 2xx is an acknowledgement."""
        await self._post_raw(f"/v1/commands/{quote(command_id, safe='')}/progress", body)

    async def _post(
        self, path: str, message: Any, answer: type[T], *, authenticated: bool = True
    ) -> T:
        status, data = await self._post_raw(path, msgspec.json.encode(message), authenticated)
        return _decode(path, status, data, answer)

    async def _post_raw(
        self, path: str, body: bytes, authenticated: bool = True
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authenticated:
            if not self._token:
                raise Unauthorized(401, "not_enrolled", "this agent has no token; enroll it first")
            headers["Authorization"] = f"Bearer {self._token}"
        headers["User-Agent"] = self._user_agent
        try:
            async with asyncio.timeout(self._timeout):
                status, data = await self._get_http().post(path, body, headers)
        except TimeoutError as exc:
            await self.close()
            raise CollectorUnavailable(
                f"POST {path}: no answer within {self._timeout:g} s"
            ) from exc
        except HttpError as exc:
            raise CollectorUnavailable(f"POST {path}: {exc}") from exc
        if 200 <= status < 300:
            return status, data
        if status >= 500:
            raise CollectorUnavailable(f"POST {path}: server error {status}")
        if 300 <= status < 400:
            raise Rejected(
                status, "redirect", "the collector URL redirects; configure the final URL"
            )
        error, detail = _error_body(data, status)
        if status == 401:
            raise Unauthorized(status, error, detail)
        raise Rejected(status, error, detail)


def _decode(path: str, status: int, data: bytes, answer: type[T]) -> T:
    try:
        return msgspec.json.decode(data, type=answer)
    except msgspec.DecodeError as exc:
        raise CollectorUnavailable(
            f"POST {path} answered {status} with a body that is not the collector's: {exc}"
        ) from exc


def _error_body(data: bytes, status: int) -> tuple[str, str]:
    try:
        body = msgspec.json.decode(data, type=ErrorBody)
    except msgspec.DecodeError:
        return f"http_{status}", "no error details in the response"
    return body.error[:100], body.detail[:500]
