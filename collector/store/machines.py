"""What people change about a machine: its billed kind (`collector.rules.kinds`)."""

from __future__ import annotations

from datetime import datetime

from collector.rules.kinds import decide_kind
from collector.store.part import StorePart
from collector.store.records import MachineRecord
from collector.store.rows import MACHINE_COLUMNS, machine_from_row
from collector.store.sql import Tx


class Machines(StorePart):
    async def set_kind(
        self, machine_id: str, kind: str, *, now: datetime, actor: str
    ) -> MachineRecord:
        """Confirm a pending kind (or set one): billed as `kind` from `now` on."""
        d = self.dialect

        async def run(tx: Tx) -> MachineRecord:
            row = await tx.fetchrow(
                f"SELECT kind, pending_kind FROM machines WHERE machine_id = ?{d.for_update}",
                machine_id,
            )
            change = decide_kind(
                machine_id, None if row is None else (row[0], row[1]), kind, actor=actor, now=now
            )
            if change is not None:
                # A facts row from now on: inventory as of any earlier instant keeps the old kind.
                await tx.execute(
                    "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
                    "SELECT machine_id, ?, hostname, os, ?, components FROM machines "
                    "WHERE machine_id = ? ON CONFLICT (machine_id, valid_from) "
                    "DO UPDATE SET kind = excluded.kind",
                    now,
                    change.kind,
                    machine_id,
                )
                await tx.execute(
                    "UPDATE machines SET kind = ?, pending_kind = NULL, facts_since = ? "
                    "WHERE machine_id = ?",
                    change.kind,
                    now,
                    machine_id,
                )
                await self._audit(tx, change.audit)
            updated = await tx.fetchrow(
                f"SELECT {MACHINE_COLUMNS} FROM machines WHERE machine_id = ?", machine_id
            )
            assert updated is not None
            return machine_from_row(updated, d)

        return await self._engine.write(run)
