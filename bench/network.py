"""Heartbeats with `network` sections on 1 in 15 against heartbeats without, on the same
collector process (SQLite one process, PostgreSQL one process).

Agents send a network section when it changes or every 15 minutes; with a heartbeat every
minute that is at most one heartbeat in fifteen. The collector must take them at the same rate
(target: within 5%). Each engine gets one collector, warmed once, then keep-alive runs in the
order plain, network, plain, network, plain, network, so the machine's drift (other load,
thermal) falls on both sides; the ratio compares the medians of requests per second, and
`cpu_ratio` the medians of the collector's CPU per request (without / with: below 1 is dearer),
which other load on a shared machine disturbs least. The network body is a small
office's: two own MACs, two addresses and 24 neighbours.

Each machine's section is written when it differs from the last one written or the UTC hour
turned, so of an agent's four sections an hour, one is written and three repeat. Two phases show
both: `first` (each section the first of its machine this hour, so every one is written: the
worst case, as in the hour after a restart) and then, after a pass that sent every agent's
section once, `repeat` (sections already written this hour). `hourly` mixes their CPU per
request as an hour has them (1 written, 3 repeated); the target applies to it.

`python -m bench --only network` runs this section alone (about four minutes).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bench import postgres, wrk
from bench.heartbeats import CONNECTIONS, _warm, _write_tokens, once_through, seed
from bench.servers import Servers, metric, start_collectors
from fleetsim.fleet import HeartbeatBodies

AGENTS = 20_000
SECONDS = 6.0
ROUNDS = 3
EVERY = 15
TARGET_RATIO = 0.95


def network_body(plain: bytes) -> bytes:
    """The plain heartbeat with an office's network section added."""
    body = msgspec.json.decode(plain)
    body["network"] = {
        "macs": ["3c:52:82:10:00:01", "3c:52:82:10:00:02"],
        "addresses": ["192.168.10.21", "fe80::3e52:82ff:fe10:1"],
        "neighbors": [
            {"ip": f"192.168.10.{i}", "mac": f"a4:83:e7:00:10:{i:02x}"} for i in range(1, 25)
        ],
    }
    return msgspec.json.encode(body)


def _keep_alive(
    servers: Servers, tokens: Path, body: Path, every: tuple[int, Path] | None
) -> dict[str, Any]:
    cpu_before = servers.cpu_seconds()
    result = wrk.run(
        servers.urls, tokens, body, seconds=SECONDS, connections=CONNECTIONS, every=every
    )
    figures: dict[str, Any] = result.as_dict()
    # CPU the collector spent per heartbeat (its flush included): what other load on the
    # machine changes least, so the steadiest figure on a busy host.
    cpu = servers.cpu_seconds() - cpu_before
    figures["cpu_us_per_request"] = round(1e6 * cpu / max(1, result.requests), 1)
    return figures


def _rounds(servers: Servers, tokens: Path, body: Path, network: Path) -> dict[str, Any]:
    """Plain and network runs, interleaved, and their medians."""
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "network": []}
    for _ in range(ROUNDS):
        runs["plain"].append(_keep_alive(servers, tokens, body, None))
        runs["network"].append(_keep_alive(servers, tokens, body, (EVERY, network)))
    figures: dict[str, Any] = {}
    for name, done in runs.items():
        figures[name] = done
        figures[f"{name}_per_second"] = round(statistics.median(r["per_second"] for r in done))
        figures[f"{name}_p99_ms"] = max(r["p99_ms"] for r in done)
        figures[f"{name}_cpu_us"] = statistics.median(r["cpu_us_per_request"] for r in done)
    figures["cpu_ratio"] = round(figures["plain_cpu_us"] / figures["network_cpu_us"], 3)
    figures["ratio"] = round(figures["network_per_second"] / figures["plain_per_second"], 3)
    return figures


def compare(servers: Servers, tokens: Path, body: Path, network: Path, warm: int) -> dict[str, Any]:
    try:
        figures: dict[str, Any] = {"warm_up_s": round(_warm(servers, tokens, body, warm), 1)}
        figures["first"] = first = _rounds(servers, tokens, body, network)
        once_through(servers, tokens, network, warm)  # every section written this hour
        figures["repeat"] = repeat = _rounds(servers, tokens, body, network)
        # An hour of a machine's four sections: one written, three repeated.
        plain = statistics.median([first["plain_cpu_us"], repeat["plain_cpu_us"]])
        sections = (first["network_cpu_us"] + 3 * repeat["network_cpu_us"]) / 4
        figures["plain_cpu_us"] = plain
        figures["hourly_network_cpu_us"] = round(sections, 1)
        figures["hourly_cpu_ratio"] = round(plain / sections, 3)
        figures["target_ratio"] = TARGET_RATIO
        figures["flushes"] = sum(
            metric(u, "rmm_last_seen_flush_seconds_count") for u in servers.urls
        )
        figures["rss_mib"] = servers.rss_mib()
        return figures
    finally:
        servers.stop()


def _attempt(results: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    try:
        results[name] = run()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}


def main(workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {"agents": AGENTS, "seconds_per_run": SECONDS, "every": EVERY}
    sqlite_db = str(workdir / "network.sqlite3")
    log(f"seeding {AGENTS:,} agents into SQLite")
    agents, _, _ = asyncio.run(seed(sqlite_db, AGENTS))
    tokens = _write_tokens(workdir / "network-tokens.txt", agents)
    plain = HeartbeatBodies(agents[:1], ["k-20260101-000000"]).steady(0)
    body = workdir / "network-plain.json"
    body.write_bytes(plain)
    network = workdir / "network-section.json"
    network.write_bytes(network_body(plain))
    results["bytes"] = {"plain": len(plain), "network": network.stat().st_size}
    log(f"SQLite, 1 process: without, then with a network section on 1 in {EVERY}")
    _attempt(
        results,
        "sqlite_1",
        lambda: compare(
            start_collectors(sqlite_db, 1, workdir, tag="net-sqlite"),
            tokens,
            body,
            network,
            AGENTS,
        ),
    )
    server = postgres.server_url()
    postgres.ensure_running(server)
    pg_db = asyncio.run(postgres.create_database(server, "network"))
    try:
        log(f"seeding {AGENTS:,} agents into PostgreSQL")
        pg_agents, _, _ = asyncio.run(seed(pg_db, AGENTS))
        pg_tokens = _write_tokens(workdir / "network-pg-tokens.txt", pg_agents)
        log(f"PostgreSQL, 1 process: without, then with a network section on 1 in {EVERY}")
        _attempt(
            results,
            "postgres_1",
            lambda: compare(
                start_collectors(pg_db, 1, workdir, tag="net-pg"), pg_tokens, body, network, AGENTS
            ),
        )
    finally:
        asyncio.run(postgres.drop_database(server, pg_db))
    return results
