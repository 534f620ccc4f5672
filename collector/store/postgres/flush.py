"""The last-seen flush on PostgreSQL: one statement per chunk of buffered heartbeats.

It applies `collector.rules.presence.closes_run` to every row at once. Flushes of all instances
take turns (a transaction-level advisory lock), so two never hold rows the other waits for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from collector.store.records import HeartbeatRecord
from collector.store.rows import users_text
from collector.store.sql import LOCK_FLUSH

# A flush writes this many machines per statement, so encoding one statement's arguments never
# holds the event loop for more than a few milliseconds.
_FLUSH_CHUNK = 2000

# The flush of one chunk of machines. The CTEs read the rows as they stood when the
# statement began; the UPDATE takes `last_seen` and `presence_start` from the row as it is when
# locked, so a concurrent enrollment is never undone. `newest` keeps a heartbeat flushed late
# by another instance from overwriting newer facts, and `fresh` one older than the facts the
# row holds (checked again on the locked row); `last_seen` never moves backwards.
_APPLY_SQL = """
    WITH b AS (
        SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[],
                             $4::text[], $5::text[], $6::text[], $7::text[], $9::integer[],
                             $10::text[], $11::text[])
            AS b(machine_id, first_at, last_at, hostname, os, kind, components, clock_offset_ms,
                 agent_version, users)
    ),
    cur AS MATERIALIZED (
        SELECT m.machine_id, m.presence_start, m.last_seen, b.first_at, b.last_at,
               b.first_at - m.last_seen > $8::interval AS new_run,
               b.last_at >= m.last_seen AS newest,
               -- Not older than the row's facts (an enrollment, a confirmed kind or a
               -- completed offboard may have written newer facts since it was received).
               b.last_at >= m.last_seen AND b.last_at >= m.facts_since AS fresh,
               m.hostname <> COALESCE(b.hostname, m.hostname)
                   OR m.os <> COALESCE(b.os, m.os)
                   OR m.components <> b.components AS changed,
               COALESCE(b.hostname, m.hostname) AS hostname,
               COALESCE(b.os, m.os) AS os,
               m.kind,
               -- A kind the agent reports is never the billed kind: it waits for an admin.
               CASE WHEN b.kind IS NULL THEN m.pending_kind
                    WHEN b.kind = m.kind THEN NULL ELSE b.kind END AS pending_kind,
               COALESCE(b.clock_offset_ms, m.clock_offset_ms) AS clock_offset_ms,
               COALESCE(b.agent_version, m.agent_version) AS agent_version,
               COALESCE(b.users, m.users) AS users,
               b.components
        FROM machines m JOIN b ON b.machine_id = m.machine_id
    ),
    closed_runs AS (
        INSERT INTO presence (machine_id, start_at, end_at)
        SELECT machine_id, presence_start, last_seen FROM cur WHERE new_run
        ON CONFLICT (machine_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at
    ),
    changed_facts AS (
        INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components)
        SELECT machine_id, last_at, hostname, os, kind, components FROM cur
        WHERE fresh AND changed
        ON CONFLICT (machine_id, valid_from) DO UPDATE SET hostname = EXCLUDED.hostname,
            os = EXCLUDED.os, kind = EXCLUDED.kind, components = EXCLUDED.components
    )
    UPDATE machines m SET
        presence_start = CASE WHEN cur.new_run THEN cur.first_at
                              ELSE LEAST(m.presence_start, cur.first_at) END,
        last_seen = GREATEST(m.last_seen, cur.last_at),
        hostname = CASE WHEN cur.fresh AND cur.last_at >= m.facts_since
                          THEN cur.hostname ELSE m.hostname END,
        os = CASE WHEN cur.fresh AND cur.last_at >= m.facts_since
                    THEN cur.os ELSE m.os END,
        pending_kind = CASE WHEN cur.newest THEN cur.pending_kind ELSE m.pending_kind END,
        clock_offset_ms = CASE WHEN cur.newest THEN cur.clock_offset_ms
                               ELSE m.clock_offset_ms END,
        agent_version = CASE WHEN cur.newest THEN cur.agent_version ELSE m.agent_version END,
        users = CASE WHEN cur.newest THEN cur.users ELSE m.users END,
        components = CASE WHEN cur.fresh AND cur.last_at >= m.facts_since
                            THEN cur.components ELSE m.components END,
        facts_since = CASE WHEN cur.fresh AND cur.changed AND cur.last_at >= m.facts_since
                           THEN cur.last_at
                           ELSE m.facts_since END
    FROM cur WHERE m.machine_id = cur.machine_id
"""


async def apply_heartbeats(conn: Any, batch: Sequence[HeartbeatRecord], gap: timedelta) -> None:
    """Runs inside one transaction on `conn` (an asyncpg connection)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_FLUSH)
    for start in range(0, len(batch), _FLUSH_CHUNK):
        chunk = batch[start : start + _FLUSH_CHUNK]
        await conn.execute(
            _APPLY_SQL,
            [r.machine_id for r in chunk],
            [r.first_at for r in chunk],
            [r.last_at for r in chunk],
            [r.hostname for r in chunk],
            [r.os for r in chunk],
            [r.kind for r in chunk],
            [r.components_json for r in chunk],
            gap,
            [r.clock_offset_ms for r in chunk],
            [r.agent_version for r in chunk],
            [users_text(r.users) for r in chunk],
        )
