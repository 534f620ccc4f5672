"""The inventory as of an instant, on SQLite: each machine's JSON object written by SQLite.

Two streams, each over half of the table by rowid, on two reader connections that share one
snapshot (`SQLiteEngine._share_snapshot`): a batch is one SQLite step with the GIL let go, so
the two use both cores. Each keeps its next batch in flight while the caller writes out the
current one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from wire.times import to_micros

if TYPE_CHECKING:
    from collector.store.sqlite.engine import Worker


def _json_instant(column: str) -> str:
    """SQL writing the instant in `column` (microseconds) as a JSON string, as the collector
    writes instants everywhere: `"2026-11-01T00:00:00Z"`, six fraction digits when there is a
    fraction. NULL stays NULL."""
    seconds = f"{column} / 1000000, 'unixepoch'"
    return (
        f"CASE WHEN {column} % 1000000 = 0 THEN strftime('\"%Y-%m-%dT%H:%M:%SZ\"', {seconds}) "
        f"ELSE strftime('\"%Y-%m-%dT%H:%M:%S.', {seconds}) "
        f"|| substr({column} % 1000000 + 1000000, 2) || 'Z\"' END"
    )


def _inventory_object(hostname: str, kind: str, components: str) -> str:
    """SQL writing one inventory object, in one allocation, from the row `i` and the facts
    columns named. Machine and client ids are UUIDs the collector made and kind is `pc` or
    `server`: only the hostname needs escaping; components are stored as JSON."""
    return (
        'printf(\'{"machine_id":"%s","client_id":"%s","hostname":%s,'
        '"kind":"%s","first_seen":%s,"last_seen":%s,"offboarded_at":%s,'
        '"moved_at":%s,"moved_to_client_id":%s,"pending_kind":%s,"components":%s}\', '
        f"i.machine_id, i.client_id, json_quote({hostname}), {kind}, "
        f"{_json_instant('i.first_seen')}, "
        f"CASE WHEN i.last_seen = :as_of THEN :as_of_json ELSE {_json_instant('i.last_seen')} END, "
        f"COALESCE({_json_instant('i.offboarded_at')}, 'null'), "
        f"COALESCE({_json_instant('i.moved_at')}, 'null'), "
        "CASE WHEN i.moved_at IS NULL THEN 'null' ELSE json_quote(i.moved_to_client_id) END, "
        "json_quote(i.pending_kind), "
        f"{components})"
    )


# Fast path, as in the PostgreSQL store: the machine row holds the current coverage period
# (from `first_seen`), the current run of presence (from `presence_start`) and the facts in
# force since `facts_since`. When each began before `as_of`, the row answers; only the rest
# look back into `coverage`, `presence` or `facts` (CASE evaluates just the branch taken).
# Rows come in storage (rowid) order: one sequential pass over the table, where the
# machine_id index would visit it at random.
_INVENTORY_ROWS_SQL = """
    SELECT m.rowid AS position, m.machine_id, m.client_id, m.hostname, m.kind, m.components,
        m.pending_kind,
        m.facts_since,
        CASE WHEN m.first_seen < :as_of THEN m.first_seen
             ELSE (SELECT MAX(c.first_seen) FROM coverage c WHERE c.machine_id = m.machine_id
                   AND c.first_seen < :as_of) END AS first_seen,
        CASE WHEN m.presence_start <= :as_of THEN MIN(m.last_seen, :as_of)
             ELSE (SELECT MIN(p.end_at, :as_of) FROM presence p
                   WHERE p.machine_id = m.machine_id AND p.start_at <= :as_of
                   ORDER BY p.start_at DESC LIMIT 1) END AS last_seen,
        CASE WHEN m.first_seen < :as_of
             THEN CASE WHEN m.offboarded_at <= :as_of THEN m.offboarded_at END
             ELSE (SELECT CASE WHEN c.offboarded_at <= :as_of THEN c.offboarded_at END
                   FROM coverage c WHERE c.machine_id = m.machine_id
                   AND c.first_seen < :as_of ORDER BY c.first_seen DESC LIMIT 1) END
            AS offboarded_at,
        CASE WHEN m.first_seen < :as_of
             THEN CASE WHEN m.moved_at <= :as_of THEN m.moved_at END
             ELSE (SELECT CASE WHEN c.moved_at <= :as_of THEN c.moved_at END
                   FROM coverage c WHERE c.machine_id = m.machine_id
                   AND c.first_seen < :as_of ORDER BY c.first_seen DESC LIMIT 1) END
            AS moved_at,
        CASE WHEN m.first_seen < :as_of THEN m.moved_to_client_id
             ELSE (SELECT c.moved_to_client_id FROM coverage c
                   WHERE c.machine_id = m.machine_id AND c.first_seen < :as_of
                   ORDER BY c.first_seen DESC LIMIT 1) END AS moved_to_client_id
    FROM machines m
    WHERE m.rowid > :after AND m.rowid <= :upto
      AND (m.first_seen < :as_of OR EXISTS (SELECT 1 FROM coverage c
           WHERE c.machine_id = m.machine_id AND c.first_seen < :as_of))
    ORDER BY m.rowid
    LIMIT :limit
