"""`GET /v1/inventory?as_of=<cutoff>` over 1,000,000 machines: time to the last byte, collector RSS.

The fleet has a month of history: 100 clients enrolled over the 40 days before the cutoff (one
after it), most machines seen just before the cutoff and some again after it (new runs of
presence), components reported and, for half of those seen again, changed after the cutoff
(facts the inventory must look up as they stood), some machines dark for over 30 days (expired)
and some offboarded. Machines are enrolled in bulk and their heartbeats written through the
store's own flush, so the history is what a running collector would have recorded.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from bench import postgres
from bench.servers import start_collectors
from collector.store import open_store
from collector.store.base import (
    AgentIdentity,
    CommandResultRecord,
    HeartbeatRecord,
    OffboardRequestRecord,
    Store,
)
from collector.tokens import hash_token, new_token
from fleetsim.enroll import enroll_into_store
from fleetsim.fleet import components
from wire.times import format_instant

MACHINES = 1_000_000
CLIENTS = 100
OFFBOARDED = 500
GAP_S = 180.0
# A month in which an update rolls out: half the machines seen again after the cutoff report
# changed components, so an inventory as of the cutoff looks their facts up as they stood.
CHANGED_AFTER_CUTOFF = 0.5
TARGET_SECONDS = 5.0


def cutoff_before(now: datetime) -> datetime:
    """The latest 1st of a month at 00:00 UTC at least two days back."""
    moment = now - timedelta(days=2)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _components_json(index: int, rng: random.Random, flip: float) -> str:
    reported = sorted(components(index, rng, flip), key=lambda c: c.name)
    return msgspec.json.encode(reported).decode()


async def build_fleet(store: Store, cutoff: datetime, log: Callable[[str], None]) -> dict[str, Any]:
    rng = random.Random(2026)
    per_client = MACHINES // CLIENTS
    identities: list[AgentIdentity] = []
    started = time.perf_counter()
    for k in range(CLIENTS):
        # 99 clients enrolled over the 40 days before the cutoff, the last one a day after it
        enrolled = (
            cutoff + timedelta(days=1)
            if k == CLIENTS - 1
            else cutoff - timedelta(days=40) + timedelta(hours=9 * k)
        )
        report = await enroll_into_store(
            store, f"Client {k:03d}", per_client, prefix=f"c{k:03d}", now=enrolled, chunk=10_000
        )
        identities += [
            AgentIdentity(a.agent_id, a.machine_id, report.client_id or "") for a in report.agents
        ]
    enrolled_s = time.perf_counter() - started
    log(f"  enrolled {len(identities):,} machines in {enrolled_s:.0f} s")

    started = time.perf_counter()
    # Each machine reports its own steady components (by its position in the fleet) until the
    # cutoff; after it, CHANGED_AFTER_CUTOFF of the machines seen again report a change.
    steady = [_components_json(i, rng, 0.0) for i in range(3)]
    before, after = cutoff - timedelta(hours=3), cutoff + timedelta(days=1)
    early = identities[: per_client * (CLIENTS - 1)]
    seen_before = [(i, a) for i, a in enumerate(early) if i % 20 != 0]  # 1 in 20 dark: expired
    seen_after = [(i, a) for n, (i, a) in enumerate(seen_before) if n % 5 < 3]  # 60% back
    every = round(1 / CHANGED_AFTER_CUTOFF)
    changed_after = 0
    for batch_start in range(0, len(seen_before), 50_000):
        batch = [
            HeartbeatRecord(
                a.machine_id,
                before - timedelta(minutes=20),
                before,
                None,
                None,
                None,
                steady[i % 3],
            )
            for i, a in seen_before[batch_start : batch_start + 50_000]
        ]
        await store.apply_heartbeats(batch, gap_s=GAP_S)
    for batch_start in range(0, len(seen_after), 50_000):
        batch = []
        for n, (i, a) in enumerate(seen_after[batch_start : batch_start + 50_000]):
            report_json = steady[i % 3]
            if (batch_start + n) % every == 0:
                report_json = _components_json(i, rng, 1.0)
            changed_after += report_json != steady[i % 3]
            batch.append(HeartbeatRecord(a.machine_id, after, after, None, None, None, report_json))
        await store.apply_heartbeats(batch, gap_s=GAP_S)
    history_s = time.perf_counter() - started
    log(
        f"  wrote {len(seen_before) + len(seen_after):,} heartbeats of history in {history_s:.0f} s"
    )

    for _, a in seen_before[:OFFBOARDED]:
        command, _ = await store.request_offboard(
            OffboardRequestRecord(a.machine_id, "bench", "returned", None),
            now=cutoff - timedelta(days=5),
        )
        await store.record_command_result(
            a,
            CommandResultRecord(command.command_id, "succeeded", None, "[]"),
            now=cutoff - timedelta(days=4),
        )
    return {
        "machines": len(identities),
        "clients": CLIENTS,
        "enrolled_after_cutoff": per_client,
        "expired_at_cutoff": len(early) - len(seen_before),
        "seen_again_after_cutoff": len(seen_after),
        "facts_changed_after_cutoff": changed_after,
        "offboarded": OFFBOARDED,
        "enroll_s": round(enrolled_s, 1),
        "history_s": round(history_s, 1),
    }


async def _prepare(
    db: str, cutoff: datetime, log: Callable[[str], None]
) -> tuple[dict[str, Any], str]:
    store = await open_store(db)
    try:
        fleet = await build_fleet(store, cutoff, log)
        token = new_token("api")
        await store.add_api_token(
            "bench-billing", "billing", hash_token(token), now=datetime.now(UTC), actor="bench"
        )
    finally:
        await store.close()
    return fleet, token


def fetch_inventory(url: str, token: str, as_of: datetime) -> dict[str, Any]:
    query = urllib.parse.urlencode({"as_of": format_instant(as_of)})
    request = urllib.request.Request(
        f"{url}/v1/inventory?{query}", headers={"Authorization": f"Bearer {token}"}
    )
    started = time.perf_counter()
    size = rows = 0
    first_byte = None
    tail = b""
    with urllib.request.urlopen(request, timeout=600) as response:
        while chunk := response.read(1 << 20):
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
            rows += (tail + chunk).count(b'"machine_id"')
            tail = chunk[-16:]
            rows -= tail.count(b'"machine_id"')
    rows += tail.count(b'"machine_id"')
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "first_byte_s": round(first_byte or 0.0, 3),
        "machines": rows,
        "mib": round(size / 2**20, 1),
    }


async def _vacuum(db: str) -> None:
    """What autovacuum does within minutes of a bulk load: statistics and visibility maps."""
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


def measure(db: str, label: str, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    cutoff = cutoff_before(datetime.now(UTC))
    log(f"building 1,000,000 machines of history ({label}), cutoff {format_instant(cutoff)}")
    fleet, token = asyncio.run(_prepare(db, cutoff, log))
    if db.startswith("postgresql://"):
        asyncio.run(_vacuum(db))
        fleet["vacuumed"] = True
    servers = start_collectors(db, 1, workdir, tag=f"inventory-{label}")
    try:
        rss_idle = servers.rss_mib()[0]
        runs = {}
        for name, as_of in (("as_of_cutoff", cutoff), ("as_of_now", datetime.now(UTC))):
            log(f"  GET /v1/inventory {name}")
            runs[name] = fetch_inventory(servers.urls[0], token, as_of)
        peak = servers.peak_rss_mib()[0]
    finally:
        servers.stop()
    return {
        "fleet": fleet,
        "cutoff": format_instant(cutoff),
        **runs,
        "collector_rss_idle_mib": rss_idle,
        "collector_peak_rss_mib": peak,
        "target_seconds": TARGET_SECONDS,
    }


def main(workdir: Path, log: Callable[[str], None] = print, sqlite: bool = True) -> dict[str, Any]:
    results: dict[str, Any] = {}
    server = postgres.server_url()
    postgres.ensure_running(server)
    db = asyncio.run(postgres.create_database(server, "inventory"))
    try:
        results["postgres"] = measure(db, "postgres", workdir, log)
    finally:
        asyncio.run(postgres.drop_database(server, db))
    if sqlite:
        results["sqlite"] = measure(str(workdir / "inventory.sqlite3"), "sqlite", workdir, log)
    return results
