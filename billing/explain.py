"""Why each machine was billed or not: the rule that decided, and the sentence a client is told.

A plain function of one inventory row and the cutoff; the run's appendix and evidence files, and
`rmm-billing explain`, all use it, so an invoice and its explanation can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import msgspec

from billing.inventory import Kind, Machine
from billing.rules import Standing, standing_at

Rule = Literal["billed", "not_enrolled_yet", "offboarded", "moved", "expired"]

RULE_OF: dict[Standing, Rule] = {
    Standing.IN_INVENTORY: "billed",
    Standing.NOT_YET_ENROLLED: "not_enrolled_yet",
    Standing.OFFBOARDED: "offboarded",
    Standing.MOVED: "moved",
    Standing.EXPIRED: "expired",
}


class Explained(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One machine of a client as of a cutoff, with the decision and its reason."""

    machine_id: str
    hostname: str
    kind: Kind
    billed: bool
    rule: Rule
    detail: str
    first_seen: datetime
    last_seen: datetime
    offboarded_at: datetime | None = None
    moved_at: datetime | None = None
    moved_to_client_id: str | None = None


def utc_minutes(moment: datetime) -> str:
    """`2025-10-31 23:00 UTC`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(delta: timedelta) -> str:
    days = delta.days
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = int(delta.total_seconds() // 3600)
    if hours >= 1:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(int(delta.total_seconds() // 60), 0)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def reason(machine: Machine, standing: Standing, cutoff: datetime) -> str:
    """The sentence for `machine`, whose standing at `cutoff` is `standing`."""
    if standing is Standing.NOT_YET_ENROLLED:
        return (
            f"first seen {utc_minutes(machine.first_seen)}, at or after the cutoff: free this "
            "month, billed from next month"
        )
    if standing is Standing.OFFBOARDED:
        assert machine.offboarded_at is not None
        return (
            f"offboarded {utc_minutes(machine.offboarded_at)}, "
            f"{_span(cutoff - machine.offboarded_at)} before the cutoff: no longer covered"
        )
    if standing is Standing.MOVED:
        assert machine.moved_at is not None
        to = machine.moved_to_client_id or "another client"
        return (
            f"moved to {to} {utc_minutes(machine.moved_at)}, before the cutoff: billed to that "
            "client from then on"
        )
    if standing is Standing.EXPIRED:
        return (
            f"last seen {utc_minutes(machine.last_seen)}, "
            f"{_span(cutoff - machine.last_seen)} before the cutoff: dropped out of inventory"
        )
    return billed_reason(machine.first_seen, machine.last_seen, cutoff)


def billed_reason(first_seen: datetime, last_seen: datetime, cutoff: datetime) -> str:
    """The sentence for a machine in inventory at the cutoff."""
    silent = cutoff - last_seen
    if silent <= timedelta(0):
        heard = "heard from at the cutoff"
    else:
        heard = f"last seen {utc_minutes(last_seen)}, {_span(silent)} before the cutoff"
    return f"enrolled {utc_minutes(first_seen)}, {heard}: in inventory, billed"


def explain(machine: Machine, cutoff: datetime) -> Explained:
    standing = standing_at(machine, cutoff)
    return explained(machine, standing, cutoff)


def explained(machine: Machine, standing: Standing, cutoff: datetime) -> Explained:
    return Explained(
        machine_id=machine.machine_id,
        hostname=machine.hostname,
        kind=machine.kind,
        billed=standing is Standing.IN_INVENTORY,
        rule=RULE_OF[standing],
        detail=reason(machine, standing, cutoff),
        first_seen=machine.first_seen,
        last_seen=machine.last_seen,
        offboarded_at=machine.offboarded_at,
        moved_at=machine.moved_at,
        moved_to_client_id=machine.moved_to_client_id,
    )


class Billed(Protocol):
    @property
    def machine_id(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def first_seen(self) -> datetime: ...
    @property
    def last_seen(self) -> datetime: ...


def _utc_column(moments: Sequence[datetime]) -> list[str]:
    # A million rows per run: format whole columns in C rather than one strftime per cell.
    encoded = msgspec.json.encode([moment.astimezone(UTC) for moment in moments])
    return [
        f"{text[:10]} {text[11:16]} UTC" for text in msgspec.json.decode(encoded, type=list[str])
    ]


def billed_rows(machines: Sequence[Billed], cutoff: datetime) -> list[Explained]:
    """The billed machines of an invoice with their sentence, as `explain` words it."""
    firsts = _utc_column([m.first_seen for m in machines])
    lasts = _utc_column([m.last_seen for m in machines])
    rows = []
    for machine, first, last in zip(machines, firsts, lasts, strict=True):
        silent = cutoff - machine.last_seen
        if silent <= timedelta(0):
            heard = "heard from at the cutoff"
        else:
            heard = f"last seen {last}, {_span(silent)} before the cutoff"
        rows.append(
            Explained(
                machine_id=machine.machine_id,
                hostname=machine.hostname,
                kind=machine.kind,
                billed=True,
                rule="billed",
                detail=f"enrolled {first}, {heard}: in inventory, billed",
                first_seen=machine.first_seen,
                last_seen=machine.last_seen,
            )
        )
    return rows
