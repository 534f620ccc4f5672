"""The app factory: everything is passed in; the CLI and the tests build the same app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from aiohttp import web

from collector import (
    handlers_agent,
    handlers_commands,
    handlers_coverage,
    handlers_machines,
    handlers_ops,
    handlers_orders,
    handlers_people,
)
from collector.appkeys import (
    AGENT_TOKENS,
    AUTH_LIMITER,
    BUFFER,
    CLOCK,
    ENROLLMENT_PACE,
    HEALTH,
    METRICS,
    NETWORK,
    OPEN_COMMANDS,
    SETTINGS,
    SIGNER,
    STORE,
)
from collector.auth import AgentTokenCache, FailedAuthLimiter
from collector.background import background_tasks
from collector.bodies import MAX_BODY
from collector.buffer import HeartbeatBuffer
from collector.clones import CLONE_SPLITS
from collector.commands import CommandSigner, OpenCommands
from collector.errors import ON_REJECTED
from collector.fallback import add_fallback
from collector.guard import GUARD, ConnectionGuard
from collector.health import WriteHealth
from collector.keys import KeyRing
from collector.metrics import Metrics
from collector.network_buffer import NetworkBuffer
from collector.pace import EnrollmentPace
from collector.settings import Settings, parse_networks
from collector.store.base import Store
from collector.web import setup_pages
from wire.clock import Clock


def create_app(
    settings: Settings,
    *,
    store: Store,
    clock: Clock,
    keys_dir: Path | None = None,
    health: WriteHealth | None = None,
) -> web.Application:
    metrics = Metrics()

    def count_rejection(reason: str) -> None:
        metrics.rejected.labels(reason=reason).inc()

    app = web.Application(client_max_size=MAX_BODY)
    app[GUARD] = ConnectionGuard(
        header_timeout_s=settings.header_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
        max_per_address=settings.max_connections_per_address,
        trusted=parse_networks(settings.trusted_proxies),
    )
    app[SETTINGS] = settings
    app[STORE] = store
    app[CLOCK] = clock
    app[METRICS] = metrics
    app[BUFFER] = HeartbeatBuffer()
    app[NETWORK] = NetworkBuffer()
    app[CLONE_SPLITS] = {}
    app[HEALTH] = health or WriteHealth(settings.flush_interval_s)
    app[ENROLLMENT_PACE] = EnrollmentPace(settings.enrollment_rate_per_minute)
    app[AGENT_TOKENS] = AgentTokenCache(store)
    app[AUTH_LIMITER] = FailedAuthLimiter(trusted_proxies=parse_networks(settings.trusted_proxies))
    app[OPEN_COMMANDS] = OpenCommands(store)
    app[SIGNER] = CommandSigner(
        KeyRing(keys_dir or settings.resolved_keys_dir), timedelta(seconds=settings.command_ttl_s)
    )
    app.add_routes(handlers_agent.routes)
    app.add_routes(handlers_commands.routes)
    app.add_routes(handlers_people.routes)
    app.add_routes(handlers_machines.routes)
    app.add_routes(handlers_orders.routes)
    app.add_routes(handlers_ops.routes)
    app.add_routes(handlers_coverage.routes)
    app[ON_REJECTED] = count_rejection
    add_fallback(app, setup_pages(app))
    app.cleanup_ctx.append(background_tasks)
    return app
