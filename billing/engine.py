"""Applies the rules to whole inventories, one row at a time, and gathers each client's bill.

Nothing here reads files or talks to the network: inventories come in as (as_of, machines) and a
`MonthBill` comes out. Rows are consumed as they stream by, so a million machines never need to be
held in memory at once; only what the invoices and reports list is kept.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Protocol

from billing.bills import (
    Added,
    BilledMachine,
    BillingError,
    Changes,
    ClientBill,
    Expired,
    ExposedMachine,
    MonthBill,
    Moved,
    Offboarded,
    OfflineMachine,
    PendingKind,
    Reclassified,
    Removed,
)
from billing.explain import Explained, explained
from billing.inventory import Kind, Machine, Unmanaged
from billing.months import Month
from billing.pricebook import ClientTerms, PriceBook
from billing.rules import (
    Change,
    CoverageGap,
    Standing,
    change_between,
    coverage_gap,
    expires_at,
    in_inventory,
    invoice_lines,
    invoice_total,
    offline_7_days_or_more,
    offline_for,
    standing_at,
)
from wire.times import format_instant


class Role(enum.Enum):
    CURRENT = "current"
    PREVIOUS = "previous"


class _Listed(Protocol):
    @property
    def machine_id(self) -> str: ...
    @property
    def hostname(self) -> str: ...


def _exposed(machine: Machine) -> ExposedMachine:
    return ExposedMachine(
        client_id=machine.client_id,
        machine_id=machine.machine_id,
        hostname=machine.hostname,
        kind=machine.kind,
        last_seen=machine.last_seen,
        expired_at=expires_at(machine),
    )


def _by_host(item: _Listed) -> tuple[str, str]:
    return (item.hostname.casefold(), item.machine_id)


def _by_client(item: ExposedMachine) -> tuple[str, str, str]:
    return (item.client_id, item.hostname.casefold(), item.machine_id)


class _ClientTally:
    """One client's share of an inventory, gathered row by row."""

    def __init__(
        self,
        terms: ClientTerms,
        month: Month,
        at: datetime,
        previous: dict[str, tuple[Kind, str]] | None,
    ) -> None:
        self.terms = terms
        self.month = month
        self.at = at
        self.previous = previous
        self.billed: list[BilledMachine] = []
        self.offline: list[OfflineMachine] = []
        self.gaps: list[CoverageGap] = []
        self.exposure: list[ExposedMachine] = []
        self.added: list[Added] = []
        self.offboarded: list[Offboarded] = []
        self.expired: list[Expired] = []
        self.reclassified: list[Reclassified] = []
        self.moved: list[Moved] = []
        self.pending_kind: list[PendingKind] = []
        self.seen = 0
        self.unbilled: list[Explained] = []
        self.unmanaged: list[Unmanaged] = []
        self.removed: list[Removed] = []

    def take(self, machine: Machine) -> None:
        at = self.at
        self.seen += 1
        standing = standing_at(machine, at)
        if standing is Standing.IN_INVENTORY:
            if machine.pending_kind is not None and machine.pending_kind != machine.kind:
                self.pending_kind.append(
                    PendingKind(
                        machine_id=machine.machine_id,
                        hostname=machine.hostname,
                        kind=machine.kind,
                        pending_kind=machine.pending_kind,
                    )
                )
            self.billed.append(
                BilledMachine(
                    machine_id=machine.machine_id,
                    hostname=machine.hostname,
                    kind=machine.kind,
                    first_seen=machine.first_seen,
                    last_seen=machine.last_seen,
                )
            )
            if offline_7_days_or_more(machine, at):
                self.offline.append(
                    OfflineMachine(
                        machine_id=machine.machine_id,
                        hostname=machine.hostname,
                        kind=machine.kind,
                        last_seen=machine.last_seen,
                        days_offline=offline_for(machine, at).days,
                    )
                )
            gap = coverage_gap(machine)
            if gap is not None:
                self.gaps.append(gap)
        else:
            self.unbilled.append(explained(machine, standing, at))
            if standing is Standing.EXPIRED:
                self.exposure.append(_exposed(machine))
        if self.previous is not None:
            before = self.previous.pop(machine.machine_id, None)
            before_kind = None if before is None else before[0]
            change = change_between(before_kind, standing, machine.kind)
            if change is not None:
                self._note(change, machine, before_kind)

    def _note(self, change: Change, machine: Machine, before_kind: Kind | None) -> None:
        mid, host, kind = machine.machine_id, machine.hostname, machine.kind
        if change is Change.ADDED:
            self.added.append(
                Added(machine_id=mid, hostname=host, kind=kind, first_seen=machine.first_seen)
            )
        elif change is Change.RECLASSIFIED:
            assert before_kind is not None
            self.reclassified.append(
                Reclassified(machine_id=mid, hostname=host, previous_kind=before_kind, kind=kind)
            )
        elif change is Change.OFFBOARDED:
            self.offboarded.append(
                Offboarded(
                    machine_id=mid, hostname=host, kind=kind, offboarded_at=machine.offboarded_at
                )
            )
        elif change is Change.MOVED:
            self.moved.append(
                Moved(
                    machine_id=mid,
                    hostname=host,
                    kind=kind,
                    moved_at=machine.moved_at,
                    moved_to_client_id=machine.moved_to_client_id,
                )
            )
        elif change is Change.EXPIRED:
            self.expired.append(
                Expired(
                    machine_id=mid,
                    hostname=host,
                    kind=kind,
                    last_seen=machine.last_seen,
                    expired_at=expires_at(machine),
                )
            )
        else:
            self.removed.append(Removed(machine_id=mid, hostname=host, kind=before_kind or kind))

    def close(self, problems: list[str]) -> ClientBill | None:
        terms, month = self.terms, self.month
        cutoff = terms.cutoff(month)
        machines = tuple(sorted(self.billed, key=_by_host))
        counts: dict[Kind, int] = {"pc": 0, "server": 0}
        for machine in machines:
            counts[machine.kind] += 1
        price = terms.price_in_force(month)
        if price is None and machines:
            problems.append(
                f"client {terms.label}: {len(machines)} machine(s) to bill but no price in "
                f"force at its cutoff ({month.first_day}); its first price starts "
                f"{terms.prices[0].starts}"
            )
            return None
        lines = () if price is None else invoice_lines(counts, price, terms.currency)
        changes = None
        if self.previous is not None:
            self.removed.extend(
                Removed(machine_id=machine_id, hostname=hostname, kind=kind)
                for machine_id, (kind, hostname) in self.previous.items()
            )
            changes = Changes(
                added=tuple(sorted(self.added, key=_by_host)),
                offboarded=tuple(sorted(self.offboarded, key=_by_host)),
                expired=tuple(sorted(self.expired, key=_by_host)),
                reclassified=tuple(sorted(self.reclassified, key=_by_host)),
                moved=tuple(sorted(self.moved, key=_by_host)),
                removed=tuple(sorted(self.removed, key=_by_host)),
            )
        expiring: tuple[BilledMachine, ...] = ()
        if self.at < cutoff:
            expiring = tuple(m for m in machines if expires_at(m) <= cutoff)
        return ClientBill(
            client=terms,
            month=month,
            cutoff=cutoff,
            previous_cutoff=terms.cutoff(month.previous()),
            evaluated_at=self.at,
            price=price,
            lines=lines,
            total=invoice_total(lines, terms.currency),
            machines=machines,
            changes=changes,
            offline=tuple(sorted(self.offline, key=_by_host)),
            coverage_gaps=tuple(sorted(self.gaps, key=_by_host)),
            exposure=tuple(sorted(self.exposure, key=_by_client)),
            expiring=expiring,
            pending_kind=tuple(sorted(self.pending_kind, key=_by_host)),
            rows_seen=self.seen,
            unbilled=tuple(sorted(self.unbilled, key=_by_host)),
            unmanaged=tuple(sorted(self.unmanaged, key=lambda d: d.mac)),
        )


