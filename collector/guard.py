"""Slow and greedy clients: deadlines for a request's headers and body, and a connection cap per
address. aiohttp waits for a connection's first headers as long as its keep-alive timeout, so a
client sending a byte every few seconds holds a connection (and its memory) that long; a few
thousand of them starve the agents. In production a reverse proxy does this too
(`deploy/nginx/`); the collector does not rely on it.

Each connection is wrapped by `GuardedProtocol`: a new connection whose first request's headers
have not arrived within `header_timeout_s` is closed. After that aiohttp's own keep-alive timer,
set to `idle_timeout_s` by the runner, closes a connection whose next request's headers have not
arrived within that time of the previous answer (bytes of an unfinished request do not extend
it). Bodies are read under `body_timeout_s` (`collector.bodies.read_body`). Connections from one
address beyond `max_per_address` are closed at once, except from trusted proxies, through which
every client comes.

Nothing here runs per request: the wrapper looks for the end of the headers only until the
first request's have come, then passes each chunk on with one flag test, and one sweep per site
checks the deadlines (heartbeats are the hot path; a timer or a route wrapper per request cost
them several per cent).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionGuard:
    """Shared by every connection of one listening site."""

    def __init__(
        self,
        *,
        header_timeout_s: float,
        idle_timeout_s: float,
        max_per_address: int,
        trusted: tuple[Network, ...] = (),
    ) -> None:
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_per_address = max_per_address
        self._trusted = trusted
        self._per_address: Counter[str] = Counter()
        # Connections whose first request's headers are not in yet, by id of their transport.
        self._waiting: dict[int, GuardedProtocol] = {}
        self._sweeping: asyncio.TimerHandle | None = None
        self.closed_slow = 0
        self.refused_over_cap = 0

    @property
    def sweep_s(self) -> float:
        """How often deadlines are checked: a connection lives at most this much past one."""
        return min(1.0, self.header_timeout_s / 2)

    def _sweep(self) -> None:
        """One timer for all connections still waiting for their first headers."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for protocol in [p for p in self._waiting.values() if p.deadline < now]:
            protocol.too_slow()
        self._sweeping = loop.call_later(self.sweep_s, self._sweep) if self._waiting else None

    def _exempt(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self._trusted)

    def admit(self, host: str) -> bool:
        over = self.max_per_address and self._per_address[host] >= self.max_per_address
        if over and not self._exempt(host):
            self.refused_over_cap += 1
            return False
        self._per_address[host] += 1
        return True

    def release(self, host: str) -> None:
        self._per_address[host] -= 1
        if self._per_address[host] <= 0:
            del self._per_address[host]

    def connections(self, host: str) -> int:
        return self._per_address.get(host, 0)

    def waiting(self, transport: asyncio.BaseTransport, protocol: GuardedProtocol) -> None:
        self._waiting[id(transport)] = protocol
        if self._sweeping is None:
            self._sweeping = asyncio.get_running_loop().call_later(self.sweep_s, self._sweep)

    def arrived(self, transport: asyncio.BaseTransport) -> None:
        self._waiting.pop(id(transport), None)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, factory())


class GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's own protocol; adds the first-headers deadline and the
    per-address cap."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._host: str | None = None
        # Loop time by which the first request's headers must be in; infinite once they are.
        self.deadline = math.inf
        self._tail = b""  # the last bytes seen while looking for the end of the headers
        self._headers_in = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(host):
            log.warning("refused a connection from %s: too many open from that address", host)
            transport.abort()
            return
        self._transport, self._host = transport, host
        self.deadline = asyncio.get_running_loop().time() + self._guard.header_timeout_s
        self._guard.waiting(transport, self)
        self._inner.connection_made(transport)

    def too_slow(self) -> None:
        self.deadline = math.inf
        if self._transport is not None and not self._transport.is_closing():
            self._guard.closed_slow += 1
            log.info("closed a connection from %s: no complete request in time", self._host)
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = math.inf
        if self._transport is None:
            return  # refused at connection_made: aiohttp never saw it
        self._guard.arrived(self._transport)
        assert self._host is not None
        self._guard.release(self._host)
        self._transport = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._headers_in:
            self._look_for_end_of_headers(data)
        self._inner.data_received(data)

    def _look_for_end_of_headers(self, data: bytes) -> None:
        """A blank line ends the headers (CRLF, or a bare LF that lenient parsers accept)."""
        seen = self._tail + data
        if b"\n\r\n" in seen or b"\n\n" in seen:
            self._headers_in = True
            self.deadline = math.inf
            self._tail = b""
            if self._transport is not None:
                self._guard.arrived(self._transport)
        else:
            self._tail = seen[-2:]

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard", ConnectionGuard)


class GuardedSite(web.BaseSite):
    """`web.TCPSite` whose connections pass through a `ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        **kwargs: Any,
    ) -> None:
        self._backlog = kwargs.pop("backlog", 2048)
        self._reuse_address = kwargs.pop("reuse_address", True)
        super().__init__(runner, **kwargs)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
