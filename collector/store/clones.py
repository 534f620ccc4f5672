"""Clone suspicions: recorded, shown, resolved (see `collector.rules.clones`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from collector.rules.clones import (
    ALTERNATION_WINDOW,
    Candidate,
    Identity,
    KnownMachine,
    Resolution,
    alternation,
    clue_candidates,
    resolve,
)
from collector.rules.enrollment import approval_lapses
from collector.store.coverage_records import CloneSuspicion
from collector.store.part import AUDIT_INSERT, StorePart, audit_row, detail_json
from collector.store.records import AuditEntry, Conflict, NotFound
from collector.store.sql import Row, Tx

_COLUMNS = (
    "id, machine_id, kind, detected_at, detail, resolved_at, resolved_by, reason, "
    "kept_hostname, split_hostname, split_machine_id"
)


def candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "id": c.id,
        "hostname": c.identity.hostname,
        "macs": sorted(c.identity.macs),
        "held": c.held,
        "address": c.address,
    }


def candidate_from_json(c: dict[str, Any]) -> Candidate:
    return Candidate(
        id=str(c["id"]),
        identity=Identity(c.get("hostname"), frozenset(c.get("macs") or ())),
        held=bool(c.get("held")),
        address=c.get("address"),
    )


async def insert_suspicion(
    tx: Tx, machine_id: str, kind: str, candidates: list[Candidate], now: datetime
) -> bool:
    """Open a suspicion and flag the machine, audited; False if one is open already."""
    described = [candidate_json(c) for c in candidates]
    rows = await tx.fetch(
        "INSERT INTO clone_suspicions (machine_id, kind, detected_at, detail) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) WHERE resolved_at IS NULL "
        "DO NOTHING RETURNING id",
        machine_id,
        kind,
        now,
        detail_json({"candidates": described}),
    )
    if not rows:
        return False
    await tx.execute(
        "UPDATE machines SET clone_suspected_at = ? WHERE machine_id = ?", now, machine_id
    )
    entry = AuditEntry(
        now,
        "system",
        "machine.clone_suspected",
        machine_id,
        {"kind": kind, "candidates": described},
    )
    await tx.execute(AUDIT_INSERT, *audit_row(entry))
    return True


class Clones(StorePart):
    def _suspicion(self, r: Row) -> CloneSuspicion:
        d = self.dialect
        return CloneSuspicion(
            id=int(r[0]),
            machine_id=r[1],
            kind=r[2],
            detected_at=d.instant(r[3]),
            candidates=json.loads(r[4])["candidates"],
            resolved_at=d.opt_instant(r[5]),
            resolved_by=r[6],
            reason=r[7],
            kept_hostname=r[8],
            split_hostname=r[9],
            split_machine_id=r[10],
        )

    async def suspect_clone(
        self, machine_id: str, kind: str, candidates: list[Candidate], *, now: datetime
    ) -> bool:
        """Flag the machine, unless a suspicion of it is open already (then False)."""

        async def run(tx: Tx) -> bool:
            return await insert_suspicion(tx, machine_id, kind, candidates, now)

        return await self._engine.write(run)

    async def detect_hostname_clones(self, now: datetime) -> list[str]:
        """Flag machines whose hostname switched back within the alternation window (one
        credential heard from two hosts); the machines flagged now.

        Read first, off the writer: only machines whose facts of the last day name two
        hostnames or more, one of them twice, are candidates (a rename names each once), and
        only facts newer than the machine's last suspicion count. Copies taking turns keep
        producing such rows, so one switch back is enough to be found at the next run."""
        d = self.dialect
        since = now - ALTERNATION_WINDOW
        rows = await self._engine.fetch(
            "SELECT f.machine_id, f.valid_from, f.hostname FROM facts f "
            "WHERE f.valid_from > ? AND f.machine_id IN (SELECT g.machine_id FROM facts g "
            "WHERE g.valid_from > ? GROUP BY g.machine_id "
            "HAVING COUNT(DISTINCT g.hostname) > 1 AND COUNT(*) > COUNT(DISTINCT g.hostname)) "
            "AND NOT EXISTS (SELECT 1 FROM clone_suspicions c "
            "WHERE c.machine_id = f.machine_id "
            "AND (c.resolved_at IS NULL OR c.resolved_at >= f.valid_from)) "
            "ORDER BY f.machine_id, f.valid_from",
            since,
            since,
        )
        seen: dict[str, list[tuple[datetime, Identity]]] = {}
        for machine_id, valid_from, hostname in rows:
            seen.setdefault(machine_id, []).append((d.instant(valid_from), Identity(hostname)))
        clues = {m: clue for m, history in seen.items() if (clue := alternation(history))}
        if not clues:
            return []

        async def run(tx: Tx) -> list[str]:
            return [
                machine_id
                for machine_id, clue in clues.items()
                if await insert_suspicion(tx, machine_id, "heartbeats", clue_candidates(clue), now)
            ]

        return await self._engine.write(run)

    async def clone_suspicions(self, machine_id: str) -> list[CloneSuspicion]:
        """The machine's suspicions, the open one (if any) first, then newest first."""
        rows = await self._engine.fetch(
            f"SELECT {_COLUMNS} FROM clone_suspicions WHERE machine_id = ? "
            "ORDER BY CASE WHEN resolved_at IS NULL THEN 0 ELSE 1 END, id DESC",
            machine_id,
        )
        return [self._suspicion(r) for r in rows]

    async def open_clone_suspicions(self) -> list[CloneSuspicion]:
        rows = await self._engine.fetch(
            f"SELECT {_COLUMNS} FROM clone_suspicions WHERE resolved_at IS NULL ORDER BY id"
        )
        return [self._suspicion(r) for r in rows]

    async def resolve_clone(
        self, machine_id: str, keep: str, *, reason: str, now: datetime, actor: str
    ) -> CloneSuspicion:
        """Keep one copy (or `both`); the other gets its own record at its next enrollment.
        `NotFound` without an open suspicion; `ResolutionError` for a `keep` that cannot be."""

        async def run(tx: Tx) -> CloneSuspicion:
            row = await tx.fetchrow(
                f"SELECT {_COLUMNS} FROM clone_suspicions WHERE machine_id = ? "
                f"AND resolved_at IS NULL{self.dialect.for_update}",
                machine_id,
            )
            if row is None:
                raise NotFound("no clone suspicion of that machine is open")
            suspicion = self._suspicion(row)
            resolution = resolve([candidate_from_json(c) for c in suspicion.candidates], keep)
            await self._apply_resolution(tx, suspicion, resolution, reason, now, actor)
            updated = await tx.fetchrow(
                f"SELECT {_COLUMNS} FROM clone_suspicions WHERE id = ?", suspicion.id
            )
            assert updated is not None
            return self._suspicion(updated)

        return await self._engine.write(run)

    async def _apply_resolution(
        self,
        tx: Tx,
        suspicion: CloneSuspicion,
        resolution: Resolution,
        reason: str,
        now: datetime,
        actor: str,
    ) -> None:
        split = resolution.split
        await tx.execute(
            "UPDATE clone_suspicions SET resolved_at = ?, resolved_by = ?, reason = ?, "
            "kept_hostname = ?, split_hostname = ? WHERE id = ?",
            now,
            actor,
            reason,
            resolution.kept.hostname,
            None if split is None else split.hostname,
            suspicion.id,
        )
        await tx.execute(
            "UPDATE machines SET clone_suspected_at = NULL WHERE machine_id = ?",
            suspicion.machine_id,
        )
        if resolution.approve_held:
            client_id = await tx.fetchval(
                "SELECT client_id FROM machines WHERE machine_id = ?", suspicion.machine_id
            )
            await tx.execute(
                "UPDATE machines SET reenroll_approved_until = ?, reenroll_approved_by = ?, "
                "reenroll_approved_client_id = ? WHERE machine_id = ?",
                approval_lapses(now),
                actor,
                client_id,
                suspicion.machine_id,
            )
        await self._audit(
            tx,
            AuditEntry(
                now,
                actor,
                "machine.clone_resolved",
                suspicion.machine_id,
                {
                    "reason": reason,
                    "kept": resolution.kept.as_json(),
                    "split": None if split is None else split.as_json(),
                    "approved_held_enrollment": resolution.approve_held,
                },
            ),
        )

    async def pending_splits(self) -> dict[str, str]:
        """machine id -> hostname of the copy split off that has not enrolled on its own yet."""
        rows = await self._engine.fetch(
            "SELECT machine_id, split_hostname FROM clone_suspicions WHERE resolved_at IS NOT "
            "NULL AND split_hostname IS NOT NULL AND split_machine_id IS NULL ORDER BY id"
        )
        return {r[0]: r[1] for r in rows}

    async def enrolling_machine(
        self, enrollment_token_hash: str, hardware_id: str, *, now: datetime
    ) -> tuple[KnownMachine | None, str | None]:
        """The live machine of the token's client with this hardware id, and the hostname of a
        copy split off it that has not enrolled on its own yet."""

        async def run(tx: Tx) -> tuple[KnownMachine | None, str | None]:
            d = self.dialect
            row = await tx.fetchrow(
                "SELECT m.machine_id, m.hostname, m.last_seen, m.offboard_state, "
                "m.reenroll_approved_until, m.reenroll_approved_client_id, t.client_id "
                "FROM enrollment_tokens t JOIN machines m ON m.client_id = t.client_id "
                "WHERE t.token_hash = ? AND m.hardware_id = ?",
                enrollment_token_hash,
                hardware_id,
            )
            if row is None:
                return None, None
            approved_until = d.opt_instant(row[4])
            known = KnownMachine(
                machine_id=row[0],
                hostname=row[1],
                last_seen=d.instant(row[2]),
                ended=row[3] in ("offboarded", "moved"),
                approved=approved_until is not None and approved_until > now and row[5] == row[6],
            )
            split = await tx.fetchval(
                "SELECT split_hostname FROM clone_suspicions WHERE machine_id = ? "
                "AND split_hostname IS NOT NULL AND split_machine_id IS NULL "
                "ORDER BY id DESC LIMIT 1",
                known.machine_id,
            )
            return known, cast(str | None, split)

        return await self._engine.read(run)

    async def record_split(
        self, machine_id: str, split_machine_id: str, *, hostname: str, now: datetime
    ) -> None:
        """The copy split off `machine_id` enrolled as a machine of its own."""

        async def run(tx: Tx) -> None:
            updated = await tx.execute(
                "UPDATE clone_suspicions SET split_machine_id = ? WHERE machine_id = ? "
                "AND split_hostname IS NOT NULL AND split_machine_id IS NULL",
                split_machine_id,
                machine_id,
            )
            if not updated:
                raise Conflict("no split of that machine waits for its copy to enroll")
            await self._audit(
                tx,
                AuditEntry(
                    now,
                    "system",
                    "machine.clone_split",
                    machine_id,
                    {"split_machine_id": split_machine_id, "hostname": hostname},
                ),
            )

        await self._engine.write(run)
