"""Network sections and the devices they reveal (see `collector.rules.network`).

Sections are buffered in memory and written by the last-seen flush, one transaction per flush
for every machine that sent one (`collector.network_buffer`): the heartbeat path never waits
for them. A machine's own MACs and addresses are replaced by its latest section; each device
gets one row per UTC day it was seen (`neighbor_days`), so the devices unmanaged as of any past
instant are known exactly, and a row per machine and day naming the devices it saw
(`neighbor_sets`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from collector.rules.clones import MacSwitch, clue_candidates, mac_switch
from collector.rules.network import (
    NetworkReport,
    SightingWindow,
    month_window,
    unmanaged_window,
)
from collector.store.clones import insert_suspicion
from collector.store.coverage_records import DeviceNotFound, DismissedDevice, UnmanagedDevice
from collector.store.part import StorePart
from collector.store.records import AuditEntry, Conflict, NotFound
from collector.store.sql import Row, Tx

_IN_CHUNK = 500
_DAY_UPSERT = (
    "INSERT INTO neighbor_days (client_id, mac, day, ip, first_at, last_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, mac, day) DO UPDATE SET "
    "ip = CASE WHEN excluded.last_at >= neighbor_days.last_at THEN excluded.ip "
    "ELSE neighbor_days.ip END, "
    "first_at = CASE WHEN excluded.first_at < neighbor_days.first_at THEN excluded.first_at "
    "ELSE neighbor_days.first_at END, "
    "last_at = CASE WHEN excluded.last_at > neighbor_days.last_at THEN excluded.last_at "
    "ELSE neighbor_days.last_at END"
)
_SET_UPSERT = (
    "INSERT INTO neighbor_sets (client_id, machine_id, day, digest, macs, first_at, last_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, day, machine_id, digest) DO UPDATE SET "
    "first_at = CASE WHEN excluded.first_at < neighbor_sets.first_at THEN excluded.first_at "
    "ELSE neighbor_sets.first_at END, "
    "last_at = CASE WHEN excluded.last_at > neighbor_sets.last_at THEN excluded.last_at "
    "ELSE neighbor_sets.last_at END"
)

# A MAC is managed as of the instant bound to the first three `?`: a machine enrolled by then,
# neither offboarded nor moved away by then, owns it.
_MANAGED = (
    "EXISTS (SELECT 1 FROM machine_macs mm JOIN machines m ON m.machine_id = mm.machine_id "
    "WHERE mm.mac = n.mac AND m.first_seen <= ? "
    "AND (m.offboarded_at IS NULL OR m.offboarded_at > ?) "
    "AND (m.moved_at IS NULL OR m.moved_at > ?))"
)
_DISMISSED = (
    "EXISTS (SELECT 1 FROM dismissed_devices dd WHERE dd.client_id = n.client_id "
    "AND dd.mac = n.mac AND dd.at <= ?)"
)


def _devices_sql(client_filter: str, *, dismissed: bool) -> str:
    """Devices seen within a window (`first_at` <= until, `last_at` > since, both exact
    sightings), managed ones left out; dismissed ones left out, or only those."""
    return (
        "SELECT n.client_id, n.mac, "
        "(SELECT b.ip FROM neighbor_days b WHERE b.client_id = n.client_id AND b.mac = n.mac "
        "AND b.first_at <= ? ORDER BY b.day DESC LIMIT 1), "
        "(SELECT MIN(a.first_at) FROM neighbor_days a WHERE a.client_id = n.client_id "
        "AND a.mac = n.mac), "
        # The latest sighting at or before `until`: a day row reaching past it was at least
        # seen at its first sighting.
        "MAX(CASE WHEN n.last_at <= ? THEN n.last_at ELSE n.first_at END) "
        f"FROM neighbor_days n WHERE {client_filter} n.day >= ? AND n.first_at <= ? "
        f"AND n.last_at > ? AND NOT {_MANAGED} AND {'' if dismissed else 'NOT '}{_DISMISSED} "
        "GROUP BY n.client_id, n.mac ORDER BY n.client_id, n.mac"
    )


def _devices_args(
    window: SightingWindow, client_id: str | None, *, dismissed_as_of: datetime | None = None
) -> list[object]:
    until = window.until
    return [
        until,
        until,
        *([client_id] if client_id is not None else []),
        window.first_day,
        until,
        window.since,
        until,
        until,
        until,
        dismissed_as_of or until,
    ]


def _day_rows(batch: Sequence[NetworkReport]) -> list[tuple[object, ...]]:
    """One row per device and day for the whole batch (many machines of an office see the
    same devices): first and last sighting, and the address of the last."""
    days: dict[tuple[str, str, int], list[Any]] = {}
    for r in batch:
        day, at, client_id = r.day, r.at, r.client_id
        for mac, ip in r.neighbors:
            seen = days.get((client_id, mac, day))
            if seen is None:
                days[(client_id, mac, day)] = [ip, at, at]
            elif at >= seen[2]:
                seen[0], seen[2] = ip, at
            elif at < seen[1]:
                seen[1] = at
    return [(c, mac, day, *row) for (c, mac, day), row in days.items()]


def _set_row(r: NetworkReport) -> tuple[object, ...]:
    """The machine's devices of the day as one row (MACs joined by commas), named by a digest
    stable across processes."""
    macs = ",".join(mac for mac, _ in r.neighbors)
    digest = hashlib.blake2b(macs.encode(), digest_size=8).hexdigest()
    return (r.client_id, r.machine_id, r.day, digest, macs, r.at, r.at)


class Network(StorePart):
    async def apply_network(self, batch: Sequence[NetworkReport]) -> None:
        """Write the latest network section of each machine in `batch`, in one transaction."""
        if not batch:
            return

        async def run(tx: Tx) -> None:
            before = await self._watch_mac_switches(tx, batch)
            # A machine's own MACs rarely change: rewritten only when they did.
            moved = [
                r for r in batch if not r.own_macs or before.get(r.machine_id) != set(r.own_macs)
            ]
            await tx.executemany(
                "DELETE FROM machine_macs WHERE machine_id = ?", [(r.machine_id,) for r in moved]
            )
            await tx.executemany(
                "INSERT INTO machine_macs (machine_id, mac) VALUES (?, ?) "
                "ON CONFLICT (machine_id, mac) DO NOTHING",
                [(r.machine_id, mac) for r in moved for mac in r.own_macs],
            )
            await self._store_addresses(tx, batch)
            await tx.executemany(_DAY_UPSERT, _day_rows(batch))
            await tx.executemany(_SET_UPSERT, [_set_row(r) for r in batch if r.neighbors])

        await self._engine.write(run)

    async def _store_addresses(self, tx: Tx, batch: Sequence[NetworkReport]) -> None:
        """A machine's own addresses (one per line) rarely change: read for the whole batch,
        rewritten only for the machines whose addresses did."""
        latest = {r.machine_id: "\n".join(r.addresses) for r in batch}  # the last one wins
        stored: dict[str, str | None] = {}
        ids = list(latest)
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for machine_id, addresses in await tx.fetch(
                f"SELECT machine_id, addresses FROM machines WHERE machine_id IN ({marks})", *chunk
            ):
                stored[machine_id] = addresses
        changed = [
            (text, machine_id)
            for machine_id, text in latest.items()
            if machine_id in stored and stored[machine_id] != text
        ]
        await tx.executemany("UPDATE machines SET addresses = ? WHERE machine_id = ?", changed)

    async def compact_sightings(self, *, horizon_start: datetime) -> int:
        """Drop sightings no answer as of `horizon_start` or later reads (those 30 days and a
        day before it); a device's `first_seen` then reaches back that far at most."""
        oldest_day = unmanaged_window(horizon_start).first_day - 1

        async def run(tx: Tx) -> int:
            removed = 0
            for table in ("neighbor_days", "neighbor_sets"):
                removed += await tx.execute(f"DELETE FROM {table} WHERE day < ?", oldest_day)
            return removed

        return await self._engine.write(run)

    async def _watch_mac_switches(
        self, tx: Tx, batch: Sequence[NetworkReport]
    ) -> dict[str, set[str]]:
        """A machine whose own MACs switch back to those of before (two hosts behind one
        credential taking turns) is flagged `clone_suspected` (`collector.rules.clones`).
        Returns the MACs stored before, of the machines in `batch` that reported some."""
        d = self.dialect
        before: dict[str, set[str]] = {}
        switches: dict[str, MacSwitch] = {}
        ids = [r.machine_id for r in batch if r.own_macs]
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for machine_id, mac in await tx.fetch(
                f"SELECT machine_id, mac FROM machine_macs WHERE machine_id IN ({marks})", *chunk
            ):
                before.setdefault(machine_id, set()).add(mac)
            for machine_id, at, from_macs, to_macs in await tx.fetch(
                "SELECT machine_id, at, from_macs, to_macs FROM mac_switches "
                f"WHERE machine_id IN ({marks})",
                *chunk,
            ):
                switches[machine_id] = MacSwitch(
                    d.instant(at), frozenset(json.loads(from_macs)), frozenset(json.loads(to_macs))
                )
        for r in batch:
            switch, clue = mac_switch(
                switches.get(r.machine_id),
                frozenset(before.get(r.machine_id, ())),
                frozenset(r.own_macs),
                r.at,
            )
            if switch is None:
                continue
            await tx.execute(
                "INSERT INTO mac_switches (machine_id, at, from_macs, to_macs) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET at = excluded.at, "
                "from_macs = excluded.from_macs, to_macs = excluded.to_macs",
                r.machine_id,
                switch.at,
                json.dumps(sorted(switch.before)),
                json.dumps(sorted(switch.after)),
            )
            if clue is not None:
                await insert_suspicion(tx, r.machine_id, "heartbeats", clue_candidates(clue), r.at)
        return before

    def _device(self, r: Row, seen_by: dict[tuple[str, str], set[str]]) -> UnmanagedDevice:
        d = self.dialect
        return UnmanagedDevice(
            client_id=r[0],
            mac=r[1],
            ip=r[2],
            first_seen=d.instant(r[3]),
            last_seen=d.instant(r[4]),
            seen_by=tuple(sorted(seen_by.get((r[0], r[1]), ()))),
        )

    async def _require_client(self, tx: Tx, client_id: str) -> None:
        if await tx.fetchrow("SELECT 1 FROM clients WHERE client_id = ?", client_id) is None:
            raise NotFound("no client has that id")

    async def unmanaged_devices(self, client_id: str, *, as_of: datetime) -> list[UnmanagedDevice]:
        """The client's devices unmanaged as of `as_of`, with the machines that saw them in the
        30 days before it. `NotFound` for an unknown client."""
        window = unmanaged_window(as_of)

        async def run(tx: Tx) -> list[UnmanagedDevice]:
            await self._require_client(tx, client_id)
            rows = await tx.fetch(
                _devices_sql("n.client_id = ? AND", dismissed=False),
                *_devices_args(window, client_id),
            )
            sets = await tx.fetch(
                "SELECT machine_id, macs FROM neighbor_sets WHERE client_id = ? AND day >= ? "
                "AND first_at <= ? AND last_at > ?",
                client_id,
                window.first_day,
                window.until,
                window.since,
            )
            listed = {r[1] for r in rows}
            seen_by: dict[tuple[str, str], set[str]] = {}
            for machine_id, macs in sets:
                for mac in macs.split(","):
                    if mac in listed:
                        seen_by.setdefault((client_id, mac), set()).add(machine_id)
            return [self._device(r, seen_by) for r in rows]

        return await self._engine.read(run)

    async def unmanaged_as_of(self, as_of: datetime) -> list[UnmanagedDevice]:
        """Every client's devices unmanaged as of `as_of` (for the inventory), without
        `seen_by`."""
        rows = await self._engine.fetch(
            _devices_sql("", dismissed=False), *_devices_args(unmanaged_window(as_of), None)
        )
        return [self._device(r, {}) for r in rows]

    async def devices_in_month(
        self, client_id: str, start: datetime, end: datetime, *, now: datetime
    ) -> tuple[list[UnmanagedDevice], list[DismissedDevice]]:
        """Devices the client's agents saw in [start, end) that no machine owned at its end:
        those not dismissed, and those dismissed (by `now`: a reason given after the month
        still explains the device)."""
        window = month_window(start, end)

        async def run(tx: Tx) -> tuple[list[UnmanagedDevice], list[DismissedDevice]]:
            await self._require_client(tx, client_id)
            args = _devices_args(window, client_id, dismissed_as_of=now)
            unmanaged = await tx.fetch(_devices_sql("n.client_id = ? AND", dismissed=False), *args)
            dismissed = await tx.fetch(_devices_sql("n.client_id = ? AND", dismissed=True), *args)
            reasons = await self._dismissals(tx, client_id)
            return (
                [self._device(r, {}) for r in unmanaged],
                [
                    self._dismissal(reasons[r[1]], ip=r[2], last_seen=r[4])
                    for r in dismissed
                    if r[1] in reasons
                ],
            )

        return await self._engine.read(run)

    async def _dismissals(self, tx: Tx, client_id: str) -> dict[str, Row]:
        rows = await tx.fetch(
            "SELECT client_id, mac, reason, actor, at FROM dismissed_devices "
            "WHERE client_id = ? ORDER BY mac",
            client_id,
        )
        return {r[1]: r for r in rows}

    def _dismissal(self, r: Row, *, ip: str | None, last_seen: object | None) -> DismissedDevice:
        d = self.dialect
        return DismissedDevice(
            client_id=r[0],
            mac=r[1],
            ip=ip,
            reason=r[2],
            actor=r[3],
            at=d.instant(r[4]),
            last_seen=d.opt_instant(last_seen),
        )

    async def dismissed_devices(self, client_id: str) -> list[DismissedDevice]:
        """The client's dismissed devices (however long ago they were seen), by MAC."""

        async def run(tx: Tx) -> list[DismissedDevice]:
            await self._require_client(tx, client_id)
            latest = await tx.fetch(
                "SELECT mac, MAX(last_at) FROM neighbor_days WHERE client_id = ? GROUP BY mac",
                client_id,
            )
            ips = await tx.fetch(
                "SELECT n.mac, n.ip FROM neighbor_days n WHERE n.client_id = ? AND n.day = "
                "(SELECT MAX(b.day) FROM neighbor_days b WHERE b.client_id = n.client_id "
                "AND b.mac = n.mac)",
                client_id,
            )
            last = {r[0]: r[1] for r in latest}
            ip = {r[0]: r[1] for r in ips}
            return [
                self._dismissal(r, ip=ip.get(mac), last_seen=last.get(mac))
                for mac, r in (await self._dismissals(tx, client_id)).items()
            ]

        return await self._engine.read(run)

    async def dismiss_device(
        self, client_id: str, mac: str, *, reason: str, now: datetime, actor: str
    ) -> DismissedDevice:
        """Hide a device the client's agents saw (it needs no agent), audited with who and why.
        `NotFound` for an unknown client or a device it never saw; `Conflict` if it is
        dismissed already."""

        async def run(tx: Tx) -> DismissedDevice:
            await self._require_client(tx, client_id)
            seen = await tx.fetchrow(
                "SELECT ip FROM neighbor_days WHERE client_id = ? AND mac = ? "
                "ORDER BY day DESC LIMIT 1",
                client_id,
                mac,
            )
            if seen is None:
                raise DeviceNotFound("no agent of this client has seen a device with that MAC")
            inserted = await tx.fetch(
                "INSERT INTO dismissed_devices (client_id, mac, reason, actor, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id, mac) DO NOTHING RETURNING 1",
                client_id,
                mac,
                reason,
                actor,
                now,
            )
            if not inserted:
                raise Conflict("that device is dismissed already; restore it first")
            await self._audit(
                tx,
                AuditEntry(
                    now,
                    actor,
                    "device.dismissed",
                    mac,
                    {"client_id": client_id, "reason": reason, "ip": seen[0]},
                ),
            )
            return DismissedDevice(client_id, mac, seen[0], reason, actor, now)

        return await self._engine.write(run)

    async def restore_device(
        self, client_id: str, mac: str, *, reason: str | None, now: datetime, actor: str
    ) -> None:
        """Undo a dismissal, audited. `NotFound` for an unknown client, `Conflict` for a device
        that is not dismissed."""

        async def run(tx: Tx) -> None:
            await self._require_client(tx, client_id)
            removed = await tx.fetch(
                "DELETE FROM dismissed_devices WHERE client_id = ? AND mac = ? "
                "RETURNING reason, actor",
                client_id,
                mac,
            )
            if not removed:
                raise Conflict("that device is not dismissed")
            await self._audit(
                tx,
                AuditEntry(
                    now,
                    actor,
                    "device.restored",
                    mac,
                    {
                        "client_id": client_id,
                        "reason": reason,
                        "dismissed_for": removed[0][0],
                        "dismissed_by": removed[0][1],
                    },
                ),
            )

        await self._engine.write(run)
