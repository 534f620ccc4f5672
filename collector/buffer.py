"""Heartbeats coalesced in memory and written in one transaction about once a second.

The heartbeat hot path never waits for the database: it records the collector's receive time here.
A crash loses at most one flush interval of last-seen times, which the contract allows.
"""

from __future__ import annotations

from datetime import datetime

from collector.store.base import HeartbeatRecord


class HeartbeatBuffer:
    def __init__(self) -> None:
        self._pending: dict[str, HeartbeatRecord] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        machine_id: str,
        at: datetime,
        *,
        hostname: str | None,
        os: str | None,
        kind: str | None,
        components_json: str,
    ) -> None:
        record = self._pending.get(machine_id)
        if record is None:
            self._pending[machine_id] = HeartbeatRecord(
                machine_id, at, at, hostname, os, kind, components_json
            )
            return
        record.last_at = max(record.last_at, at)
        record.hostname = hostname if hostname is not None else record.hostname
        record.os = os if os is not None else record.os
        record.kind = kind if kind is not None else record.kind
        record.components_json = components_json

    def take(self) -> list[HeartbeatRecord]:
        """Everything buffered so far; the buffer starts empty again."""
        batch = list(self._pending.values())
        self._pending = {}
        return batch

    def put_back(self, batch: list[HeartbeatRecord]) -> None:
        """A failed flush returns its records; newer heartbeats buffered meanwhile win."""
        for record in batch:
            newer = self._pending.get(record.machine_id)
            if newer is None:
                self._pending[record.machine_id] = record
            else:
                newer.first_at = min(newer.first_at, record.first_at)
