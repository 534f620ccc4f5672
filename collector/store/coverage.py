"""What a coverage statement reads (see `collector.rules.coverage`): per machine of a client,
its coverage periods, runs of presence and component reports around one month."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from collector.rules.coverage import MachineHistory
from collector.store.part import StorePart
from collector.store.sql import Tx
from wire.times import EXPIRY


class CoverageHistory(StorePart):
    async def coverage_histories(
        self, client_id: str, start: datetime, end: datetime
    ) -> list[MachineHistory]:
        """The client's machines whose record overlaps [start, end), each with the history a
        statement of that month needs, read in one snapshot."""
        d = self.dialect
        # A run that ended up to 720 hours before the month still kept the machine in inventory.
        seen_since = start - EXPIRY

        async def run(tx: Tx) -> list[MachineHistory]:
            machines = await tx.fetch(
                "SELECT machine_id, hostname, kind, presence_start, last_seen FROM machines "
                "WHERE client_id = ? ORDER BY machine_id",
                client_id,
            )
            periods = await tx.fetch(
                "SELECT c.machine_id, c.first_seen, c.offboarded_at, c.moved_at FROM coverage c "
                "JOIN machines m ON m.machine_id = c.machine_id WHERE m.client_id = ? "
                "AND c.first_seen < ? ORDER BY c.machine_id, c.first_seen",
                client_id,
                end,
            )
            runs = await tx.fetch(
                "SELECT p.machine_id, p.start_at, p.end_at FROM presence p "
                "JOIN machines m ON m.machine_id = p.machine_id WHERE m.client_id = ? "
                "AND p.end_at >= ? AND p.start_at < ? ORDER BY p.machine_id, p.start_at",
                client_id,
                seen_since,
                end,
            )
            facts = await tx.fetch(
                "SELECT f.machine_id, f.valid_from, f.components FROM facts f "
                "JOIN machines m ON m.machine_id = f.machine_id WHERE m.client_id = ? "
                "AND f.valid_from < ? AND f.valid_from >= COALESCE((SELECT MAX(g.valid_from) "
                "FROM facts g WHERE g.machine_id = f.machine_id AND g.valid_from <= ?), ?) "
                "ORDER BY f.machine_id, f.valid_from",
                client_id,
                end,
                start,
                start,
            )
            by_machine_periods: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(
                list
            )
            for machine_id, first, offboarded, moved in periods:
                ends = [t for t in (d.opt_instant(offboarded), d.opt_instant(moved)) if t]
                by_machine_periods[machine_id].append((d.instant(first), min(ends, default=None)))
            by_machine_runs: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
            for machine_id, run_start, run_end in runs:
                by_machine_runs[machine_id].append((d.instant(run_start), d.instant(run_end)))
            by_machine_facts: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
            for machine_id, valid_from, components in facts:
                by_machine_facts[machine_id].append((d.instant(valid_from), components))
            histories = []
            for machine_id, hostname, kind, presence_start, last_seen in machines:
                if machine_id not in by_machine_periods:
                    continue  # enrolled after the month (or its history was compacted)
                current = (d.instant(presence_start), d.instant(last_seen))
                machine_runs = by_machine_runs[machine_id]
                if current[1] >= seen_since and current[0] < end:
                    machine_runs.append(current)
                histories.append(
                    MachineHistory(
                        machine_id=machine_id,
                        hostname=hostname,
                        kind=kind,
                        periods=by_machine_periods[machine_id],
                        runs=machine_runs,
                        facts=by_machine_facts[machine_id],
                    )
                )
            return histories

        return await self._engine.read(run)
