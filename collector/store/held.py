"""Known hardware waiting to enroll again: technicians' approvals and the held enrollments
(the rules are `collector.rules.enrollment`; holding happens in `collector.store.enrollment`)."""

from __future__ import annotations

from datetime import datetime

from collector.rules.enrollment import approval_lapses
from collector.store.part import StorePart
from collector.store.records import AuditEntry, HeldEnrollmentInfo, NotFound
from collector.store.sql import Row, Tx
from wire.times import format_instant

HELD_COLUMNS = "machine_id, client_id, hardware_id, hostname, address, first_at, last_at, attempts"


class HeldEnrollments(StorePart):
    async def approve_reenroll(
        self, machine_id: str, *, now: datetime, actor: str
    ) -> HeldEnrollmentInfo | None:
        """Let this machine's hardware enroll again without its credential, once, within 24 h:
        for the client of its latest held enrollment (a move), else for its own client. The
        held enrollment approved, or None when none was held."""
        d = self.dialect

        async def run(tx: Tx) -> HeldEnrollmentInfo | None:
            machine = await tx.fetchrow(
                f"SELECT client_id FROM machines WHERE machine_id = ?{d.for_update}", machine_id
            )
            if machine is None:
                raise NotFound("no machine has that id")
            held = await tx.fetchrow(
                f"SELECT {HELD_COLUMNS} FROM held_enrollments WHERE machine_id = ? "
                "ORDER BY last_at DESC LIMIT 1",
                machine_id,
            )
            info = None if held is None else self._held_info(held)
            client_id = machine[0] if info is None else info.client_id
            until = approval_lapses(now)
            await tx.execute(
                "UPDATE machines SET reenroll_approved_until = ?, reenroll_approved_by = ?, "
                "reenroll_approved_client_id = ? WHERE machine_id = ?",
                until,
                actor,
                client_id,
                machine_id,
            )
            await self._audit(
                tx,
                AuditEntry(
                    now,
                    actor,
                    "machine.reenroll_approved",
                    machine_id,
                    {
                        "client_id": client_id,
                        "until": format_instant(until),
                        "hostname": None if info is None else info.hostname,
                        "address": None if info is None else info.address,
                    },
                ),
            )
            return info

        return await self._engine.write(run)

    def _held_info(self, r: Row) -> HeldEnrollmentInfo:
        d = self.dialect
        return HeldEnrollmentInfo(
            r[0], r[1], r[2], r[3], r[4], d.instant(r[5]), d.instant(r[6]), int(r[7])
        )

    async def held_enrollments(self, machine_id: str | None = None) -> list[HeldEnrollmentInfo]:
        """Enrollments waiting for a technician (of one machine, or all), newest first."""
        condition, args = ("WHERE machine_id = ?", [machine_id]) if machine_id else ("", [])
        rows = await self._engine.fetch(
            f"SELECT {HELD_COLUMNS} FROM held_enrollments {condition} ORDER BY last_at DESC",
            *args,
        )
        return [self._held_info(r) for r in rows]

    async def enrollments_by_token_since(self, token_hash: str, since: datetime) -> int:
        """Agents enrolled with this enrollment token since `since` (for the burst alert)."""
        row = await self._engine.fetchrow(
            "SELECT COUNT(*) FROM agents a JOIN enrollment_tokens t "
            "ON t.token_id = a.enrollment_token_id WHERE t.token_hash = ? AND a.created_at >= ?",
            token_hash,
            since,
        )
        return 0 if row is None else int(row[0])
