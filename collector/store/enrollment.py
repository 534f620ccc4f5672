"""Agents joining: enrollment (see `collector.rules.enrollment`), their tokens, revocations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from collector.rules.enrollment import EnrollmentPlan, KnownHardware, plan_enrollment
from collector.store.part import AUDIT_INSERT, StorePart, audit_row
from collector.store.records import (
    AgentIdentity,
    Conflict,
    EnrollOutcome,
    EnrollRequestRecord,
    NotFound,
)
from collector.store.sql import LOCK_REVOCATIONS, Tx, UniqueViolation

_MACHINE_INSERT = (
    "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, components, "
    "first_seen, presence_start, last_seen, facts_since, agent_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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


class _NewHardwareRace(Exception):
    """Another instance enrolled the same new hardware first: try again, as a re-enrollment."""


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
        gap = timedelta(seconds=gap_s)

        async def run(tx: Tx) -> EnrollOutcome:
            client_id = await tx.fetchval(_TOKEN_CLIENT, request.enrollment_token_hash, now)
            if client_id is None:
                raise NotFound("the enrollment token is unknown, expired or revoked")
            known = await self._known_hardware(tx, client_id, request.hardware_id)
            plan = plan_enrollment(
                request,
                known,
                client_id=client_id,
                new_machine_id=str(uuid.uuid4()),
                now=now,
                gap=gap,
            )
            await self._apply_enrollment(tx, request, plan, now)
            return EnrollOutcome(request.agent_id, plan.machine_id, client_id, plan.reenrolled)

        try:
            return await self._engine.write(run)
        except _NewHardwareRace:
            return await self._engine.write(run)

    async def _known_hardware(
        self, tx: Tx, client_id: str, hardware_id: str
    ) -> KnownHardware | None:
        row = await tx.fetchrow(
            "SELECT machine_id, offboard_state, last_seen, components, kind FROM machines "
            f"WHERE client_id = ? AND hardware_id = ?{self.dialect.for_update}",
            client_id,
            hardware_id,
        )
        if row is None:
            return None
        return KnownHardware(row[0], row[1], self.dialect.instant(row[2]), row[3], row[4])

    async def _apply_enrollment(
        self, tx: Tx, request: EnrollRequestRecord, plan: EnrollmentPlan, now: datetime
    ) -> None:
        facts = request.facts
        machine_id = plan.machine_id
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
                "components = ?, last_seen = ?, facts_since = ?, agent_id = ?"
                + (", presence_start = ?" if plan.closes_presence_run else "")
                + (
                    ", first_seen = ?, offboard_state = NULL, offboarded_at = NULL"
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
                *([now] if plan.closes_presence_run else []),
                *([now] if restart else []),
                machine_id,
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
        await self._audit(tx, plan.audit)
        if plan.reenrolled:
            # Last: the revocation feed's lock is held until commit, so it is held briefly.
            await revoke_agents(tx, machine_id, now, keep_agent_id=request.agent_id)

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
            "SELECT a.agent_id, a.machine_id, m.client_id FROM agents a "
            "JOIN machines m ON m.machine_id = a.machine_id "
            "WHERE a.token_hash = ? AND a.revoked_at IS NULL",
            token_hash,
        )
        return None if row is None else AgentIdentity(row[0], row[1], row[2])