class MonthRun:
    """Bills a month from inventories as of each client's cutoff (and previous cutoff).

    Feed every previous-cutoff inventory before the current ones: the change report compares
    each machine with the previous month as its current row streams by.
    """

    def __init__(self, book: PriceBook, month: Month) -> None:
        self.book = book
        self.month = month
        self.cutoffs = {cid: terms.cutoff(month) for cid, terms in book.clients.items()}
        self.previous_cutoffs = {
            cid: terms.cutoff(month.previous()) for cid, terms in book.clients.items()
        }
        self._previous: dict[str, dict[str, tuple[Kind, str]]] = {}
        self._tallies: dict[str, _ClientTally] = {}
        self._sources: dict[datetime, str] = {}
        self._unpriced = _Unpriced()

    def role_of(self, as_of: datetime) -> Role | None:
        if as_of in self.cutoffs.values():
            return Role.CURRENT
        if as_of in self.previous_cutoffs.values():
            return Role.PREVIOUS
        return None

    def expect(self, as_of: datetime, source: str) -> Role:
        """The role of an inventory as of `as_of`; refused if it is neither."""
        role = self.role_of(as_of)
        if role is None:
            expected = sorted({*self.cutoffs.values(), *self.previous_cutoffs.values()})
            shown = ", ".join(format_instant(moment) for moment in expected) or "none"
            raise BillingError(
                f"{source}: inventory as of {format_instant(as_of)} is neither a client's cutoff "
                f"nor its previous cutoff for {self.month} (expected one of: {shown})"
            )
        return role

    def take(
        self,
        as_of: datetime,
        machines: Iterable[Machine],
        source: str,
        unmanaged: Iterable[Unmanaged] = (),
    ) -> None:
        role = self.expect(as_of, source)
        if as_of in self._sources:
            raise BillingError(
                f"two inventories as of {format_instant(as_of)} were given: "
                f"{self._sources[as_of]} and {source}"
            )
        self._sources[as_of] = source
        rows = _unique(machines, source)
        if role is Role.PREVIOUS:
            self._take_previous(as_of, rows)
        else:
            self._take_current(as_of, rows)
            for device in unmanaged:
                tally = self._tallies.get(device.client_id)
                if tally is not None and tally.at == as_of:
                    tally.unmanaged.append(device)

    def _take_previous(self, as_of: datetime, machines: Iterable[Machine]) -> None:
        clients = {cid for cid, moment in self.previous_cutoffs.items() if moment == as_of}
        if clients & self._tallies.keys():
            raise RuntimeError("previous-cutoff inventories must be taken before current ones")
        billed_then: dict[str, dict[str, tuple[Kind, str]]] = {cid: {} for cid in clients}
        for machine in machines:
            billed = billed_then.get(machine.client_id)
            if billed is not None and in_inventory(machine, as_of):
                billed[machine.machine_id] = (machine.kind, machine.hostname)
        self._previous.update(billed_then)

    def _take_current(self, as_of: datetime, machines: Iterable[Machine]) -> None:
        tallies: dict[str, _ClientTally] = {}
        for cid, moment in self.cutoffs.items():
            if moment == as_of:
                terms = self.book.clients[cid]
                tallies[cid] = _ClientTally(terms, self.month, as_of, self._previous.pop(cid, None))
        self._tallies.update(tallies)
        known = self.book.clients
        for machine in machines:
            tally = tallies.get(machine.client_id)
            if tally is not None:
                tally.take(machine)
            elif machine.client_id not in known:
                self._unpriced.take(machine, as_of)

    def finish(self) -> MonthBill:
        problems = self._unpriced.problems()
        for cid in sorted(self.book.clients.keys() - self._tallies.keys()):
            problems.append(
                f"client {self.book.label(cid)}: no inventory as of its cutoff "
                f"{format_instant(self.cutoffs[cid])} was given"
            )
        bills = _close_all(self._tallies, problems)
        if problems:
            raise BillingError("; ".join(problems))
        return MonthBill(
            self.month, bills, _all_exposure(bills, self._unpriced.exposure), _warnings(bills)
        )


