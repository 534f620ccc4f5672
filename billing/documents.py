"""The shapes written to `invoices.json` and `reports.json`, built from a month's bill."""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal

import msgspec

from billing.engine import (
    Added,
    BilledMachine,
    ClientBill,
    Expired,
    ExposedMachine,
    MonthBill,
    Offboarded,
    OfflineMachine,
    Reclassified,
    Removed,
)
from billing.inventory import Kind
from billing.months import Month
from billing.rules import CoverageGap
from wire.times import format_instant


class LineEntry(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    quantity: int
    unit_price: str
    amount: str


class Invoice(msgspec.Struct, frozen=True, kw_only=True):
    number: str
    version: int
    client_id: str
    client_name: str
    month: str
    currency: str
    cutoff: datetime
    issued_at: datetime
    supersedes: str | None
    lines: tuple[LineEntry, ...]
    total: str
    machines: tuple[BilledMachine, ...]


class _Content(msgspec.Struct, array_like=True):
    """What an invoice says, apart from its number and issue date: compared on reruns."""

    client_id: str
    currency: str
    cutoff: datetime
    lines: tuple[LineEntry, ...]
    total: str
    machines: tuple[BilledMachine, ...]


def money(amount: Decimal) -> str:
    """Plain digits, never exponent notation: `1000.00`, not `1.000E+3`."""
    return format(amount, "f")


def invoice_number(client_id: str, month: Month, version: int) -> str:
    """Deterministic and unique per (client, month, version), e.g. `202603-acme-dental-1`."""
    return f"{month.compact}-{client_id}-{version}"


def line_entries(bill: ClientBill) -> tuple[LineEntry, ...]:
    return tuple(
        LineEntry(
            kind=line.kind,
            quantity=line.quantity,
            unit_price=money(line.unit_price),
            amount=money(line.amount),
        )
        for line in bill.lines
    )


def content_digest(bill: ClientBill) -> str:
    content = _Content(
        client_id=bill.client.client_id,
        currency=bill.client.currency,
        cutoff=bill.cutoff,
        lines=line_entries(bill),
        total=money(bill.total),
        machines=bill.machines,
    )
    return hashlib.sha256(msgspec.json.encode(content)).hexdigest()


def draft_invoice(
    bill: ClientBill, *, version: int, issued_at: datetime, supersedes: str | None
) -> Invoice:
    return Invoice(
        number=invoice_number(bill.client.client_id, bill.month, version),
        version=version,
        client_id=bill.client.client_id,
        client_name=bill.client.name,
        month=str(bill.month),
        currency=bill.client.currency,
        cutoff=bill.cutoff,
        issued_at=issued_at,
        supersedes=supersedes,
        lines=line_entries(bill),
        total=money(bill.total),
        machines=bill.machines,
    )


def encode_invoice(invoice: Invoice) -> bytes:
    return msgspec.json.encode(invoice)


def decode_invoice(document: bytes) -> Invoice:
    return msgspec.json.decode(document, type=Invoice)


class ChangeReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Changes since the previous cutoff; the lists are left out when they cannot be known."""

    previous_inventory: bool
    detail: str
    added: tuple[Added, ...] | None = None
    offboarded: tuple[Offboarded, ...] | None = None
    expired: tuple[Expired, ...] | None = None
    reclassified: tuple[Reclassified, ...] | None = None
    removed: tuple[Removed, ...] | None = None


def change_report(bill: ClientBill) -> ChangeReport:
    since = format_instant(bill.previous_cutoff)
    changes = bill.changes
    if changes is None:
        return ChangeReport(
            previous_inventory=False,
            detail=f"no inventory as of the previous cutoff ({since}) was given, "
            "so changes since last month are unknown",
        )
    return ChangeReport(
        previous_inventory=True,
        detail=f"compared with the inventory as of the previous cutoff ({since})",
        added=changes.added,
        offboarded=changes.offboarded,
        expired=changes.expired,
        reclassified=changes.reclassified,
        removed=changes.removed,
    )


class ClientReport(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    client_name: str
    cutoff: datetime
    previous_cutoff: datetime
    billed: dict[str, int]
    changes: ChangeReport
    offline_7_days: tuple[OfflineMachine, ...]
    coverage_gaps: tuple[CoverageGap, ...]


class Reports(msgspec.Struct, frozen=True, kw_only=True):
    month: str
    clients: tuple[ClientReport, ...]
    licence_exposure: tuple[ExposedMachine, ...]


def build_reports(month_bill: MonthBill) -> Reports:
    return Reports(
        month=str(month_bill.month),
        clients=tuple(
            ClientReport(
                client_id=bill.client.client_id,
                client_name=bill.client.name,
                cutoff=bill.cutoff,
                previous_cutoff=bill.previous_cutoff,
                billed={"pc": bill.quantity("pc"), "server": bill.quantity("server")},
                changes=change_report(bill),
                offline_7_days=bill.offline,
                coverage_gaps=bill.coverage_gaps,
            )
            for bill in month_bill.bills
        ),
        licence_exposure=month_bill.exposure,
    )


def encode_reports(reports: Reports) -> bytes:
    return msgspec.json.format(msgspec.json.encode(reports), indent=2) + b"\n"
