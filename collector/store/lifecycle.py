"""Time passing: the expiry sweep (`collector.rules.expiry`) and history retention
(`collector.rules.presence.oldest_kept`)."""

from __future__ import annotations

from datetime import datetime

from collector.rules.expiry import ExpiringMachine, expiry_record
from collector.store.part import AUDIT_INSERT, StorePart, audit_row
from collector.store.records import Compaction, StateWindows
from collector.store.sql import LOCK_FLUSH, LOCK_RETENTION, LOCK_SWEEP, Tx
from wire.times import EXPIRY

# (table, column of the instant each row starts at)
_HISTORY = (("presence", "start_at"), ("facts", "valid_from"), ("coverage", "first_seen"))


class Lifecycle(StorePart):
    async def probe_write(self, now: datetime) -> None:
        """Commit one small write: proof that the database takes writes right now."""

        async def run(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO store_health (id, written_at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                now,
            )

        await self._engine.write(run)

    async def expire_machines(self, windows: StateWindows) -> list[str]:
        """Record, once each, the machines that expired since the last sweep."""
        d = self.dialect
        now = windows.now

        async def run(tx: Tx) -> list[str]:
            if not await tx.try_lock(LOCK_SWEEP):
                return []  # another instance is sweeping right now; it records them
            # No flush runs meanwhile, so the sweep and a flush never wait for each other's rows.
            await tx.lock(LOCK_FLUSH)
            rows = await tx.fetch(
                f"UPDATE machines SET expired_at = {d.plus_interval('last_seen')} "
                "WHERE last_seen <= ? "
                "AND COALESCE(offboard_state, '') NOT IN ('offboarded', 'moved') "
                "AND (expired_at IS NULL OR expired_at <= last_seen) "
                "RETURNING machine_id, client_id, hostname, last_seen, offboard_state",
                EXPIRY,
                windows.expired_before,
            )
            expiring = sorted(
                (ExpiringMachine(r[0], r[1], r[2], d.instant(r[3]), r[4]) for r in rows),
                key=lambda m: m.machine_id,
            )
            await tx.executemany(
                AUDIT_INSERT, [audit_row(expiry_record(machine, now)) for machine in expiring]
            )
            return [machine.machine_id for machine in expiring]

        return await self._engine.write(run)

    async def compact_history(self, *, horizon_start: datetime) -> Compaction:
        """Drop the history rows no answer as of `horizon_start` or later can read: for each
        machine and table, those older than the last row that started before the horizon."""

        async def run(tx: Tx) -> Compaction:
            if not await tx.try_lock(LOCK_RETENTION):
                return Compaction()
            removed = {}
            for table, column in _HISTORY:
                removed[table] = await tx.execute(
                    f"DELETE FROM {table} WHERE {column} < ? AND {column} < "
                    f"(SELECT MAX(kept.{column}) FROM {table} kept "
                    f"WHERE kept.machine_id = {table}.machine_id AND kept.{column} < ?)",
                    horizon_start,
                    horizon_start,
                )
            # Agents' events are diagnostics, not history an answer reads: older ones go.
            removed["events"] = await tx.execute(
                "DELETE FROM agent_events WHERE received_at < ?", horizon_start
            )
            return Compaction(**removed)

        return await self._engine.write(run)
