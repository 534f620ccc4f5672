"""Remote commands (offboarding): requests, delivery, results. The rules are in
`collector.rules.commands`; this part reads the rows they need and writes what they decide."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from collector.rules.commands import (
    OffboardTarget,
    ResultDecision,
    components_after_offboard,
    decide_offboard_request,
    decide_progress,
    decide_result,
    offboard_requested,
    plan_delivery,
)
from collector.rules.orders import ApprovalPolicy, make_order
from collector.store.enrollment import revoke_agents
from collector.store.part import StorePart
from collector.store.records import (
    AgentIdentity,
    CommandFilter,
    CommandRecord,
    CommandResultRecord,
    Conflict,
    NotFound,
    NotOwner,
    OffboardRequestRecord,
)
from collector.store.rows import COMMAND_COLUMNS, command_from_row
from collector.store.sql import Tx, filters, one_of
from wire.orders import order_digest


class Commands(StorePart):
    async def _command(
        self, tx: Tx, command_id: str, *, lock: bool = False
    ) -> CommandRecord | None:
        row = await tx.fetchrow(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id = ?"
            + (self.dialect.for_update if lock else ""),
            command_id,
        )
        return None if row is None else command_from_row(row, self.dialect)

    async def _next_sequence(self, tx: Tx, machine_id: str) -> int:
        """Sequence numbers are per machine and only grow, whichever agent it has enrolled
        with (an agent re-enrolled keeps its ledger's last sequence); the row is locked
        meanwhile."""
        sequence = await tx.fetchval(
            "UPDATE machines SET command_seq = command_seq + 1 WHERE machine_id = ? "
            "RETURNING command_seq",
            machine_id,
        )
        if sequence is None:
            raise NotFound(f"no machine {machine_id!r}")
        return int(sequence)

    async def request_offboard(
        self, request: OffboardRequestRecord, *, now: datetime
    ) -> tuple[CommandRecord, bool]:
        return await self._engine.write(lambda tx: self._request_offboard(tx, request, now))

    async def request_bulk_offboard(
        self,
        client_id: str,
        *,
        issuer: str,
        reason: str,
        ticket: str | None,
        now: datetime,
        expected_count: int | None = None,
    ) -> tuple[str, list[CommandRecord]]:
        """One order per live machine of the client (those already asked for answer with
        their open command), in one transaction, under one batch id to approve together."""
        batch_id = str(uuid.uuid4())

        async def run(tx: Tx) -> list[CommandRecord]:
            if await tx.fetchrow("SELECT 1 FROM clients WHERE client_id = ?", client_id) is None:
                raise NotFound(f"no client {client_id!r}")
            rows = await tx.fetch(
                "SELECT machine_id FROM machines WHERE client_id = ? "
                "AND COALESCE(offboard_state, '') NOT IN ('offboarded', 'moved') "
                "ORDER BY machine_id",
                client_id,
            )
            if expected_count is not None and expected_count != len(rows):
                raise Conflict(
                    f"the client has {len(rows)} live machines now, not {expected_count}: "
                    "review the list again"
                )
            made = []
            for (machine_id,) in rows:
                command, _ = await self._request_offboard(
                    tx, OffboardRequestRecord(machine_id, issuer, reason, ticket, batch_id), now
                )
                made.append(command)
            return made

        return batch_id, await self._engine.write(run)

    async def offboard_requests_since(self, since: datetime) -> int:
        """Offboards asked for one machine at a time since `since` (bulk batches not counted)."""
        row = await self._engine.fetchrow(
            "SELECT COUNT(*) FROM commands WHERE created_at >= ? AND batch_id IS NULL", since
        )
        return 0 if row is None else int(row[0])

    async def _request_offboard(
        self, tx: Tx, request: OffboardRequestRecord, now: datetime
    ) -> tuple[CommandRecord, bool]:
        d = self.dialect
        # The machine's row lock makes concurrent requests (through any instance) queue up:
        # the first creates the command, the others answer with it.
        row = await tx.fetchrow(
            "SELECT machine_id, client_id, agent_id, hostname, offboard_state, components, "
            "offboard_approvals, operator_key_ids FROM machines "
            f"WHERE machine_id = ?{d.for_update}",
            request.machine_id,
        )
        target = None if row is None else OffboardTarget(*row)
        pending_row = await tx.fetchrow(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE machine_id = ? "
            "AND state IN ('awaiting_approval', 'offboard_pending') "
            "ORDER BY created_at DESC LIMIT 1",
            request.machine_id,
        )
        pending = None if pending_row is None else command_from_row(pending_row, d)
        existing = decide_offboard_request(target, pending)
        if existing is not None:
            return existing, False
        assert target is not None
        command_id = str(uuid.uuid4())
        order = make_order(
            command_id,
            agent_id=target.agent_id,
            machine_id=target.machine_id,
            client_id=target.client_id,
            hostname=target.hostname,
            requester=request.issuer,
            reason=request.reason,
            ticket=request.ticket,
            components=target.component_names,
            now=now,
        )
        policy = ApprovalPolicy.of(target.offboard_approvals, target.operator_key_ids)
        state = "offboard_pending" if policy.ready([]) else "awaiting_approval"
        await tx.execute(
            "INSERT INTO commands (command_id, type, machine_id, client_id, agent_id, "
            "sequence, state, issuer, reason, ticket, created_at, components, order_b64, "
            "order_sha256, batch_id) "
            "VALUES (?, 'offboard', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            command_id,
            target.machine_id,
            target.client_id,
            target.agent_id,
            await self._next_sequence(tx, target.machine_id),
            state,
            request.issuer,
            request.reason,
            request.ticket,
            now,
            json.dumps(target.component_names),
            base64.b64encode(order).decode(),
            order_digest(order),
            request.batch_id,
        )
        await tx.execute(
            "UPDATE machines SET offboard_state = ? WHERE machine_id = ?",
            state,
            target.machine_id,
        )
        await self._audit(tx, offboard_requested(request, target, command_id, now))
        created = await self._command(tx, command_id)
        assert created is not None
        return created, True

    async def get_command(self, command_id: str) -> CommandRecord | None:
        return await self._engine.read(lambda tx: self._command(tx, command_id))

    async def list_commands(self, command_filter: CommandFilter) -> list[CommandRecord]:
        f = command_filter
        clause, args = filters(
            ("state", "=", f.state),
            ("machine_id", "=", f.machine_id),
            ("batch_id", "=", f.batch_id),
            ("command_id", ">", f.after_command_id),
        )
        scope, scope_args = one_of("client_id", f.client_ids)
        if scope is not None:
            clause = f"{clause} AND {scope}" if clause else f"WHERE {scope}"
            args.extend(scope_args)
        rows = await self._engine.fetch(
            f"SELECT {COMMAND_COLUMNS} FROM commands {clause} ORDER BY command_id LIMIT ?",
            *args,
            f.limit,
        )
        return [command_from_row(r, self.dialect) for r in rows]

    async def machines_with_open_commands(self) -> set[str]:
        rows = await self._engine.fetch(
            "SELECT DISTINCT machine_id FROM commands WHERE state = 'offboard_pending'"
        )
        return {r[0] for r in rows}

    async def commands_for_delivery(
        self, identity: AgentIdentity, *, now: datetime
    ) -> list[CommandRecord]:
        d = self.dialect

        async def run(tx: Tx) -> list[CommandRecord]:
            # Locked: two instances handing out the same command take turns, so it is rebound
            # and first-delivered once.
            rows = await tx.fetch(
                f"SELECT {COMMAND_COLUMNS} FROM commands WHERE machine_id = ? "
                f"AND state = 'offboard_pending' ORDER BY sequence, command_id{d.for_update}",
                identity.machine_id,
            )
            delivered = []
            for row in rows:
                plan = plan_delivery(command_from_row(row, d), identity, now)
                command_id = plan.command.command_id
                if not plan.deliver:
                    continue
                await tx.execute(
                    "UPDATE commands SET delivery_count = delivery_count + 1, "
                    "delivered_at = COALESCE(delivered_at, ?) WHERE command_id = ?",
                    now,
                    command_id,
                )
                if plan.audit is not None:
                    await self._audit(tx, plan.audit)
                refreshed = await self._command(tx, command_id)
                assert refreshed is not None
                delivered.append(refreshed)
            return delivered

        return await self._engine.write(run)

    async def record_command_result(
        self, identity: AgentIdentity, result: CommandResultRecord, *, now: datetime
    ) -> CommandRecord:
        """Apply an agent's report. A report about another agent's command is audited as a
        security event and raises `NotOwner` (after the audit entry is committed)."""

        async def run(tx: Tx) -> tuple[ResultDecision, CommandRecord]:
            # Locked: the same result arriving through two instances lands once.
            command = await self._command(tx, result.command_id, lock=True)
            decision = decide_result(command, identity, result, now)
            assert command is not None
            await self._apply_result(tx, command, result, decision, now)
            refreshed = await self._command(tx, command.command_id)
            assert refreshed is not None
            return decision, refreshed

        decision, command = await self._engine.write(run)
        if decision.effect == "refuse":
            raise NotOwner("the command belongs to another agent")
        return command

    async def record_command_progress(
        self, identity: AgentIdentity, command_id: str, progress_json: str, *, now: datetime
    ) -> CommandRecord:
        """Keep what the agent says while its command runs (the steps so far, the one running)."""

        async def run(tx: Tx) -> CommandRecord:
            command = await self._command(tx, command_id, lock=True)
            if decide_progress(command, identity):
                await tx.execute(
                    "UPDATE commands SET progress = ?, progress_at = ? WHERE command_id = ?",
                    progress_json,
                    now,
                    command_id,
                )
            refreshed = await self._command(tx, command_id)
            assert refreshed is not None
            return refreshed

        return await self._engine.write(run)

    async def _components_removed(
        self, tx: Tx, command: CommandRecord, steps_json: str, now: datetime
    ) -> None:
        """What the completed offboard left on the machine, as of its completion: a facts row
        from `now` on, so an inventory as of any earlier instant keeps the components of the
        heartbeat it stood on."""
        row = await tx.fetchrow(
            "SELECT components FROM machines WHERE machine_id = ?", command.machine_id
        )
        assert row is not None
        components = components_after_offboard(row[0], command, steps_json)
        await tx.execute(
            "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
            "SELECT machine_id, ?, hostname, os, kind, ? FROM machines WHERE machine_id = ? "
            "ON CONFLICT (machine_id, valid_from) DO UPDATE SET components = excluded.components",
            now,
            components,
            command.machine_id,
        )
        await tx.execute(
            "UPDATE machines SET components = ?, facts_since = ? WHERE machine_id = ?",
            components,
            now,
            command.machine_id,
        )

    async def _apply_result(
        self,
        tx: Tx,
        command: CommandRecord,
        result: CommandResultRecord,
        decision: ResultDecision,
        now: datetime,
    ) -> None:
        if decision.effect == "count_rejection":
            await tx.execute(
                "UPDATE commands SET rejections = rejections + ?, last_rejection = ?, "
                "last_rejected_at = ? WHERE command_id = ?",
                1 + result.suppressed,
                result.reason or "refused without a reason",
                now,
                command.command_id,
            )
        elif decision.ends_command:
            await tx.execute(
                "UPDATE commands SET state = ?, completed_at = ?, result_status = ?, "
                "result_reason = ?, steps = ? WHERE command_id = ?",
                decision.state,
                now,
                result.status,
                decision.reason or result.reason,
                result.steps_json,
                command.command_id,
            )
        if decision.effect == "complete":
            await tx.execute(
                "UPDATE machines SET offboard_state = 'offboarded', offboarded_at = ? "
                "WHERE machine_id = ?",
                now,
                command.machine_id,
            )
            await self._components_removed(tx, command, result.steps_json, now)
            await tx.execute(
                "UPDATE coverage SET offboarded_at = ? WHERE machine_id = ? AND first_seen = "
                "(SELECT first_seen FROM machines WHERE machine_id = ?)",
                now,
                command.machine_id,
                command.machine_id,
            )
        elif decision.effect == "fail":
            await tx.execute(
                "UPDATE machines SET offboard_state = 'offboard_failed' "
                "WHERE machine_id = ? AND offboard_state = 'offboard_pending'",
                command.machine_id,
            )
        if decision.audit is not None:
            await self._audit(tx, decision.audit)
        if decision.effect == "complete":
            # The final report is in: the agent's token has done its last job.
            await revoke_agents(tx, command.machine_id, now)
