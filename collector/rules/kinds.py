"""A machine's billed kind (pc or server) changes only when an admin says so.

Agents report what they detect, and a client's machine must not re-price itself: a reported kind
that differs from the billed one waits as `pending_kind` until an admin confirms it (or sets the
kind outright). Inventory, and so billing, keeps the confirmed kind until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from collector.store.records import AuditEntry, Conflict, NotFound

KINDS = ("pc", "server")


@dataclass(frozen=True, slots=True)
class KindChange:
    kind: str
    audit: AuditEntry


def decide_kind(
    machine_id: str,
    current: tuple[str, str | None] | None,
    kind: str,
    *,
    actor: str,
    now: datetime,
) -> KindChange | None:
    """`current` is the machine's (kind, pending_kind). None: nothing to change."""
    if current is None:
        raise NotFound("no machine has that id")
    if kind not in KINDS:
        raise Conflict(f"kind must be one of {', '.join(KINDS)}")
    billed, pending = current
    if kind == billed and pending is None:
        return None
    audit = AuditEntry(
        now,
        actor,
        "machine.kind_confirmed",
        machine_id,
        {"from": billed, "to": kind, "reported": pending},
    )
    return KindChange(kind, audit)
