"""Heartbeats per second: the bare-handler ceiling, then the collector on SQLite (one process)
and PostgreSQL (one and two processes), with keep-alive and with a new connection per heartbeat.

Every collector run uses distinct agent tokens of 100,000 machines enrolled beforehand, each
process's token cache warmed with every token once, and the same wrk settings as its ceiling.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import postgres, wrk
from bench.servers import Servers, metric, start_bare, start_collectors
from collector.store import open_store
from collector.tokens import hash_token, new_token
from fleetsim.enroll import enroll_into_store
from fleetsim.fleet import HeartbeatBodies, VirtualAgent
from fleetsim.load import LoadPlan, run_load
from fleetsim.people import find_lost, last_seen_by_machine

AGENTS = 100_000
SECONDS = 15.0
CONNECTIONS = 64


async def seed(db: str, count: int) -> tuple[list[VirtualAgent], str, float]:
    """`count` enrolled agents and an admin API token in the state `db` names; seconds taken."""
    store = await open_store(db)
    try:
        report = await enroll_into_store(store, "Bench Fleet", count, prefix="bench")
        token = new_token("api")
        await store.add_api_token(
            "bench-admin", "admin", hash_token(token), now=datetime.now(UTC), actor="bench"
        )
    finally:
        await store.close()
    return report.agents, token, report.seconds


def once_through(servers: Servers, tokens: Path, body: Path, count: int) -> None:
    """One `body` with each of the `count` tokens, to every process (wrk stops at its time)."""
    wrk.run(
        servers.urls,
        tokens,
        body,
        seconds=max(8.0, count / 4000),
        connections=CONNECTIONS,
        threads=2,
        once=True,
    )


def _warm(servers: Servers, tokens: Path, body: Path, count: int) -> float:
    """Every token through every process once, so each process's token cache is warm.

    wrk runs for a fixed time, so a pass that ends before every token went through is followed
    by another (tokens already cached go through fast).
    """
    started = time.perf_counter()
    before = [metric(url, "rmm_heartbeats_total") for url in servers.urls]
    for _ in range(4):
        once_through(servers, tokens, body, count)
        after = [metric(url, "rmm_heartbeats_total") for url in servers.urls]
        if all(a - b >= count for a, b in zip(after, before, strict=True)):
            return time.perf_counter() - started
    raise RuntimeError(f"warm-up did not reach {count} agents per process: {after}")


def _measure(servers: Servers, tokens: Path, body: Path, *, new_connection: bool) -> dict[str, Any]:
    cpu_before = servers.cpu_seconds()
    result = wrk.run(
        servers.urls,
        tokens,
        body,
        seconds=SECONDS,
        connections=CONNECTIONS,
        new_connection=new_connection,
    )
    figures: dict[str, Any] = result.as_dict()
    figures["server_cpu_cores"] = round((servers.cpu_seconds() - cpu_before) / result.seconds, 2)
    return figures


def _flush_figures(servers: Servers) -> dict[str, float]:
    total = sum(metric(u, "rmm_last_seen_flush_seconds_sum") for u in servers.urls)
    count = sum(metric(u, "rmm_last_seen_flush_seconds_count") for u in servers.urls)
    return {"flushes": count, "mean_flush_ms": round(1000 * total / count, 1) if count else 0.0}


def _bench(
    servers: Servers,
    tokens: Path,
    body: Path,
    *,
    warm: int,
    extra: Callable[[], Any] | None = None,
    new_connection: bool = True,
) -> dict[str, Any]:
    try:
        figures: dict[str, Any] = {"processes": len(servers.urls)}
        if warm:
            figures["warm_up_s"] = round(_warm(servers, tokens, body, warm), 1)
        figures["keep_alive"] = _measure(servers, tokens, body, new_connection=False)
        if new_connection:
            figures["new_connection"] = _measure(servers, tokens, body, new_connection=True)
        if warm:
            figures.update(_flush_figures(servers))
        figures["rss_mib"] = servers.rss_mib()
        if extra is not None:
            figures["fleetsim"] = extra()
        return figures
    finally:
        servers.stop()


async def _fleetsim_check(
    urls: list[str], agents: list[VirtualAgent], token: str
) -> dict[str, Any]:
    """The simulator through every instance at a steady rate, then its loss check."""
    plan = LoadPlan(collectors=urls, rate=4000, duration_s=10, connections=64, change_share=0.05)
    report = await run_load(plan, agents)
    await asyncio.sleep(2.5)  # a flush interval and then some
    seen = await last_seen_by_machine(urls[0], token)
    loss = find_lost(report.acknowledged, seen)
    return {
        "agents": len(agents),
        "rate_planned": plan.rate,
        "rate_achieved": round(report.rate),
        "p50_ms": round(report.percentile(0.5), 2),
        "p99_ms": round(report.percentile(0.99), 2),
        "errors": dict(report.errors),
        "agents_checked": loss.checked,
        "lost": len(loss.lost),
    }


def _write_tokens(path: Path, agents: list[VirtualAgent]) -> Path:
    path.write_text("".join(a.token + "\n" for a in agents))
    path.chmod(0o600)
    return path


def _attempt(results: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    """One scenario; a failure is recorded and the others still run."""
    try:
        results[name] = run()
    except Exception as exc:
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}


def main(workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {
        "agents": AGENTS,
        "seconds_per_run": SECONDS,
        "connections": CONNECTIONS,
    }
    sqlite_db = str(workdir / "bench.sqlite3")
    log(f"seeding {AGENTS:,} agents into SQLite")
    agents, _, took = asyncio.run(seed(sqlite_db, AGENTS))
    results["seed_sqlite_s"] = round(took, 1)
    tokens = _write_tokens(workdir / "tokens.txt", agents)
    body = workdir / "heartbeat.json"
    body.write_bytes(HeartbeatBodies(agents[:1], ["k-20260101-000000"]).steady(0))
    results["heartbeat_bytes"] = body.stat().st_size

    log("ceiling: a bare aiohttp handler, 1 process, then 2")
    _attempt(results, "bare_1", lambda: _bench(start_bare(1, workdir), tokens, body, warm=0))
    _attempt(results, "bare_2", lambda: _bench(start_bare(2, workdir), tokens, body, warm=0))

    log("collector on SQLite, 1 process")
    _attempt(
        results,
        "sqlite_1",
        lambda: _bench(
            start_collectors(sqlite_db, 1, workdir, tag="sqlite"), tokens, body, warm=AGENTS
        ),
    )

    server = postgres.server_url()
    postgres.ensure_running(server)
    pg_db = asyncio.run(postgres.create_database(server, "heartbeats"))
    try:
        log(f"seeding {AGENTS:,} agents into PostgreSQL")
        pg_agents, admin, took = asyncio.run(seed(pg_db, AGENTS))
        results["seed_postgres_s"] = round(took, 1)
        pg_tokens = _write_tokens(workdir / "pg-tokens.txt", pg_agents)
        log("collector on PostgreSQL, 1 process")
        _attempt(
            results,
            "postgres_1",
            lambda: _bench(
                start_collectors(pg_db, 1, workdir, tag="pg1"), pg_tokens, body, warm=AGENTS
            ),
        )
        log("collector on PostgreSQL, 2 processes (then the fleet simulator through both)")

        def pair() -> dict[str, Any]:
            servers = start_collectors(pg_db, 2, workdir, tag="pg2")
            return _bench(
                servers,
                pg_tokens,
                body,
                warm=AGENTS,
                extra=lambda: asyncio.run(_fleetsim_check(servers.urls, pg_agents, admin)),
            )

        _attempt(results, "postgres_2", pair)
    finally:
        asyncio.run(postgres.drop_database(server, pg_db))
    return results
