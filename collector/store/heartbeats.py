"""Heartbeats and agent events.

Heartbeats are acknowledged from memory and written about once a second by the last-seen flush
(`collector.buffer`, `collector.background`), whose SQL is each engine's own: it is the hot path
(see `collector.store.sqlite.flush` and `collector.store.postgres.flush`). Both apply the rule in
`collector.rules.presence` set-based, and the shared store tests hold them to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from collector.store.part import StorePart
from collector.store.records import AgentEvent, AgentIdentity, HeartbeatRecord
from collector.store.sql import Tx

_EVENTS_PER_STATEMENT = 100


class Heartbeats(StorePart):
    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None:
        if batch:
            await self._engine.apply_heartbeats(batch, gap_s=gap_s)

    async def record_events(
        self, identity: AgentIdentity, events: Sequence[AgentEvent], *, now: datetime
    ) -> int:
        """Events already recorded (same machine and event id) are skipped: the agent may
        send a spooled batch twice. Returns how many were new."""
        if not events:
            return 0

        async def run(tx: Tx) -> int:
            added = 0
            for start in range(0, len(events), _EVENTS_PER_STATEMENT):
                chunk = events[start : start + _EVENTS_PER_STATEMENT]
                values = [
                    value
                    for e in chunk
                    for value in (
                        identity.machine_id,
                        e.event_id,
                        identity.agent_id,
                        e.at,
                        now,
                        e.type,
                        e.detail_json,
                    )
                ]
                rows = await tx.fetch(
                    "INSERT INTO agent_events (machine_id, event_id, agent_id, at, received_at, "
                    "type, detail) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                    + " ON CONFLICT (machine_id, event_id) DO NOTHING RETURNING 1",
                    *values,
                )
                added += len(rows)
            return added

        return await self._engine.write(run)

    async def events_received_since(self, machine_id: str, since: datetime) -> int:
        row = await self._engine.fetchrow(
            "SELECT COUNT(*) FROM agent_events WHERE machine_id = ? AND received_at >= ?",
            machine_id,
            since,
        )
        return 0 if row is None else int(row[0])

    async def list_events(self, machine_id: str, *, limit: int) -> list[AgentEvent]:
        d = self.dialect
        rows = await self._engine.fetch(
            "SELECT event_id, at, type, detail FROM agent_events WHERE machine_id = ? "
            "ORDER BY at DESC, event_id LIMIT ?",
            machine_id,
            limit,
        )
        return [AgentEvent(r[0], d.instant(r[1]), r[2], r[3]) for r in rows]
