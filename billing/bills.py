"""What a billing run yields: each client's bill, its machines, its changes since last month,
and the MSP's exposure. Plain values; `billing.engine` makes them from inventories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import msgspec

from billing.explain import Explained
from billing.inventory import Kind, Unmanaged
from billing.months import Month
from billing.pricebook import ClientTerms, Price
from billing.rules import CoverageGap, Line


class BillingError(ValueError):
    """The run is refused; nothing may be written."""


class BilledMachine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    machine_id: str
    hostname: str
    kind: Kind
    first_seen: datetime
    last_seen: datetime


class OfflineMachine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    machine_id: str
    hostname: str
    kind: Kind
    last_seen: datetime
    days_offline: int


class ExposedMachine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Expired without a completed offboard: it still carries licensed software."""

    client_id: str
    machine_id: str
    hostname: str
    kind: Kind
    last_seen: datetime
    expired_at: datetime


class Added(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    machine_id: str
    hostname: str
    kind: Kind
    first_seen: datetime


class Offboarded(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    machine_id: str
    hostname: str
    kind: Kind
    offboarded_at: datetime | None


class Expired(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    machine_id: str
    hostname: str
    kind: Kind
    last_seen: datetime
    expired_at: datetime


class Moved(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The same hardware was enrolled under another client: billed there from then on."""

    machine_id: str
    hostname: str
    kind: Kind
    moved_at: datetime | None
    moved_to_client_id: str | None


class Reclassified(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    machine_id: str
    hostname: str
    previous_kind: Kind = msgspec.field(name="from")
    kind: Kind = msgspec.field(name="to")


class PendingKind(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The agent reports another kind than the billed one; billed as `kind` until confirmed."""

    machine_id: str
    hostname: str
    kind: Kind
    pending_kind: Kind


class Removed(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Billed at the previous cutoff, but this inventory no longer lists it as enrolled."""

    machine_id: str
    hostname: str
    kind: Kind


class Changes(msgspec.Struct, frozen=True, kw_only=True):
    added: tuple[Added, ...]
    offboarded: tuple[Offboarded, ...]
    expired: tuple[Expired, ...]
    reclassified: tuple[Reclassified, ...]
    moved: tuple[Moved, ...]
    removed: tuple[Removed, ...]


@dataclass(frozen=True, slots=True)
class ClientBill:
    client: ClientTerms
    month: Month
    cutoff: datetime
    previous_cutoff: datetime
    evaluated_at: datetime  # the cutoff for a run; the inventory's instant for a preview
    price: Price | None
    lines: tuple[Line, ...]
    total: Decimal
    machines: tuple[BilledMachine, ...]
    changes: Changes | None  # None: no inventory as of the previous cutoff was given
    offline: tuple[OfflineMachine, ...]
    coverage_gaps: tuple[CoverageGap, ...]
    exposure: tuple[ExposedMachine, ...]
    expiring: tuple[BilledMachine, ...]  # previews: silent long enough to drop out by the cutoff
    pending_kind: tuple[PendingKind, ...] = ()
    unbilled: tuple[Explained, ...] = ()  # the client's other rows, and the rule for each
    unmanaged: tuple[Unmanaged, ...] = ()  # devices on its network without an agent
    rows_seen: int = 0  # rows of this client in the inventory, billed or not

    def quantity(self, kind: Kind) -> int:
        return sum(line.quantity for line in self.lines if line.kind == kind)


@dataclass(frozen=True, slots=True)
class MonthBill:
    month: Month
    bills: tuple[ClientBill, ...]  # in client id order
    exposure: tuple[ExposedMachine, ...]  # every client's, for the MSP
    warnings: tuple[str, ...] = ()
