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
        # Taken by a flush that has not committed yet: still only in memory.
        self._in_flight: dict[str, HeartbeatRecord] = {}

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
        clock_offset_ms: int | None = None,
        agent_version: str | None = None,
        users: list[str] | None = None,
    ) -> None:
        record = self._pending.get(machine_id)
        if record is None:
            self._pending[machine_id] = HeartbeatRecord(
                machine_id,
                at,
                at,
                hostname,
                os,
                kind,
                components_json,
                clock_offset_ms,
                agent_version,
                users,
            )
            return
        record.last_at = max(record.last_at, at)
        record.hostname = hostname if hostname is not None else record.hostname
        record.os = os if os is not None else record.os
        record.kind = kind if kind is not None else record.kind
        record.components_json = components_json
        if clock_offset_ms is not None:
            record.clock_offset_ms = clock_offset_ms
        if agent_version is not None:
            record.agent_version = agent_version
        if users is not None:
            record.users = users

    def take(self) -> list[HeartbeatRecord]:
        """Everything buffered so far; the buffer starts empty again. What is taken counts as
        in flight (`last_at`) until `committed` or `put_back`."""
        self._in_flight = self._pending
        self._pending = {}
        return list(self._in_flight.values())

    def committed(self) -> None:
        self._in_flight = {}

    def last_at(self, machine_id: str) -> datetime | None:
        """The latest heartbeat of a machine acknowledged but not yet in the database."""
        pending = self._pending.get(machine_id)
        flying = self._in_flight.get(machine_id)
        if pending is None:
            return None if flying is None else flying.last_at
        return pending.last_at if flying is None else max(pending.last_at, flying.last_at)

    def put_back(self, batch: list[HeartbeatRecord]) -> None:
        """A failed flush returns its records; newer heartbeats buffered meanwhile win."""
        self._in_flight = {}
        for record in batch:
            newer = self._pending.get(record.machine_id)
            if newer is None:
                self._pending[record.machine_id] = record
            else:
                newer.first_at = min(newer.first_at, record.first_at)
