"""Two-person offboard orders: registered operators, approvals, and what each agent requires.
The rules are in `collector.rules.orders`; this part reads and writes their rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from collector.rules.orders import ApprovalPolicy, approved, check_approval
from collector.store.part import StorePart
from collector.store.records import (
    ApprovalRecord,
    AuditEntry,
    CommandRecord,
    Conflict,
    NotFound,
    OperatorRecord,
)
from collector.store.rows import COMMAND_COLUMNS, command_from_row
from collector.store.sql import Row, Tx
from wire.messages import Approval
from wire.signing import parse_pin

_OPEN = "('awaiting_approval', 'offboard_pending')"


class Orders(StorePart):
    # operators

    async def add_operator(
        self, name: str, key_line: str, *, now: datetime, actor: str
    ) -> OperatorRecord:
        """Register an operator's public key under a name (to show who signed; agents trust
        only the keys pinned in their own config)."""
        key_id, _ = parse_pin(key_line)  # ValueError for a line that is no usable key
        record = OperatorRecord(key_id, name, key_line.strip(), now, actor)

        async def run(tx: Tx) -> OperatorRecord:
            existing = await tx.fetchrow("SELECT name FROM operators WHERE key_id = ?", key_id)
            if existing is not None:
                raise Conflict(f"key {key_id} is already registered, as {existing[0]!r}")
            await tx.execute(
                "INSERT INTO operators (key_id, name, public_key, added_at, added_by) "
                "VALUES (?, ?, ?, ?, ?)",
                key_id,
                name,
                record.public_key,
                now,
                actor,
            )
            await self._audit(tx, AuditEntry(now, actor, "operator.added", key_id, {"name": name}))
            return record

        return await self._engine.write(run)

    async def list_operators(self) -> list[OperatorRecord]:
        rows = await self._engine.fetch(
            "SELECT key_id, name, public_key, added_at, added_by FROM operators "
            "ORDER BY name, key_id"
        )
        d = self.dialect
        return [OperatorRecord(r[0], r[1], r[2], d.instant(r[3]), r[4]) for r in rows]

    # approvals

    async def command_approvals(self, command_id: str) -> list[ApprovalRecord]:
        return await self._engine.read(lambda tx: self._approvals(tx, command_id))

    async def _approvals(self, tx: Tx, command_id: str) -> list[ApprovalRecord]:
        rows = await tx.fetch(
            "SELECT a.key_id, a.signature, a.actor, a.approved_at, o.name "
            "FROM command_approvals a LEFT JOIN operators o ON o.key_id = a.key_id "
            "WHERE a.command_id = ? ORDER BY a.approved_at, a.key_id",
            command_id,
        )
        return [self._approval(r) for r in rows]

    def _approval(self, r: Row) -> ApprovalRecord:
        return ApprovalRecord(r[0], r[1], r[2], self.dialect.instant(r[3]), r[4])

    async def approve_command(
        self,
        command_id: str,
        approval: Approval,
        *,
        public_key: str | None,
        actor: str,
        now: datetime,
    ) -> CommandRecord:
        """Keep one operator's signature over the command's order (`ApprovalRefused` when it
        does not verify); once the agent's requirement is met the command is delivered."""
        d = self.dialect

        async def run(tx: Tx) -> CommandRecord:
            row = await tx.fetchrow(
                f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id = ?{d.for_update}",
                command_id,
            )
            command = None if row is None else command_from_row(row, d)
            operator = await tx.fetchrow(
                "SELECT public_key, name FROM operators WHERE key_id = ?", approval.key_id
            )
            check_approval(command, approval, public_key or (operator[0] if operator else None))
            assert command is not None
            already = await tx.fetchrow(
                "SELECT 1 FROM command_approvals WHERE command_id = ? AND key_id = ?",
                command_id,
                approval.key_id,
            )
            if already is None:
                await tx.execute(
                    "INSERT INTO command_approvals (command_id, key_id, signature, actor, "
                    "approved_at) VALUES (?, ?, ?, ?, ?)",
                    command_id,
                    approval.key_id,
                    approval.signature,
                    actor,
                    now,
                )
                name = None if operator is None else operator[1]
                await self._audit(tx, approved(command, approval, actor, name, now))
            await self._settle(tx, command.machine_id, now)
            refreshed = await tx.fetchrow(
                f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id = ?", command_id
            )
            assert refreshed is not None
            return command_from_row(refreshed, d)

        return await self._engine.write(run)

    async def approval_policy(self, machine_id: str) -> ApprovalPolicy:
        row = await self._engine.fetchrow(
            "SELECT offboard_approvals, operator_key_ids FROM machines WHERE machine_id = ?",
            machine_id,
        )
        return ApprovalPolicy.of(None, None) if row is None else ApprovalPolicy.of(row[0], row[1])

    async def record_approval_policy(
        self, machine_id: str, approvals: int, key_ids: Sequence[str], *, now: datetime
    ) -> None:
        """What the machine's agent now says it requires; its open offboard follows."""

        async def run(tx: Tx) -> None:
            await tx.execute(
                "UPDATE machines SET offboard_approvals = ?, operator_key_ids = ? "
                "WHERE machine_id = ?",
                approvals,
                json.dumps(sorted(set(key_ids))),
                machine_id,
            )
            await self._settle(tx, machine_id, now)

        await self._engine.write(run)

    async def _settle(self, tx: Tx, machine_id: str, now: datetime) -> None:
        """Put the machine's open offboard in the state its approvals and its agent's
        requirement call for: `offboard_pending` (deliverable) or `awaiting_approval`."""
        machine = await tx.fetchrow(
            "SELECT offboard_approvals, operator_key_ids FROM machines WHERE machine_id = ?",
            machine_id,
        )
        if machine is None:
            raise NotFound(f"no machine {machine_id!r}")
        policy = ApprovalPolicy.of(machine[0], machine[1])
        rows = await tx.fetch(
            f"SELECT command_id, state FROM commands WHERE machine_id = ? AND state IN {_OPEN}",
            machine_id,
        )
        for command_id, state in rows:
            wanted = (
                "offboard_pending"
                if policy.ready(await self._approvals(tx, command_id))
                else "awaiting_approval"
            )
            if wanted == state:
                continue
            await tx.execute(
                "UPDATE commands SET state = ? WHERE command_id = ?", wanted, command_id
            )
            await tx.execute(
                "UPDATE machines SET offboard_state = ? WHERE machine_id = ?", wanted, machine_id
            )
            if wanted == "offboard_pending":
                await self._audit(
                    tx,
                    AuditEntry(
                        now,
                        "system",
                        "offboard.approved_for_delivery",
                        machine_id,
                        {"command_id": command_id, "required": policy.required},
                    ),
                )
