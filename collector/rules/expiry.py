"""The 30-day rule: a machine not seen for 720 hours drops out of inventory (it expires).

Expiry removes nothing: the machine row stays (its software may still be installed, which is the
licence exposure the billing team must see), and the sweep records once, in the audit log, when it
expired. A machine seen again after expiring is in inventory again, and may expire again later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from collector.store.records import AuditEntry
from wire.times import EXPIRY, format_instant


@dataclass(frozen=True, slots=True)
class ExpiringMachine:
    machine_id: str
    client_id: str
    hostname: str
    last_seen: datetime
    offboard_state: str | None


def expired_before(now: datetime) -> datetime:
    """Machines last seen at or before this instant have expired (exactly 30 days counts)."""
    return now - EXPIRY


def expiry_record(machine: ExpiringMachine, now: datetime) -> AuditEntry:
    """The audit entry the sweep writes for a machine it finds expired."""
    return AuditEntry(
        now,
        "system",
        "machine.expired",
        machine.machine_id,
        {
            "client_id": machine.client_id,
            "hostname": machine.hostname,
            "last_seen": format_instant(machine.last_seen),
            "expired_at": format_instant(machine.last_seen + EXPIRY),
            "offboard_state": machine.offboard_state,
        },
    )
