"""What an enrollment does: a new machine, a re-image of a known one, a move, or nothing yet.

Known hardware (the same hardware id under the same client) is the same machine: a re-image or
`enroll --force` keeps its machine id and its `first_seen`, so it is never a new free month. A
machine offboarded and later enrolled again starts a new coverage period: from then on it has the
new `first_seen` and no `offboarded_at`. Enrollment counts as a heartbeat (it may end a run of
presence), and the new agent's token replaces every earlier one of the machine.

An enrollment token plus a hardware id never takes a machine over. Enrolling known hardware again
needs proof of the machine's current credential (`previous_agent_token`, which `rmm-agent enroll
--force` and a re-install that kept its state send) or a technician's approval (valid 24 hours,
used once); without either the enrollment is held, audited and shown, and the genuine agent keeps
working. The same hardware enrolled under another client, with the same proof or approval, is a
move: the old client's record ends at that instant (its software, its billing, its exposure are
the new client's from then on). Commands pending for the old agent are never handed to the new
one: they are cancelled, and a technician asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.rules.presence import closes_run
from collector.store.records import AuditEntry, EnrollRequestRecord

NO_COMPONENTS = "[]"
APPROVAL_LIFETIME = timedelta(hours=24)
CANCELLED_REASON = "the machine enrolled again (or moved): ask again to offboard it"


def token_usable(uses: int, max_uses: int | None) -> bool:
    """An enrollment token with a use limit enrolls at most that many times."""
    return max_uses is None or uses < max_uses


@dataclass(frozen=True, slots=True)
class KnownHardware:
    """A machine already enrolled with this hardware id, and what the request shows about it."""

    machine_id: str
    client_id: str
    offboard_state: str | None
    last_seen: datetime
    components_json: str
    kind: str = "pc"
    # The request carried this machine's current agent token.
    proven: bool = False
    # A technician approved it enrolling again for the token's client, and it has not lapsed.
    approved: bool = False

    @property
    def vouched_for(self) -> bool:
        return self.proven or self.approved


@dataclass(frozen=True, slots=True)
class EnrollmentPlan:
    machine_id: str
    client_id: str
    new_machine: bool
    # A new machine, or one enrolled again after a completed offboard.
    new_coverage_period: bool
    closes_presence_run: bool
    # What the machine row holds afterwards.
    components_json: str
    last_seen: datetime
    # The billed kind, and a different kind the request claims (held for an admin to confirm:
    # enrolling again never re-prices a known machine).
    kind: str
    pending_kind: str | None
    audit: AuditEntry
    # The other client's record this enrollment ends (a move), if any.
    moved_from: KnownHardware | None = None

    @property
    def reenrolled(self) -> bool:
        return not self.new_machine


@dataclass(frozen=True, slots=True)
class HeldEnrollment:
    """Known hardware enrolling without proof or approval: nothing changes but this record."""

    machine_id: str
    client_id: str
    audit: AuditEntry


def _held(
    request: EnrollRequestRecord,
    known: KnownHardware,
    client_id: str,
    now: datetime,
    address: str | None,
) -> HeldEnrollment:
    moving = known.client_id != client_id
    why = (
        "this hardware is enrolled under another client"
        if moving
        else "this hardware is already enrolled"
    )
    return HeldEnrollment(
        known.machine_id,
        client_id,
        AuditEntry(
            now,
            "system",
            "machine.reenroll_held",
            known.machine_id,
            {
                "client_id": client_id,
                "machine_client_id": known.client_id,
                "hostname": request.facts.hostname,
                "hardware_id": request.hardware_id,
                "address": address,
                "why": f"{why}, and the request neither proved its credential nor was approved",
            },
        ),
    )


def decide_enrollment(
    request: EnrollRequestRecord,
    *,
    client_id: str,
    same_client: KnownHardware | None,
    elsewhere: KnownHardware | None,
    new_machine_id: str,
    now: datetime,
    gap: timedelta,
    address: str | None = None,
) -> EnrollmentPlan | HeldEnrollment:
    """`same_client`: this client's machine with the hardware id; `elsewhere`: another client's
    machine with it that is still live (not offboarded, not moved)."""
    if same_client is not None:
        if not same_client.vouched_for:
            return _held(request, same_client, client_id, now, address)
        return plan_enrollment(
            request,
            same_client,
            client_id=client_id,
            new_machine_id=new_machine_id,
            now=now,
            gap=gap,
        )
    if elsewhere is not None:
        if not elsewhere.vouched_for:
            return _held(request, elsewhere, client_id, now, address)
        plan = plan_enrollment(
            request, None, client_id=client_id, new_machine_id=new_machine_id, now=now, gap=gap
        )
        audit = AuditEntry(
            plan.audit.at,
            plan.audit.actor,
            "machine.moved_in",
            plan.machine_id,
            {
                **plan.audit.detail,
                "moved_from": elsewhere.machine_id,
                "from_client_id": elsewhere.client_id,
            },
        )
        return EnrollmentPlan(
            machine_id=plan.machine_id,
            client_id=plan.client_id,
            new_machine=True,
            new_coverage_period=True,
            closes_presence_run=False,
            components_json=plan.components_json,
            last_seen=plan.last_seen,
            kind=plan.kind,
            pending_kind=None,
            audit=audit,
            moved_from=elsewhere,
        )
    return plan_enrollment(
        request, None, client_id=client_id, new_machine_id=new_machine_id, now=now, gap=gap
    )


def moved_out(plan: EnrollmentPlan, now: datetime) -> AuditEntry:
    """The audit entry that ends the old client's record of a moved machine."""
    assert plan.moved_from is not None
    return AuditEntry(
        now,
        plan.audit.actor,
        "machine.moved",
        plan.moved_from.machine_id,
        {
            "client_id": plan.moved_from.client_id,
            "to_client_id": plan.client_id,
            "to_machine_id": plan.machine_id,
        },
    )


def plan_enrollment(
    request: EnrollRequestRecord,
    known: KnownHardware | None,
    *,
    client_id: str,
    new_machine_id: str,
    now: datetime,
    gap: timedelta,
) -> EnrollmentPlan:
    """The enrollment of new hardware, or of known hardware already vouched for."""
    facts = request.facts
    if known is None:
        machine_id, components, last_seen = new_machine_id, facts.components_json, now
        new_period = closes = False
        kind, pending_kind = facts.kind, None
    else:
        kind = known.kind
        pending_kind = None if facts.kind == known.kind else facts.kind
        machine_id = known.machine_id
        # An enrollment reports no components yet: the machine keeps what it last reported.
        components = (
            known.components_json
            if facts.components_json == NO_COMPONENTS
            else facts.components_json
        )
        last_seen = max(known.last_seen, now)
        new_period = known.offboard_state in ("offboarded", "moved")
        closes = closes_run(known.last_seen, now, gap)
    audit = AuditEntry(
        now,
        request.agent_id,
        "machine.enrolled" if known is None else "machine.reenrolled",
        machine_id,
        {
            "client_id": client_id,
            "hostname": facts.hostname,
            "kind": kind,
            "kind_reported": facts.kind,
            "hardware_id": request.hardware_id,
            **({} if known is None else {"proof": "credential" if known.proven else "approval"}),
        },
    )
    return EnrollmentPlan(
        machine_id=machine_id,
        client_id=client_id,
        new_machine=known is None,
        new_coverage_period=known is None or new_period,
        closes_presence_run=closes,
        components_json=components,
        last_seen=last_seen,
        kind=kind,
        pending_kind=pending_kind,
        audit=audit,
    )


def approval_lapses(now: datetime) -> datetime:
    return now + APPROVAL_LIFETIME
