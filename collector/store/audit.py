"""The audit log: who did what, when, to what; written in the transaction of the change itself."""

from __future__ import annotations

import json

from collector.store.part import StorePart
from collector.store.records import AuditEntry, AuditFilter
from collector.store.sql import Tx, filters


class Audit(StorePart):
    async def add_audit(self, entry: AuditEntry) -> None:
        async def run(tx: Tx) -> None:
            await self._audit(tx, entry)

        await self._engine.write(run)

    async def list_audit(self, audit_filter: AuditFilter) -> list[tuple[int, AuditEntry]]:
        f = audit_filter
        clause, args = filters(
            ("actor", "=", f.actor),
            ("action", "=", f.action),
            ("target", "=", f.target),
            ("at", ">=", f.since),
            ("id", "<", f.before_id),
        )
        rows = await self._engine.fetch(
            f"SELECT id, at, actor, action, target, detail FROM audit {clause} "
            "ORDER BY id DESC LIMIT ?",
            *args,
            f.limit,
        )
        d = self.dialect
        return [
            (int(r[0]), AuditEntry(d.instant(r[1]), r[2], r[3], r[4], json.loads(r[5])))
            for r in rows
        ]
