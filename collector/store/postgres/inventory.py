"""The inventory as of an instant, on PostgreSQL: each machine's JSON object written by the
server, from one consistent snapshot shared by two server processes."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from collector.store.records import StoreError

# Server processes computing one inventory together (each over a share of the table).
_INVENTORY_STREAMS = 2
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")

# to_char formats writing `"2026-11-01T00:00:00Z"`: to to_char `\"` is a literal quote and
# `"T"` literal text. Escape-string literals (E'...') read the same whatever the server's
# standard_conforming_strings says.
_WHOLE_SECOND = r"""E'\\"YYYY-MM-DD"T"HH24:MI:SS"Z\\"'"""
_FRACTION = r"""E'\\"YYYY-MM-DD"T"HH24:MI:SS.US"Z\\"'"""


def _json_instant(column: str) -> str:
    """SQL writing the instant in `column` as a JSON string in UTC (`"2026-11-01T00:00:00Z"`, six
    fraction digits when there is a fraction), with one `to_char` call; NULL stays NULL."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {utc}) = {utc} THEN to_char({utc}, {_WHOLE_SECOND}) "
        f"ELSE to_char({utc}, {_FRACTION}) END"
    )


# Each machine as it stood at $1. The machine row holds the current coverage period
# (`first_seen`, `offboarded_at`), the current run of presence (`presence_start` ..
# `last_seen`) and the facts in force since `facts_since`: when each began before $1, the row
# answers alone. Only what changed after $1 is looked up in the history tables (a one-time
# filter in each lateral subquery skips the lookup otherwise). Rows come in storage order:
# one sequential pass, whatever the fleet's size.
INVENTORY_ROWS_SQL = """
    SELECT m.machine_id, m.client_id, m.pending_kind,
        CASE WHEN m.facts_since <= $1 THEN m.hostname ELSE f.hostname END AS hostname,
        CASE WHEN m.facts_since <= $1 THEN m.kind ELSE f.kind END AS kind,
        CASE WHEN m.first_seen < $1 THEN m.first_seen ELSE c.first_seen END AS first_seen,
        CASE WHEN m.presence_start <= $1 THEN LEAST(m.last_seen, $1)
             ELSE LEAST(p.end_at, $1) END AS last_seen,
        CASE WHEN m.first_seen < $1
             THEN CASE WHEN m.offboarded_at <= $1 THEN m.offboarded_at END
             ELSE CASE WHEN c.offboarded_at <= $1 THEN c.offboarded_at END END
            AS offboarded_at,
        CASE WHEN m.first_seen < $1
             THEN CASE WHEN m.moved_at <= $1 THEN m.moved_at END
             ELSE CASE WHEN c.moved_at <= $1 THEN c.moved_at END END
            AS moved_at,
        CASE WHEN m.first_seen < $1 THEN m.moved_to_client_id ELSE c.moved_to_client_id END
            AS moved_to_client_id,
        CASE WHEN m.facts_since <= $1 THEN m.components ELSE f.components END AS components
    FROM machines m
    LEFT JOIN LATERAL (
        SELECT first_seen, offboarded_at, moved_at, moved_to_client_id FROM coverage
        WHERE m.first_seen >= $1
          AND coverage.machine_id = m.machine_id AND coverage.first_seen < $1
        ORDER BY coverage.first_seen DESC LIMIT 1) c ON true
    LEFT JOIN LATERAL (
        SELECT hostname, kind, components FROM facts
        WHERE m.facts_since > $1
          AND facts.machine_id = m.machine_id AND facts.valid_from <= $1
        ORDER BY facts.valid_from DESC LIMIT 1) f ON true
    LEFT JOIN LATERAL (
        SELECT end_at FROM presence
        WHERE m.presence_start > $1
          AND presence.machine_id = m.machine_id AND presence.start_at <= $1
        ORDER BY presence.start_at DESC LIMIT 1) p ON true
    WHERE (m.first_seen < $1 OR c.first_seen IS NOT NULL)
      AND (m.facts_since <= $1 OR f.hostname IS NOT NULL)
"""


