"""What the NOC reads: machines, their states, per-client aggregates, pages, presence history.

Machine states are derived from the collector's clock at query time (`StateWindows`), never
stored; the conditions here say in SQL what `collector.store.records.machine_state` says in
Python, and the shared tests hold them to each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from collector.store.part import StorePart
from collector.store.records import (
    MACHINE_STATES,
    ClientOverview,
    CoveragePeriod,
    ExposureRow,
    MachineFilter,
    MachinePage,
    MachineQuery,
    MachineRecord,
    MachineState,
    OffboardAttention,
    OffboardState,
    PresenceHistory,
    PresenceRun,
    StateWindows,
)
from collector.store.rows import (
    COMMAND_COLUMNS,
    MACHINE_COLUMNS,
    command_from_row,
    machine_from_row,
    qualified,
)
from collector.store.sql import Row, Tx, one_of, where

_OFFBOARD_STATES = (
    "awaiting_approval",
    "offboard_pending",
    "offboarded",
    "offboard_failed",
    "moved",
)
_OVERVIEW_STATES: tuple[MachineState, ...] = (
    "online",
    "offline",
    "expired",
    "awaiting_approval",
    "offboard_pending",
    "offboard_failed",
    "offboarded",
    "moved",
)
# What a search looks into: the hostname, the OS, the machine's own addresses and the users
# logged in (those two kept one per line), each as a case-insensitive part.
_SEARCHED = ("hostname", "os", "COALESCE(addresses, '')", "COALESCE(users, '')")
# Not closed: neither offboarded nor moved to another client (`ENDED_STATES`).
_NOT_OFFBOARDED = "COALESCE(offboard_state, '') NOT IN ('offboarded', 'moved')"


def _state_condition(state: MachineState, windows: StateWindows) -> tuple[str, list[Any]]:
    if state in _OFFBOARD_STATES:
        return "offboard_state = ?", [state]
    if state == "expired":
        return "offboard_state IS NULL AND last_seen <= ?", [windows.expired_before]
    if state == "online":
        return "offboard_state IS NULL AND last_seen >= ?", [windows.online_since]
    return (
        "offboard_state IS NULL AND last_seen < ? AND last_seen > ?",
        [windows.online_since, windows.expired_before],
    )


class Views(StorePart):
    def _machine_conditions(
        self,
        client_id: str | None,
        kind: str | None,
        hostname_contains: str | None,
        state: MachineState | None,
        windows: StateWindows,
        search: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        """The filters the API's machine list and the web pages share."""
        conditions: list[str] = []
        args: list[Any] = []
        if client_id is not None:
            conditions.append("client_id = ?")
            args.append(client_id)
        if kind is not None:
            conditions.append("kind = ?")
            args.append(kind)
        if hostname_contains:
            conditions.append(self.dialect.contains_ci("hostname"))
            args.append(hostname_contains)
        if search:
            conditions.append(
                "(" + " OR ".join(self.dialect.contains_ci(column) for column in _SEARCHED) + ")"
            )
            args.extend([search] * len(_SEARCHED))
        if state is not None:
            condition, extra = _state_condition(state, windows)
            conditions.append(condition)
            args.extend(extra)
        return conditions, args

    def _component_condition(self, query: MachineQuery) -> tuple[str, list[Any]]:
        d = self.dialect
        status, name = query.component_status, query.component
        status_is = f"{d.component_field('status')} = ?"
        if status is None:
            if name is None:
                return "", []
            # a name alone: machines reporting that component at all
            return d.component_exists(f"{d.component_field('name')} = ?"), [name]
        if name is None:
            if status in ("covered", "gap"):
                return f"({d.covered()}) = {1 if status == 'covered' else 0}", []
            return d.component_exists(status_is), [status]
        named = f"{d.component_field('name')} = ?"
        if status == "missing":
            # also machines not reporting the component at all
            return f"NOT {d.component_exists(f'{named} AND NOT {status_is}')}", [name, "missing"]
        if status == "gap":
            return f"NOT {d.component_exists(f'{named} AND {status_is}')}", [name, "running"]
        wanted = "running" if status == "covered" else status
        return d.component_exists(f"{named} AND {status_is}"), [name, wanted]

    def _machines(self, rows: list[Row]) -> list[MachineRecord]:
        return [machine_from_row(r, self.dialect) for r in rows]

    async def get_machine(self, machine_id: str) -> MachineRecord | None:
        row = await self._engine.fetchrow(
            f"SELECT {MACHINE_COLUMNS} FROM machines WHERE machine_id = ?", machine_id
        )
        return None if row is None else machine_from_row(row, self.dialect)

    async def list_machines(
        self, machine_filter: MachineFilter, windows: StateWindows
    ) -> list[MachineRecord]:
        f = machine_filter
        conditions, args = self._machine_conditions(
            f.client_id, f.kind, f.hostname_contains, f.state, windows, f.search
        )
        scope, scope_args = one_of("client_id", f.client_ids)
        if scope is not None:
            conditions.append(scope)
            args.extend(scope_args)
        if f.after_machine_id is not None:
            conditions.append("machine_id > ?")
            args.append(f.after_machine_id)
        rows = await self._engine.fetch(
            f"SELECT {MACHINE_COLUMNS} FROM machines {where(conditions)} "
            "ORDER BY machine_id LIMIT ?",
            *args,
            f.limit,
        )
        return self._machines(rows)

    async def count_machines_by_state(self, windows: StateWindows) -> dict[MachineState, int]:
        rows = await self._engine.fetch(
            "SELECT CASE WHEN offboard_state IS NOT NULL THEN offboard_state "
            "WHEN last_seen <= ? THEN 'expired' WHEN last_seen >= ? THEN 'online' "
            "ELSE 'offline' END AS state, COUNT(*) FROM machines GROUP BY 1",
            windows.expired_before,
            windows.online_since,
        )
        counts: dict[MachineState, int] = dict.fromkeys(MACHINE_STATES, 0)
        for state, count in rows:
            counts[cast(MachineState, state)] = int(count)
        return counts

    async def count_clock_skewed(self, threshold_ms: int) -> int:
        """Machines whose agent's clock was last seen more than `threshold_ms` off."""
        row = await self._engine.fetchrow(
            "SELECT COUNT(*) FROM machines WHERE clock_offset_ms > ? OR clock_offset_ms < ?",
            threshold_ms,
            -threshold_ms,
        )
        return 0 if row is None else int(row[0])

    async def client_overview(
        self, windows: StateWindows, *, stale_before: datetime, pending_before: datetime
    ) -> list[ClientOverview]:
        """Every client (those without machines too) with its machines counted by state."""
        online, expired = windows.online_since, windows.expired_before
        in_inventory = f"{_NOT_OFFBOARDED} AND last_seen > ?"
        counted: list[tuple[str, list[Any]]] = [
            ("offboard_state IS NULL AND last_seen >= ?", [online]),
            ("offboard_state IS NULL AND last_seen < ? AND last_seen > ?", [online, expired]),
            ("offboard_state IS NULL AND last_seen <= ?", [expired]),
            ("offboard_state = 'awaiting_approval'", []),
            ("offboard_state = 'offboard_pending'", []),
            ("offboard_state = 'offboard_failed'", []),
            ("offboard_state = 'offboarded'", []),
            ("offboard_state = 'moved'", []),
            (in_inventory, [expired]),
            (f"{in_inventory} AND ({self.dialect.covered()}) = 1", [expired]),
            (
                "offboard_state IS NULL AND last_seen <= ? AND last_seen > ?",
                [stale_before, expired],
            ),
            (f"{_NOT_OFFBOARDED} AND last_seen <= ?", [expired]),
        ]
        columns = ", ".join(f"COUNT(*) FILTER (WHERE {condition})" for condition, _ in counted)
        args = [value for _, values in counted for value in values]

        async def run(tx: Tx) -> list[ClientOverview]:
            clients = await tx.fetch("SELECT client_id, name FROM clients ORDER BY name")
            counts = {
                r[0]: tuple(int(v) for v in r[1:])
                for r in await tx.fetch(
                    f"SELECT client_id, {columns} FROM machines GROUP BY client_id", *args
                )
            }
            overdue = {
                r[0]: int(r[1])
                for r in await tx.fetch(
                    "SELECT client_id, COUNT(*) FROM commands WHERE state = 'offboard_pending' "
                    "AND created_at <= ? GROUP BY client_id",
                    pending_before,
                )
            }
            overview = []
            for client_id, name in clients:
                c = counts.get(client_id, (0,) * len(counted))
                overview.append(
                    ClientOverview(
                        client_id=client_id,
                        name=name,
                        by_state=dict(zip(_OVERVIEW_STATES, c[:8], strict=True)),
                        in_inventory=c[8],
                        covered=c[9],
                        stale=c[10],
                        exposed=c[11],
                        pending_overdue=overdue.get(client_id, 0),
                    )
                )
            return overview

        return await self._engine.read(run)

    async def machine_page(self, query: MachineQuery, windows: StateWindows) -> MachinePage:
        """One page of machines matching `query`, and how many match in all."""
        q = query
        conditions, args = self._machine_conditions(
            q.client_id, q.kind, q.hostname_contains, q.state, windows, q.search
        )
        if q.seen_before is not None:
            conditions.append("last_seen <= ?")
            args.append(q.seen_before)
        if q.exposed:
            conditions.append(f"{_NOT_OFFBOARDED} AND last_seen <= ?")
            args.append(windows.expired_before)
        condition, extra = self._component_condition(q)
        if condition:
            conditions.append(condition)
            args.extend(extra)
        order = (
            "last_seen, machine_id"
            if q.sort == "last_seen"
            else f"{self.dialect.order_nocase('hostname')}, machine_id"
        )

        async def run(tx: Tx) -> MachinePage:
            total = await tx.fetchval(f"SELECT COUNT(*) FROM machines {where(conditions)}", *args)
            rows = await tx.fetch(
                f"SELECT {MACHINE_COLUMNS} FROM machines {where(conditions)} "
                f"ORDER BY {order} LIMIT ? OFFSET ?",
                *args,
                q.limit,
                q.offset,
            )
            return MachinePage(machines=self._machines(rows), total=int(total))

        return await self._engine.read(run)

    async def presence_history(self, machine_id: str, *, since: datetime) -> PresenceHistory:
        """Runs of presence ending at or after `since`, and every coverage period."""
        d = self.dialect

        async def run(tx: Tx) -> PresenceHistory:
            runs = [
                PresenceRun(d.instant(start), d.instant(end))
                for start, end in await tx.fetch(
                    "SELECT start_at, end_at FROM presence WHERE machine_id = ? AND end_at >= ? "
                    "ORDER BY start_at",
                    machine_id,
                    since,
                )
            ]
            current = await tx.fetchrow(
                "SELECT presence_start, last_seen FROM machines WHERE machine_id = ?", machine_id
            )
            if current is not None and d.instant(current[1]) >= since:
                runs.append(PresenceRun(d.instant(current[0]), d.instant(current[1])))
            coverage = [
                CoveragePeriod(d.instant(first), d.opt_instant(offboarded))
                for first, offboarded in await tx.fetch(
                    "SELECT first_seen, offboarded_at FROM coverage WHERE machine_id = ? "
                    "ORDER BY first_seen",
                    machine_id,
                )
            ]
            return PresenceHistory(runs=runs, coverage=coverage)

        return await self._engine.read(run)

    async def offboards_needing_attention(
        self, *, pending_before: datetime, limit: int
    ) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
        """Offboards pending since `pending_before` or earlier (oldest first), and failed
        offboards not asked again since (newest first); at most `limit` of each."""
        d = self.dialect
        select = (
            f"SELECT {qualified(COMMAND_COLUMNS, 'c')}, m.hostname FROM commands c "
            "JOIN machines m ON m.machine_id = c.machine_id"
        )

        def attention(rows: list[Row]) -> list[OffboardAttention]:
            return [OffboardAttention(command_from_row(r[:-1], d), r[-1]) for r in rows]

        async def run(tx: Tx) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
            pending = await tx.fetch(
                f"{select} WHERE c.state = 'offboard_pending' AND c.created_at <= ? "
                "ORDER BY c.created_at LIMIT ?",
                pending_before,
                limit,
            )
            failed = await tx.fetch(
                f"{select} WHERE c.state = 'offboard_failed' "
                "AND m.offboard_state = 'offboard_failed' "
                "AND NOT EXISTS (SELECT 1 FROM commands later WHERE later.machine_id = "
                "c.machine_id AND later.created_at > c.created_at) "
                "ORDER BY c.completed_at DESC LIMIT ?",
                limit,
            )
            return attention(pending), attention(failed)

        return await self._engine.read(run)

    async def licence_exposure(
        self, windows: StateWindows, *, pending_before: datetime
    ) -> tuple[list[ExposureRow], list[ExposureRow]]:
        """Machines expired without a completed offboard, and offboards pending too long."""
        d = self.dialect
        columns = (
            "SELECT m.machine_id, m.client_id, m.hostname, m.kind, m.last_seen, "
            "m.offboard_state, c.command_id, c.created_at"
        )

        def exposure(rows: list[Row]) -> list[ExposureRow]:
            return [
                ExposureRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    d.instant(r[4]),
                    cast(OffboardState | None, r[5]),
                    r[6],
                    d.opt_instant(r[7]),
                )
                for r in rows
            ]

        async def run(tx: Tx) -> tuple[list[ExposureRow], list[ExposureRow]]:
            expired = await tx.fetch(
                f"{columns} FROM machines m LEFT JOIN commands c ON c.machine_id = m.machine_id "
                "AND c.state = 'offboard_pending' WHERE m.last_seen <= ? "
                "AND COALESCE(m.offboard_state, '') NOT IN ('offboarded', 'moved') "
                "ORDER BY m.client_id, m.last_seen",
                windows.expired_before,
            )
            pending = await tx.fetch(
                f"{columns} FROM commands c JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_pending' AND c.created_at <= ? ORDER BY c.created_at",
                pending_before,
            )
            return exposure(expired), exposure(pending)

        return await self._engine.read(run)
