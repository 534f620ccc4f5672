"""Slow and greedy clients: deadlines for a request's headers and body, and a connection cap per
address. aiohttp waits for headers and bodies as long as a client likes, so a client sending a
byte every few seconds holds a connection (and its memory) for ever; a few thousand of them
starve the agents. In production a reverse proxy does this too (`deploy/nginx/`); the collector
does not rely on it.

Each connection is wrapped by `GuardedProtocol`: its deadline closes it when the headers of its next
request have not arrived within `header_timeout_s` of the connection (or within
`idle_timeout_s` of the previous answer). `guarded`, wrapped around every route, lifts the
deadline while a request is handled; bodies are read under `body_timeout_s`
(`collector.bodies.read_body`). Connections from one address beyond `max_per_address` are
closed at once, except from trusted proxies, through which every client comes.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
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
        self._by_transport: dict[int, GuardedProtocol] = {}
        self._sweeping: asyncio.TimerHandle | None = None
        self.closed_slow = 0
        self.refused_over_cap = 0

    @property
    def sweep_s(self) -> float:
        """How often deadlines are checked: a connection lives at most this much past one."""
        return min(1.0, self.header_timeout_s / 2)

    def _sweep(self) -> None:
        """One timer for all connections: requests only move their connection's deadline,
        which costs the hot path two attribute writes instead of a timer each."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for protocol in [p for p in self._by_transport.values() if p.deadline < now]:
            protocol.too_slow()
        self._sweeping = loop.call_later(self.sweep_s, self._sweep) if self._by_transport else None

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

    def register(self, transport: asyncio.BaseTransport, protocol: GuardedProtocol) -> None:
        self._by_transport[id(transport)] = protocol
        if self._sweeping is None:
            self._sweeping = asyncio.get_running_loop().call_later(self.sweep_s, self._sweep)

    def forget(self, transport: asyncio.BaseTransport) -> None:
        self._by_transport.pop(id(transport), None)

    def protocol_of(self, transport: asyncio.BaseTransport | None) -> GuardedProtocol | None:
        return None if transport is None else self._by_transport.get(id(transport))

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, factory())


class GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's own protocol; adds the deadline and the per-address cap."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._host: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Loop time by which the next request's headers must be in; infinite while one runs.
        self.deadline = math.inf

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
        self._loop = asyncio.get_running_loop()
        self._guard.register(transport, self)
        self.arm(self._guard.header_timeout_s)
        self._inner.connection_made(transport)

    def arm(self, seconds: float) -> None:
        """Close the connection unless the next request's headers come within `seconds`."""
        if self._loop is not None:
            self.deadline = self._loop.time() + seconds

    def disarm(self) -> None:
        self.deadline = math.inf

    def too_slow(self) -> None:
        self.deadline = math.inf
        if self._transport is not None and not self._transport.is_closing():
            self._guard.closed_slow += 1
            log.info("closed a connection from %s: no complete request in time", self._host)
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self._transport is None:
            return  # refused at connection_made: aiohttp never saw it
        self._guard.forget(self._transport)
        assert self._host is not None
        self._guard.release(self._host)
        self._transport = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard", ConnectionGuard)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """`handler` run with the connection's deadline off (its headers are in); after the answer
    the connection has until the idle deadline to start its next request. Wrapped per route, as
    the JSON errors are (`collector.errors`): an aiohttp middleware costs every request more."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        guard = request.app.get(GUARD)
        protocol = None if guard is None else guard.protocol_of(request.transport)
        if protocol is None:
            return await handler(request)
        assert guard is not None
        protocol.disarm()
        try:
            return await handler(request)
        finally:
            protocol.arm(guard.idle_timeout_s)

    return run


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
