"""Agents joining: enrollment (see `collector.rules.enrollment`), their tokens, revocations."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from collector.rules.enrollment import (
    CANCELLED_REASON,
    EnrollmentPlan,
    HeldEnrollment,
    KnownHardware,
    decide_enrollment,
    moved_out,
    plan_enrollment,
    token_usable,
)
from collector.rules.orders import policy_text
from collector.store.part import AUDIT_INSERT, StorePart, audit_row
from collector.store.records import (
    AgentIdentity,
    AuditEntry,
    Conflict,
    EnrollOutcome,
    EnrollRequestRecord,
    NotFound,
    TokenUsedUp,
)
from collector.store.sql import LOCK_REVOCATIONS, Tx, UniqueViolation

_MACHINE_INSERT = (
    "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, components, "
    "first_seen, presence_start, last_seen, facts_since, agent_id, agent_version) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COVERAGE_INSERT = "INSERT INTO coverage (machine_id, first_seen) VALUES (?, ?)"
_FACTS_UPSERT = (
    "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (machine_id, valid_from) DO UPDATE SET "
    "hostname = excluded.hostname, os = excluded.os, kind = excluded.kind, "
    "components = excluded.components"
)
_AGENT_INSERT = (
    "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_TOKEN_CLIENT = (
    "SELECT client_id FROM enrollment_tokens WHERE token_hash = ? "
    "AND revoked_at IS NULL AND expires_at > ?"
)
_TOKEN = (
    "SELECT token_id, client_id, max_uses, uses FROM enrollment_tokens WHERE token_hash = ? "
    "AND revoked_at IS NULL AND expires_at > ?"
)


class _NewHardwareRace(Exception):
    """Another instance enrolled the same new hardware first: try again, as a re-enrollment."""


async def cancel_open_commands(tx: Tx, machine_id: str, now: datetime, *, actor: str) -> None:
    """Commands still open for a machine that enrolled again (or moved) end here, audited: a
    command is never handed to an agent other than the one it was made for."""
    rows = await tx.fetch(
        "UPDATE commands SET state = 'cancelled', completed_at = ?, result_reason = ? "
        "WHERE machine_id = ? AND state IN ('awaiting_approval', 'offboard_pending') "
        "RETURNING command_id",
        now,
        CANCELLED_REASON,
        machine_id,
    )
    if not rows:
        return
    await tx.execute(
        "UPDATE machines SET offboard_state = NULL WHERE machine_id = ? "
        "AND offboard_state IN ('awaiting_approval', 'offboard_pending')",
        machine_id,
    )
    for row in rows:
        await tx.execute(
            AUDIT_INSERT,
            *audit_row(
                AuditEntry(
                    now,
                    actor,
                    "command.cancelled",
                    machine_id,
                    {"command_id": row[0], "reason": CANCELLED_REASON},
                )
            ),
        )


async def revoke_agents(
    tx: Tx, machine_id: str, now: datetime, *, keep_agent_id: str | None = None
) -> None:
    """Revoke every live agent token of a machine (but `keep_agent_id`'s), and publish the
    digests on the feed every collector instance polls."""
    sql = "UPDATE agents SET revoked_at = ? WHERE machine_id = ? AND revoked_at IS NULL"
    args: list[object] = [now, machine_id]
    if keep_agent_id is not None:
        sql += " AND agent_id <> ?"
        args.append(keep_agent_id)
    rows = await tx.fetch(sql + " RETURNING token_hash", *args)
    if rows:
        # Held until commit: a later writer gets a higher `seq` and commits after us, so `seq`
        # values become visible in order and no instance polling `seq > n` skips one.
        await tx.lock(LOCK_REVOCATIONS)
        await tx.executemany(
            "INSERT INTO revocations (token_hash) VALUES (?)", [(r[0],) for r in rows]
        )


class Enrollment(StorePart):
    async def enroll(
        self, request: EnrollRequestRecord, *, now: datetime, gap_s: float
    ) -> EnrollOutcome:
        """Enroll, or hold the enrollment of known hardware without proof or approval (see
        `collector.rules.enrollment`). An unknown token is `NotFound`, a used-up one
        `TokenUsedUp`; a held enrollment changes nothing but its own record and the audit."""
        gap = timedelta(seconds=gap_s)

        async def run(tx: Tx) -> EnrollOutcome:
            token = await tx.fetchrow(_TOKEN, request.enrollment_token_hash, now)
            if token is None:
                raise NotFound("the enrollment token is unknown, expired or revoked")
            token_id, client_id, max_uses, uses = token
            same, elsewhere = await self._known_hardware(tx, client_id, request, now)
            decision = decide_enrollment(
                request,
                client_id=client_id,
                same_client=same,
                elsewhere=elsewhere,
                new_machine_id=str(uuid.uuid4()),
                now=now,
                gap=gap,
                address=request.address,
            )
            if isinstance(decision, HeldEnrollment):
                await self._hold(tx, request, decision, now)
                return EnrollOutcome(request.agent_id, decision.machine_id, client_id, True, True)
            if not token_usable(uses, max_uses):
                raise TokenUsedUp(
                    f"this enrollment token has enrolled {uses} machine(s), its limit; "
                    "issue another with `rmm-collector client new-token`"
                )
            await tx.execute(
                "UPDATE enrollment_tokens SET uses = uses + 1 WHERE token_id = ?", token_id
            )
            await self._apply_enrollment(tx, request, decision, token_id, now)
            return EnrollOutcome(
                request.agent_id,
                decision.machine_id,
                client_id,
                decision.reenrolled,
                moved_from=None if decision.moved_from is None else decision.moved_from.machine_id,
            )

        try:
            return await self._engine.write(run)
        except _NewHardwareRace:
            return await self._engine.write(run)

    async def _known_hardware(
        self, tx: Tx, client_id: str, request: EnrollRequestRecord, now: datetime
    ) -> tuple[KnownHardware | None, KnownHardware | None]:
        """This client's machine with the hardware id, and another client's live one."""
        d = self.dialect
        rows = await tx.fetch(
            "SELECT machine_id, client_id, offboard_state, last_seen, components, kind, "
            "reenroll_approved_until, reenroll_approved_client_id FROM machines "
            "WHERE hardware_id = ? AND (client_id = ? OR "
            "COALESCE(offboard_state, '') NOT IN ('offboarded', 'moved')) "
            f"ORDER BY last_seen DESC{d.for_update}",
            request.hardware_id,
            client_id,
        )
        same = elsewhere = None
        for row in rows:
            approved_until = d.opt_instant(row[6])
            known = KnownHardware(
                machine_id=row[0],
                client_id=row[1],
                offboard_state=row[2],
                last_seen=d.instant(row[3]),
                components_json=row[4],
                kind=row[5],
                proven=await self._proves(tx, row[0], request.previous_agent_token_hash),
                approved=approved_until is not None
                and approved_until > now
                and row[7] == client_id,
            )
            if row[1] == client_id:
                same = same or known
            else:
                elsewhere = elsewhere or known
        return same, elsewhere

    @staticmethod
    async def _proves(tx: Tx, machine_id: str, token_hash: str | None) -> bool:
        if token_hash is None:
            return False
        return (
            await tx.fetchrow(
                "SELECT 1 FROM agents WHERE machine_id = ? AND token_hash = ? "
                "AND revoked_at IS NULL",
                machine_id,
                token_hash,
            )
            is not None
        )

    async def _hold(
        self, tx: Tx, request: EnrollRequestRecord, held: HeldEnrollment, now: datetime
    ) -> None:
        facts = request.facts
        await tx.execute(
            "INSERT INTO held_enrollments (machine_id, client_id, hardware_id, hostname, os, "
            "kind, address, first_at, last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (machine_id, client_id) DO UPDATE SET hostname = excluded.hostname, "
            "os = excluded.os, kind = excluded.kind, address = excluded.address, "
            "last_at = excluded.last_at, attempts = held_enrollments.attempts + 1",
            held.machine_id,
            held.client_id,
            request.hardware_id,
            facts.hostname,
            facts.os,
            facts.kind,
            request.address,
            now,
            now,
        )
        await self._audit(tx, held.audit)

    async def _apply_enrollment(
        self,
        tx: Tx,
        request: EnrollRequestRecord,
        plan: EnrollmentPlan,
        token_id: str,
        now: datetime,
    ) -> None:
        facts = request.facts
        machine_id = plan.machine_id
        if plan.moved_from is not None:
            await self._end_moved_record(tx, plan, now)
        if plan.new_machine:
            try:
                await tx.execute(
                    _MACHINE_INSERT,
                    machine_id,
                    plan.client_id,
                    request.hardware_id,
                    facts.hostname,
                    facts.os,
                    facts.kind,
                    plan.components_json,
                    now,
                    now,
                    now,
                    now,
                    request.agent_id,
                    request.agent_version,
                )
            except UniqueViolation as exc:
                raise _NewHardwareRace from exc
        else:
            if plan.closes_presence_run:
                await tx.execute(
                    "INSERT INTO presence (machine_id, start_at, end_at) "
                    "SELECT machine_id, presence_start, last_seen FROM machines "
                    "WHERE machine_id = ? ON CONFLICT (machine_id, start_at) "
                    "DO UPDATE SET end_at = excluded.end_at",
                    machine_id,
                )
            restart = plan.new_coverage_period
            await tx.execute(
                "UPDATE machines SET hostname = ?, os = ?, kind = ?, pending_kind = ?, "
                "components = ?, last_seen = ?, facts_since = ?, agent_id = ?, "
                "agent_version = COALESCE(?, agent_version), reenroll_approved_until = NULL, "
                "reenroll_approved_by = NULL, reenroll_approved_client_id = NULL"
                + (", presence_start = ?" if plan.closes_presence_run else "")
                + (
                    ", first_seen = ?, offboard_state = NULL, offboarded_at = NULL, "
                    "moved_at = NULL, moved_to_client_id = NULL"
                    if restart
                    else ""
                )
                + " WHERE machine_id = ?",
                facts.hostname,
                facts.os,
                plan.kind,
                plan.pending_kind,
                plan.components_json,
                plan.last_seen,
                now,
                request.agent_id,
                request.agent_version,
                *([now] if plan.closes_presence_run else []),
                *([now] if restart else []),
                machine_id,
            )
            # Never handed to the new agent: whoever wants the machine offboarded asks again.
            await cancel_open_commands(tx, machine_id, now, actor=request.agent_id)
        await tx.execute(
            "DELETE FROM held_enrollments WHERE machine_id = ? AND client_id = ?",
            plan.moved_from.machine_id if plan.moved_from else machine_id,
            plan.client_id,
        )
        if plan.new_coverage_period:
            await tx.execute(
                _COVERAGE_INSERT + " ON CONFLICT (machine_id, first_seen) DO NOTHING",
                machine_id,
                now,
            )
        await tx.execute(
            _FACTS_UPSERT,
            machine_id,
            now,
            facts.hostname,
            facts.os,
            plan.kind,
            plan.components_json,
        )
        await tx.execute(
            _AGENT_INSERT,
            request.agent_id,
            machine_id,
            request.agent_token_hash,
            request.agent_version,
            now,
        )
        await tx.execute(
            "UPDATE agents SET enrollment_token_id = ? WHERE agent_id = ?",
            token_id,
            request.agent_id,
        )
        await self._audit(tx, plan.audit)
        if plan.reenrolled:
            # Last: the revocation feed's lock is held until commit, so it is held briefly.
            await revoke_agents(tx, machine_id, now, keep_agent_id=request.agent_id)

    async def _end_moved_record(self, tx: Tx, plan: EnrollmentPlan, now: datetime) -> None:
        """The old client's record ends now: no longer its inventory, nor its exposure."""
        old = plan.moved_from
        assert old is not None
        await tx.execute(
            "UPDATE machines SET offboard_state = 'moved', moved_at = ?, moved_to_client_id = ?, "
            "reenroll_approved_until = NULL, reenroll_approved_by = NULL, "
            "reenroll_approved_client_id = NULL WHERE machine_id = ?",
            now,
            plan.client_id,
            old.machine_id,
        )
        await tx.execute(
            "UPDATE coverage SET moved_at = ?, moved_to_client_id = ? WHERE machine_id = ? "
            "AND first_seen = (SELECT first_seen FROM machines WHERE machine_id = ?)",
            now,
            plan.client_id,
            old.machine_id,
            old.machine_id,
        )
        await cancel_open_commands(tx, old.machine_id, now, actor=plan.audit.actor)
        await self._audit(tx, moved_out(plan, now))
        await revoke_agents(tx, old.machine_id, now)

    async def enroll_new_machines_in_bulk(
        self, requests: Sequence[EnrollRequestRecord], *, now: datetime
    ) -> list[EnrollOutcome]:
        """Enroll many machines never seen before in one transaction (fleet set-up, load tests).

        Each is recorded exactly as `enroll` records a first enrollment (machine, coverage,
        facts, agent and audit entry). Hardware already enrolled for its client is a `Conflict`
        and nothing is written; re-enrollment goes through `enroll`.
        """
        if not requests:
            return []
        machine_ids = [str(uuid.uuid4()) for _ in requests]

        async def run(tx: Tx) -> list[EnrollOutcome]:
            clients: dict[str, str] = {}
            for token_hash in {r.enrollment_token_hash for r in requests}:
                client_id = await tx.fetchval(_TOKEN_CLIENT, token_hash, now)
                if client_id is None:
                    raise NotFound("an enrollment token is unknown, expired or revoked")
                clients[token_hash] = client_id
            plans = [
                plan_enrollment(
                    r,
                    None,
                    client_id=clients[r.enrollment_token_hash],
                    new_machine_id=machine_id,
                    now=now,
                    gap=timedelta(0),
                )
                for r, machine_id in zip(requests, machine_ids, strict=True)
            ]
            pairs = list(zip(requests, plans, strict=True))
            try:
                await tx.executemany(
                    _MACHINE_INSERT,
                    [
                        (
                            p.machine_id,
                            p.client_id,
                            r.hardware_id,
                            r.facts.hostname,
                            r.facts.os,
                            r.facts.kind,
                            p.components_json,
                            now,
                            now,
                            now,
                            now,
                            r.agent_id,
                            r.agent_version,
                        )
                        for r, p in pairs
                    ],
                )
            except UniqueViolation as exc:
                raise Conflict(
                    "some of this hardware is already enrolled (or listed twice); "
                    "bulk enrollment is for new machines only"
                ) from exc
            await tx.executemany(_COVERAGE_INSERT, [(p.machine_id, now) for p in plans])
            await tx.executemany(
                _FACTS_UPSERT,
                [
                    (
                        p.machine_id,
                        now,
                        r.facts.hostname,
                        r.facts.os,
                        r.facts.kind,
                        p.components_json,
                    )
                    for r, p in pairs
                ],
            )
            await tx.executemany(
                _AGENT_INSERT,
                [
                    (r.agent_id, p.machine_id, r.agent_token_hash, r.agent_version, now)
                    for r, p in pairs
                ],
            )
            await tx.executemany(AUDIT_INSERT, [audit_row(p.audit) for p in plans])
            return [EnrollOutcome(r.agent_id, p.machine_id, p.client_id, False) for r, p in pairs]

        return await self._engine.write(run)

    async def revocations_since(self, seq: int) -> tuple[list[str], int]:
        if seq < 0:
            top = await self._engine.fetchrow("SELECT COALESCE(MAX(seq), 0) FROM revocations")
            assert top is not None
            return [], int(top[0])
        rows = await self._engine.fetch(
            "SELECT seq, token_hash FROM revocations WHERE seq > ? ORDER BY seq", seq
        )
        return [r[1] for r in rows], int(rows[-1][0]) if rows else seq

    async def find_agent(self, token_hash: str) -> AgentIdentity | None:
        row = await self._engine.fetchrow(
            "SELECT a.agent_id, a.machine_id, m.client_id, m.offboard_approvals, "
            "m.operator_key_ids FROM agents a "
            "JOIN machines m ON m.machine_id = a.machine_id "
            "WHERE a.token_hash = ? AND a.revoked_at IS NULL",
            token_hash,
        )
        if row is None:
            return None
        key_ids = None if row[4] is None else json.loads(row[4])
        return AgentIdentity(row[0], row[1], row[2], policy_text(row[3], key_ids))
