"""What an enrollment does: a new machine, a re-image of a known one, or a new coverage period.

Known hardware (the same hardware id under the same client) is the same machine: a re-image or
`enroll --force` keeps its machine id and its `first_seen`, so it is never a new free month. A
machine offboarded and later enrolled again starts a new coverage period: from then on it has the
new `first_seen` and no `offboarded_at`. Enrollment counts as a heartbeat (it may end a run of
presence), and the new agent's token replaces every earlier one of the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.rules.presence import closes_run
from collector.store.records import AuditEntry, EnrollRequestRecord

NO_COMPONENTS = "[]"


@dataclass(frozen=True, slots=True)
class KnownHardware:
    """The machine already enrolled with this hardware id for the token's client."""

    machine_id: str
    offboard_state: str | None
    last_seen: datetime
    components_json: str
    kind: str = "pc"


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

    @property
    def reenrolled(self) -> bool:
        return not self.new_machine


def plan_enrollment(
    request: EnrollRequestRecord,
    known: KnownHardware | None,
    *,
    client_id: str,
    new_machine_id: str,
    now: datetime,
    gap: timedelta,
) -> EnrollmentPlan:
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
        new_period = known.offboard_state == "offboarded"
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
