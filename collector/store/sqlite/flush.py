"""The last-seen flush on SQLite: one set-based pass over a batch of buffered heartbeats.

It applies `collector.rules.presence.closes_run` to every row at once: a heartbeat further than
the online window from the machine's last one closes the current run of presence. Facts
(hostname, os, kind, components) get a new history row only when they change, and only from a
heartbeat newer than the machine row and its facts (an enrollment, a confirmed kind or a
completed offboard may have written newer facts since).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from collector.store.records import HeartbeatRecord
from collector.store.rows import users_text
from wire.times import to_micros

_FLUSH_CHUNK = 2_000
# A buffered heartbeat `b` changes what machine row `{m}` says (hostname, os omitted = kept; the
# kind an agent reports never changes the billed kind, see `pending_kind`).
_FACTS_CHANGED = (
    "{m}.hostname IS NOT COALESCE(b.hostname, {m}.hostname) "
    "OR {m}.os IS NOT COALESCE(b.os, {m}.os) OR {m}.components IS NOT b.components"
)


def apply_heartbeats(
    conn: sqlite3.Connection, batch: Sequence[HeartbeatRecord], gap_us: int
) -> None:
    """Runs on the writer's thread inside one transaction (`SQLiteEngine.write_sync`)."""
    # Set-based: the batch goes into a scratch table, one join with `machines` works out
    # everything each row needs (its rowid, whether a new run of presence starts, whether
    # its facts changed), and three statements apply that plan without joining again;
    # the machines are updated by rowid. Rows go in as multi-row VALUES, a few thousand
    # parameters bound in one call, so the writer thread takes the GIL a handful of
    # times per flush rather than once per row (the busy event loop holds it otherwise).
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS heartbeat_batch (machine_id TEXT PRIMARY KEY, "
        "first_at INTEGER, last_at INTEGER, hostname TEXT, os TEXT, kind TEXT, "
        "components TEXT, clock_offset_ms INTEGER, agent_version TEXT, users TEXT)"
    )
    conn.execute(
        # No key on rid: the update then walks the plan and finds each machine by
        # rowid, rather than scanning `machines` for rows in the plan.
        "CREATE TEMP TABLE IF NOT EXISTS heartbeat_plan (rid INTEGER, "
        "machine_id TEXT, presence_start INTEGER, last_seen INTEGER, first_at INTEGER, "
        "last_at INTEGER, hostname TEXT, os TEXT, pending_kind TEXT, components TEXT, "
        "clock_offset_ms INTEGER, agent_version TEXT, users TEXT, new_run INTEGER, "
        "newest INTEGER, changed INTEGER)"
    )
    # Ten parameters a row, within what this SQLite build binds in one statement.
    rows = min(_FLUSH_CHUNK, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 10)
    for start in range(0, len(batch), rows):
        chunk = batch[start : start + rows]
        values = [
            value
            for r in chunk
            for value in (
                r.machine_id,
                to_micros(r.first_at),
                to_micros(r.last_at),
                r.hostname,
                r.os,
                r.kind,
                r.components_json,
                r.clock_offset_ms,
                r.agent_version,
                users_text(r.users),
            )
        ]
        conn.execute(
            "INSERT OR REPLACE INTO temp.heartbeat_batch VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
            values,
        )
    conn.execute(
        "INSERT INTO temp.heartbeat_plan SELECT m.rowid, m.machine_id, m.presence_start, "
        "m.last_seen, b.first_at, b.last_at, COALESCE(b.hostname, m.hostname), "
        # A kind the agent reports is never the billed kind: it waits for an admin.
        "COALESCE(b.os, m.os), CASE WHEN b.kind IS NULL THEN m.pending_kind "
        "WHEN b.kind = m.kind THEN NULL ELSE b.kind END, b.components, "
        "COALESCE(b.clock_offset_ms, m.clock_offset_ms), "
        "COALESCE(b.agent_version, m.agent_version), COALESCE(b.users, m.users), "
        # A gap longer than the online window ends the current run of presence.
        "b.first_at - m.last_seen > ?, b.last_at >= m.last_seen, "
        # Facts change only from a heartbeat newer than the row and than its facts (an
        # enrollment, a confirmed kind or a completed offboard may have written newer facts
        # since the heartbeat was received).
        "b.last_at >= m.last_seen AND b.last_at >= m.facts_since "
        f"AND ({_FACTS_CHANGED.format(m='m')}) "
        "FROM temp.heartbeat_batch b JOIN machines m ON m.machine_id = b.machine_id",
        (gap_us,),
    )
    conn.execute(
        "INSERT OR REPLACE INTO presence (machine_id, start_at, end_at) "
        "SELECT machine_id, presence_start, last_seen FROM temp.heartbeat_plan "
        "WHERE new_run"
    )
    conn.execute(
        "INSERT OR REPLACE INTO facts (machine_id, valid_from, hostname, os, kind, "
        "components) SELECT p.machine_id, p.last_at, p.hostname, p.os, m.kind, p.components "
        "FROM temp.heartbeat_plan p JOIN machines m ON m.rowid = p.rid WHERE p.changed"
    )
    conn.execute(
        "UPDATE machines SET "
        # A heartbeat flushed late (by another process) may start the current run earlier.
        "presence_start = CASE WHEN p.new_run THEN p.first_at "
        "ELSE MIN(machines.presence_start, p.first_at) END, "
        "last_seen = MAX(machines.last_seen, p.last_at), "
        "hostname = CASE WHEN p.newest AND p.last_at >= machines.facts_since "
        "THEN p.hostname ELSE machines.hostname END, "
        "os = CASE WHEN p.newest AND p.last_at >= machines.facts_since "
        "THEN p.os ELSE machines.os END, "
        "pending_kind = CASE WHEN p.newest THEN p.pending_kind ELSE machines.pending_kind END, "
        "clock_offset_ms = CASE WHEN p.newest THEN p.clock_offset_ms "
        "ELSE machines.clock_offset_ms END, "
        "agent_version = CASE WHEN p.newest THEN p.agent_version "
        "ELSE machines.agent_version END, "
        "users = CASE WHEN p.newest THEN p.users ELSE machines.users END, "
        "components = CASE WHEN p.newest AND p.last_at >= machines.facts_since "
        "THEN p.components ELSE machines.components END, "
        "facts_since = CASE WHEN p.changed THEN p.last_at ELSE machines.facts_since END "
        "FROM temp.heartbeat_plan p WHERE machines.rowid = p.rid"
    )
    conn.execute("DELETE FROM temp.heartbeat_batch")
    conn.execute("DELETE FROM temp.heartbeat_plan")