def _inventory_json_sql(rows_sql: str) -> str:
    """Each row of `rows_sql` as its JSON object, written by the server process, so the
    collector handles one string per machine rather than eight typed values. One `concat`
    builds it (one allocation, where each `||` copied the string so far). Machine and client
    ids are UUIDs the collector made and kind is `pc` or `server`: only the hostname needs
    escaping, and components are stored as JSON. Instants are written as the collector writes
    them everywhere; most machines were present at $1, whose text is $2. Each object comes as
    UTF-8 bytes (bytea), which the collector joins and sends without decoding them first."""
    return f"""
        SELECT convert_to(concat('{{"machine_id":"', i.machine_id,
            '","client_id":"', i.client_id,
            '","hostname":', to_json(i.hostname), ',"kind":"', i.kind,
            '","first_seen":', {_json_instant("i.first_seen")},
            ',"last_seen":', CASE WHEN i.last_seen = $1 THEN $2::text
                             ELSE {_json_instant("i.last_seen")} END,
            ',"offboarded_at":', COALESCE({_json_instant("i.offboarded_at")}, 'null'),
            ',"moved_at":', COALESCE({_json_instant("i.moved_at")}, 'null'),
            ',"moved_to_client_id":', CASE WHEN i.moved_at IS NULL THEN 'null'
                                      ELSE to_json(i.moved_to_client_id)::text END,
            ',"pending_kind":', CASE WHEN i.pending_kind IS NULL THEN 'null'
                                ELSE '"' || i.pending_kind || '"' END,
            ',"components":', i.components, '}}'), 'UTF8')
        FROM ({rows_sql}) i
    """


async def stream(pool: Any, as_of: datetime, *, batch_size: int) -> AsyncGenerator[bytes, None]:
    """Batches of the inventory, from one consistent snapshot.

    Two server processes compute it, each over half of the table (by storage position, a
    TID range scan), in two transactions that share one exported snapshot; each fetches its
    next batch while the caller writes out the current one, so the query's time overlaps
    with the caller's. Rows come in storage order: one sequential pass, whatever the size.
    """
    as_of_json = msgspec.json.encode(as_of).decode()
    parts = min(_INVENTORY_STREAMS, pool.get_max_size())
    async with contextlib.AsyncExitStack() as stack:
        cursors = []
        snapshot = ""
        pages = 0
        for part in range(parts):
            conn = await stack.enter_async_context(pool.acquire())
            await stack.enter_async_context(
                conn.transaction(isolation="repeatable_read", readonly=True)
            )
            if part == 0:
                snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
                if not _SNAPSHOT_ID.fullmatch(snapshot):
                    raise StoreError(f"unexpected snapshot id {snapshot!r}")
                pages = int(
                    await conn.fetchval(
                        "SELECT pg_relation_size('machines') / "
                        "current_setting('block_size')::bigint"
                    )
                )
            else:
                await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            rows_sql, bounds = INVENTORY_ROWS_SQL, []
            if parts > 1:
                bounds.append((pages * part // parts, 0))
                rows_sql += " AND m.ctid >= $3::tid"
            if part < parts - 1:
                bounds.append((pages * (part + 1) // parts, 0))
                rows_sql += " AND m.ctid < $4::tid"
            cursors.append(
                await conn.cursor(_inventory_json_sql(rows_sql), as_of, as_of_json, *bounds)
            )
        ahead: dict[asyncio.Future[list[Any]], Any] = {
            asyncio.ensure_future(cursor.fetch(batch_size)): cursor for cursor in cursors
        }
        try:
            while ahead:
                done, _ = await asyncio.wait(ahead, return_when=asyncio.FIRST_COMPLETED)
                for fetched in done:
                    cursor = ahead.pop(fetched)
                    rows = fetched.result()
                    if len(rows) == batch_size:
                        ahead[asyncio.ensure_future(cursor.fetch(batch_size))] = cursor
                    if rows:
                        yield b",".join([r[0] for r in rows])
        finally:
            # Abandoned mid-stream: let the fetches in flight finish before the
            # transactions end and the connections go back to the pool.
            for fetching in ahead:
                fetching.cancel()
            for fetching in ahead:
                with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                    await fetching