"""

# One batch of those rows as one string of JSON objects, written by SQLite in a single step
# of the aggregate, during which the sqlite3 module lets go of the GIL. The facts in force at
# as_of come from the row, or else from one look-up into `facts` that writes the whole object
# (a machine with no facts by then yields NULL, which the aggregate skips). COUNT(*) counts
# the rows read, so a batch shorter than the limit is the last. The text comes back as a BLOB:
_INVENTORY_JSON_SQL = f"""
    SELECT CAST(group_concat(
            CASE WHEN i.facts_since <= :as_of
            THEN {_inventory_object("i.hostname", "i.kind", "i.components")}
            ELSE (SELECT {_inventory_object("f.hostname", "f.kind", "f.components")}
                  FROM facts f WHERE f.machine_id = i.machine_id AND f.valid_from <= :as_of
                  ORDER BY f.valid_from DESC LIMIT 1) END, ',') AS BLOB),
        MAX(i.position), COUNT(*)
    FROM ({_INVENTORY_ROWS_SQL}) i
"""


async def stream(
    workers: Sequence[Worker], as_of: datetime, *, batch_size: int
) -> AsyncGenerator[bytes, None]:
    """Batches of JSON objects joined by commas, read on `workers[0]` and `workers[1]`, each
    already inside its read transaction."""
    as_of_json = msgspec.json.encode(as_of).decode()
    params: dict[str, Any] = {"as_of": to_micros(as_of), "as_of_json": as_of_json}

    def batch(worker: Worker, after: int, upto: int) -> tuple[int | None, bytes]:
        """The batch after rowid `after`, and the rowid to continue from (None: done)."""
        objects, last, count = worker.conn.execute(
            _INVENTORY_JSON_SQL, {**params, "after": after, "upto": upto, "limit": batch_size}
        ).fetchone()
        return (last if count == batch_size else None), objects or b""

    def fetch(worker: Worker, after: int, upto: int) -> asyncio.Future[tuple[int | None, bytes]]:
        return asyncio.ensure_future(worker.call(lambda: batch(worker, after, upto)))

    first, second = workers
    low, high = await first.call(
        lambda: first.conn.execute("SELECT MIN(rowid) - 1, MAX(rowid) FROM machines").fetchone()
    )
    if high is None:
        return
    middle = (low + high) // 2
    ahead = {
        fetch(first, low, middle): (first, middle),
        fetch(second, middle, high): (second, high),
    }
    try:
        while ahead:
            done, _ = await asyncio.wait(ahead, return_when=asyncio.FIRST_COMPLETED)
            for fetched in done:
                worker, upto = ahead.pop(fetched)
                resume, chunk = fetched.result()
                if resume is not None:
                    ahead[fetch(worker, resume, upto)] = (worker, upto)
                if chunk:
                    yield chunk
    finally:
        for fetching in ahead:
            fetching.cancel()
        for fetching in ahead:
            with contextlib.suppress(asyncio.CancelledError):
                await fetching