def _warnings(bills: Iterable[ClientBill]) -> tuple[str, ...]:
    return tuple(
        f"client {bill.client.label} is in the price book but the inventory has no machine of "
        "it at all: check its id against `rmm-collector client list`"
        for bill in bills
        if bill.rows_seen == 0
    )


class _Unpriced:
    """Rows of clients missing from the price book.

    One of their machines in inventory means a client would go unbilled: the run is refused. A
    former client whose machines were all offboarded or expired is no reason to stop billing the
    others, but its expired machines still carry licensed software, so they count as exposure.
    """

    def __init__(self) -> None:
        self.in_inventory: dict[str, list[int]] = {}
        self.exposure: dict[str, ExposedMachine] = {}

    def take(self, machine: Machine, as_of: datetime) -> None:
        standing = standing_at(machine, as_of)
        if standing is Standing.IN_INVENTORY:
            self.in_inventory.setdefault(machine.client_id, [0])[0] += 1
        elif standing is Standing.EXPIRED:
            self.exposure.setdefault(machine.machine_id, _exposed(machine))

    def problems(self) -> list[str]:
        # Its own cutoff is unknown (its time zone is in the price book it is missing from), so
        # the message quotes no instant: an inventory's `as_of` is some other client's cutoff.
        return [
            f"client {cid!r} is not in the price book, yet {count[0]:,} of its machines are in "
            "inventory; add it (with its time zone) so it is billed at its own cutoff"
            for cid, count in sorted(self.in_inventory.items())
        ]


