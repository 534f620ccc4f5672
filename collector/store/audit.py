"""The audit log: who did what, when, to what; written in the transaction of the change itself."""

from __future__ import annotations

import json

from collector.store.part import StorePart
from collector.store.records import AuditEntry, AuditFilter, MachineName
from collector.store.sql import Tx, filters, one_of


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

    async def machine_names(
        self, ids: frozenset[str]
    ) -> tuple[dict[str, MachineName], dict[str, MachineName]]:
        """Of the ids given, those that are machines and those that are agents (of any
        enrollment, revoked ones too), each with the machine's hostname and client."""
        if not ids:
            return {}, {}
        machines, machine_args = one_of("m.machine_id", ids)
        agents, agent_args = one_of("a.agent_id", ids)
        columns = "m.machine_id, m.hostname, m.client_id, c.name"
        clients = "LEFT JOIN clients c ON c.client_id = m.client_id"
        machine_rows = await self._engine.fetch(
            f"SELECT {columns} FROM machines m {clients} WHERE {machines}", *machine_args
        )
        agent_rows = await self._engine.fetch(
            f"SELECT a.agent_id, {columns} FROM agents a "
            f"JOIN machines m ON m.machine_id = a.machine_id {clients} WHERE {agents}",
            *agent_args,
        )
        return (
            {r[0]: MachineName(r[0], r[1], r[2], r[3]) for r in machine_rows},
            {r[0]: MachineName(r[1], r[2], r[3], r[4]) for r in agent_rows},
        )
