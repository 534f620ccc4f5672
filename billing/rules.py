"""The billing rules, as the business states them. Pure functions: data in, data out, no I/O.

A machine is in inventory at instant T iff all hold:
  1. it was first seen (enrolled) before T;
  2. it was not offboarded (offboard completed) at or before T, nor moved to another client then;
  3. its last heartbeat at or before T is less than 30 days (720 hours) before T.
The invoice for a month bills, in advance like rent, every machine in inventory at its cutoff.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

import msgspec

from billing.currencies import minor_unit
from billing.inventory import Kind, Machine
from billing.pricebook import Price
from wire.times import EXPIRY

KINDS: tuple[Kind, ...] = ("pc", "server")

# Machines billed although silent this long are reported, so the client can ask for an offboard.
OFFLINE_WORTH_FLAGGING = timedelta(days=7)


class Standing(enum.Enum):
    """Where a machine stands at an instant, in the order the rules are checked."""

    NOT_YET_ENROLLED = "not_yet_enrolled"
    OFFBOARDED = "offboarded"
    MOVED = "moved"
    EXPIRED = "expired"
    IN_INVENTORY = "in_inventory"


class Change(enum.Enum):
    """How a machine's billing moved between the previous cutoff and this one."""

    ADDED = "added"
    OFFBOARDED = "offboarded"
    EXPIRED = "expired"
    RECLASSIFIED = "reclassified"
    MOVED = "moved"
    REMOVED = "removed"


def first_seen_before(machine: Machine, instant: datetime) -> bool:
    return machine.first_seen < instant


def offboarded_by(machine: Machine, instant: datetime) -> bool:
    """An offboard counts once it completed; one requested but not completed changes nothing."""
    return machine.offboarded_at is not None and machine.offboarded_at <= instant


def moved_by(machine: Machine, instant: datetime) -> bool:
    """Enrolled under another client at or before the instant: billed there, not here."""
    return machine.moved_at is not None and machine.moved_at <= instant


def silent_for_30_days(machine: Machine, instant: datetime) -> bool:
    """Exactly 30 days (720 hours) of silence is enough to expire.

    A `last_seen` after the instant means the machine was heard from since, so it is not silent.
    """
    return instant - machine.last_seen >= EXPIRY


def standing_at(machine: Machine, instant: datetime) -> Standing:
    if not first_seen_before(machine, instant):
        return Standing.NOT_YET_ENROLLED
    if offboarded_by(machine, instant):
        return Standing.OFFBOARDED
    if moved_by(machine, instant):
        return Standing.MOVED
    if silent_for_30_days(machine, instant):
        return Standing.EXPIRED
    return Standing.IN_INVENTORY


def in_inventory(machine: Machine, instant: datetime) -> bool:
    return standing_at(machine, instant) is Standing.IN_INVENTORY


def inventory_at(machines: Iterable[Machine], instant: datetime) -> list[Machine]:
    return [machine for machine in machines if in_inventory(machine, instant)]


class Heard(Protocol):
    @property
    def last_seen(self) -> datetime: ...


def expires_at(machine: Heard) -> datetime:
    """When a machine that stays silent drops out of inventory."""
    return machine.last_seen + EXPIRY


def offline_for(machine: Machine, instant: datetime) -> timedelta:
    return max(instant - machine.last_seen, timedelta(0))


def offline_7_days_or_more(machine: Machine, instant: datetime) -> bool:
    """Reported for billed machines only: the client pays for them and may want them offboarded."""
    return offline_for(machine, instant) >= OFFLINE_WORTH_FLAGGING


class CoverageGap(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A machine that does not carry the whole deployment at its last heartbeat."""

    machine_id: str
    hostname: str
    kind: Kind
    last_seen: datetime
    missing: tuple[str, ...]
    stopped: tuple[str, ...]
    no_components_reported: bool


def coverage_gap(machine: Machine) -> CoverageGap | None:
    """Coverage is all or nothing: a required component missing or stopped is a gap, and so is a
    machine that reported no components at all."""
    lacking = [c for c in machine.components if c.required and c.status != "running"]
    unreported = not machine.components
    if not (lacking or unreported):
        return None
    missing = tuple(c.name for c in lacking if c.status == "missing")
    stopped = tuple(c.name for c in lacking if c.status == "stopped")
    return CoverageGap(
        machine_id=machine.machine_id,
        hostname=machine.hostname,
        kind=machine.kind,
        last_seen=machine.last_seen,
        missing=missing,
        stopped=stopped,
        no_components_reported=unreported,
    )


def change_between(before: Kind | None, now: Standing | None, kind: Kind) -> Change | None:
    """Compare a machine at the previous cutoff (its kind if it was billed then, else None) with
    its standing and kind at this cutoff (standing None: the inventory no longer lists it)."""
    billed_now = now is Standing.IN_INVENTORY
    if before is None:
        return Change.ADDED if billed_now else None
    if billed_now:
        return Change.RECLASSIFIED if kind != before else None
    if now is Standing.OFFBOARDED:
        return Change.OFFBOARDED
    if now is Standing.MOVED:
        return Change.MOVED
    if now is Standing.EXPIRED:
        return Change.EXPIRED
    return Change.REMOVED


class Line(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    quantity: int
    unit_price: Decimal
    amount: Decimal


def line_amount(quantity: int, unit_price: Decimal, currency: str) -> Decimal:
    """Quantity times price, rounded half up to the currency's minor unit."""
    return (unit_price * quantity).quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def invoice_lines(counts: Mapping[Kind, int], price: Price, currency: str) -> tuple[Line, ...]:
    """One line per kind of machine billed: PCs at the PC price, servers at the server price."""
    return tuple(
        Line(
            kind=kind,
            quantity=counts[kind],
            unit_price=price.for_kind(kind),
            amount=line_amount(counts[kind], price.for_kind(kind), currency),
        )
        for kind in KINDS
        if counts.get(kind, 0) > 0
    )


def invoice_total(lines: Iterable[Line], currency: str) -> Decimal:
    """The total is the sum of the lines, never recomputed from unrounded amounts."""
    return sum((line.amount for line in lines), Decimal(0).quantize(minor_unit(currency)))


def tax_amount(subtotal: Decimal, rate: Decimal, currency: str) -> Decimal:
    """Subtotal times the client's tax rate, rounded half up to the currency's minor unit."""
    return (subtotal * rate).quantize(minor_unit(currency), rounding=ROUND_HALF_UP)