def _close_all(tallies: dict[str, _ClientTally], problems: list[str]) -> tuple[ClientBill, ...]:
    closed = (tallies[cid].close(problems) for cid in sorted(tallies))
    return tuple(bill for bill in closed if bill is not None)


def _all_exposure(
    bills: Iterable[ClientBill], unpriced: dict[str, ExposedMachine]
) -> tuple[ExposedMachine, ...]:
    exposed = [m for bill in bills for m in bill.exposure] + list(unpriced.values())
    return tuple(sorted(exposed, key=_by_client))


def _unique(machines: Iterable[Machine], source: str) -> Iterator[Machine]:
    seen: set[str] = set()
    for machine in machines:
        if machine.machine_id in seen:
            raise BillingError(f"{source}: machine {machine.machine_id!r} appears twice")
        seen.add(machine.machine_id)
        yield machine


def bill_month(
    book: PriceBook,
    month: Month,
    inventories: Iterable[tuple[datetime, Iterable[Machine]]],
) -> MonthBill:
    """Bill `month` from in-memory inventories given as (as_of, machines), in any order."""
    run = MonthRun(book, month)
    given = list(inventories)
    ordered = sorted(given, key=lambda item: run.role_of(item[0]) is Role.CURRENT)
    for as_of, machines in ordered:
        run.take(as_of, machines, f"inventory as of {format_instant(as_of)}")
    return run.finish()


def preview_month(
    book: PriceBook, month: Month, as_of: datetime, machines: Iterable[Machine], source: str
) -> MonthBill:
    """What `month` will bill if nothing changes: the inventory as it stands at `as_of`, priced at
    the month's cutoff. Machines silent long enough to expire before the cutoff are still counted,
    and listed apart (`expiring`) so the account manager can chase them."""
    tallies = {cid: _ClientTally(terms, month, as_of, None) for cid, terms in book.clients.items()}
    unpriced = _Unpriced()
    for machine in _unique(machines, source):
        tally = tallies.get(machine.client_id)
        if tally is None:
            unpriced.take(machine, as_of)
        else:
            tally.take(machine)
    problems = unpriced.problems()
    bills = _close_all(tallies, problems)
    if problems:
        raise BillingError("; ".join(problems))
    return MonthBill(month, bills, _all_exposure(bills, unpriced.exposure))
