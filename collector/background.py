"""Work the collector does on its own: flushing last-seen, the expiry sweep, revocation polling,
and compacting presence history older than its retention horizon.

Each is safe to run in every instance sharing one database: the SQL is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from collector.appkeys import (
    AGENT_TOKENS,
    BUFFER,
    CLOCK,
    HEALTH,
    METRICS,
    NETWORK,
    OPEN_COMMANDS,
    SETTINGS,
    SIGNER,
    STORE,
)
from collector.clones import detect_clones, refresh_splits
from collector.network_buffer import flush_network
from collector.rules.presence import retention_horizon
from collector.store.base import StateWindows
from wire.clock import Clock
from wire.times import EXPIRY

log = logging.getLogger(__name__)


def state_windows(clock: Clock, online_window_s: int) -> StateWindows:
    now = clock.now()
    return StateWindows(
        now=now,
        online_since=now - timedelta(seconds=online_window_s),
        expired_before=now - EXPIRY,
    )


async def flush_heartbeats(app: web.Application) -> int:
    """Write everything buffered in one transaction; on failure keep it for the next try. With
    nothing to write for a while, prove the database still takes writes (`collector.health`)."""
    health = app[HEALTH]
    batch = app[BUFFER].take()
    if not batch:
        app[BUFFER].committed()
        await flush_network(app[STORE], app[NETWORK])
        if health.wants_probe:
            try:
                await app[STORE].probe_write(app[CLOCK].now())
            except Exception as exc:
                health.failed(exc)
                raise
            health.ok()
        return 0
    started = time.perf_counter()
    try:
        await app[STORE].apply_heartbeats(batch, gap_s=app[SETTINGS].online_window_s)
    except Exception as exc:
        app[BUFFER].put_back(batch)
        app[METRICS].flush_failures.inc()
        health.failed(exc)
        log.exception("last-seen flush of %d machines failed; retrying next tick", len(batch))
        raise
    app[BUFFER].committed()
    health.ok()
    app[METRICS].flush_seconds.observe(time.perf_counter() - started)
    app[METRICS].flush_batch.set(len(batch))
    # Network sections (coverage) follow in a transaction of their own, once per flush.
    await flush_network(app[STORE], app[NETWORK])
    return len(batch)


async def sweep_expired(app: web.Application) -> list[str]:
    windows = state_windows(app[CLOCK], app[SETTINGS].online_window_s)
    expired = await app[STORE].expire_machines(windows)
    if expired:
        app[METRICS].expired.inc(len(expired))
        log.info("%d machine(s) expired after 30 days without a heartbeat", len(expired))
    return expired


async def compact_history(app: web.Application) -> int:
    """Drop history that no answer inside the retention horizon can read (billing answers for
    months inside it never change)."""
    keep = timedelta(days=app[SETTINGS].history_retention_days)
    horizon = retention_horizon(app[CLOCK].now(), keep)
    removed = await app[STORE].compact_history(horizon_start=horizon)
    sightings = await app[STORE].compact_sightings(horizon_start=horizon)  # coverage
    if sightings:
        log.info("history compacted: %d day(s) of LAN sightings", sightings)
    if removed.total:
        log.info(
            "history compacted: %d run(s) of presence, %d facts row(s), %d coverage period(s)",
            removed.presence,
            removed.facts,
            removed.coverage,
        )
    return removed.total


async def refresh_commands_and_keys(app: web.Application) -> None:
    """Commands requested and keys generated through other instances show up here too."""
    await app[OPEN_COMMANDS].refresh()
    app[SIGNER].keyring.load()
    await refresh_splits(app)


async def every(seconds: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
    """Run `job` every `seconds`, start to start, never two at once. A run longer than the
    interval is followed at once by the next, so buffered last-seen times wait at most about the
    longer of the interval and one flush, not both in a row."""
    loop = asyncio.get_running_loop()
    next_start = loop.time() + seconds
    while True:
        await asyncio.sleep(max(0.0, next_start - loop.time()))
        next_start += seconds
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job %s failed; it runs again in %.1f s", name, seconds)
        # Behind schedule after a slow run: start counting afresh rather than run in a burst.
        next_start = max(next_start, loop.time())


async def background_tasks(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await app[AGENT_TOKENS].start()
    await refresh_commands_and_keys(app)
    with contextlib.suppress(Exception):
        await sweep_expired(app)
    tasks = [
        asyncio.create_task(
            every(settings.flush_interval_s, "flush", lambda: flush_heartbeats(app))
        ),
        asyncio.create_task(every(settings.sweep_interval_s, "sweep", lambda: sweep_expired(app))),
        asyncio.create_task(every(settings.sweep_interval_s, "clones", lambda: detect_clones(app))),
        asyncio.create_task(
            every(settings.auth_cache_s, "revocations", app[AGENT_TOKENS].apply_revocations)
        ),
        asyncio.create_task(
            every(settings.command_poll_s, "commands", lambda: refresh_commands_and_keys(app))
        ),
        asyncio.create_task(
            every(settings.compaction_interval_s, "compaction", lambda: compact_history(app))
        ),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Nothing acknowledged is lost on a clean shutdown: write the last buffered heartbeats.
        with contextlib.suppress(Exception):
            await flush_heartbeats(app)
