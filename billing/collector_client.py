"""Reads `GET /v1/inventory` from the collector; the only way billing sees the collector's data."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from billing.remote import CollectorRefused, CollectorSettings, CollectorUnavailable
from wire.times import format_instant

_CHUNK = 1 << 20


def ssl_context(settings: CollectorSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=settings.ca_file)
    return context


def new_session(settings: CollectorSettings) -> aiohttp.ClientSession:
    # Large fleets answer with hundreds of megabytes: no overall deadline, but no silent stall.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    connector = aiohttp.TCPConnector(ssl=ssl_context(settings))
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


class InventoryClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: CollectorSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        self._settings = settings
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.attempts),
            wait=wait_random_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception_type(CollectorUnavailable),
            sleep=sleep,
            reraise=True,
        )

    def describe(self, as_of: datetime) -> str:
        return f"inventory from {self._settings.base} as of {format_instant(as_of)}"

    async def inventory(self, as_of: datetime) -> bytearray:
        """The raw response body of `GET /v1/inventory?as_of=...`."""
        return await self._retrying(self._fetch_once, as_of)

    async def _fetch_once(self, as_of: datetime) -> bytearray:
        url = f"{self._settings.base}/v1/inventory"
        headers = {"Authorization": f"Bearer {self._settings.token}", "Accept": "application/json"}
        what = self.describe(as_of)
        try:
            async with self._session.get(
                url, params={"as_of": format_instant(as_of)}, headers=headers
            ) as response:
                if response.status >= 500:
                    raise CollectorUnavailable(f"{what}: the collector answered {response.status}")
                if response.status != 200:
                    code, detail = await _error_detail(response)
                    raise CollectorRefused(
                        f"{what}: refused with {response.status}: {detail}",
                        status=response.status,
                        code=code,
                    )
                body = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    body += chunk
                return body
        except aiohttp.ClientError as exc:
            raise CollectorUnavailable(f"{what}: {exc.__class__.__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise CollectorUnavailable(f"{what}: timed out") from exc


async def _error_detail(response: aiohttp.ClientResponse) -> tuple[str | None, str]:
    """The collector's JSON error (`error` code and `detail`), or the status text."""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None, response.reason or "no detail"
    code: str = body["error"]
    return code, f"{code}: {body.get('detail', '')}".rstrip(": ")
