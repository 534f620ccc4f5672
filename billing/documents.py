"""The shapes written to `invoices.json` and `reports.json`, built from a month's bill."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

import msgspec

from billing.bills import (
    Added,
    BilledMachine,
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
from billing.inventory import Kind, Unmanaged
from billing.months import Month
from billing.pricebook import ClientTerms, Seller
from billing.rules import CoverageGap, tax_amount
from wire.times import format_instant

KIND_NAME = {"pc": "Managed PC", "server": "Managed server"}
Status = Literal["issued", "superseded"]


class LineEntry(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    description: str
    quantity: int
    unit_price: str
    amount: str


class SellerBlock(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    address: str
    tax_id: str


class BuyerBlock(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    name: str
    address: str
    po_number: str


class ServicePeriod(msgspec.Struct, frozen=True, kw_only=True):
    start: str  # the first and last day of the month, in the client's time zone
    end: str
    text: str  # "1-31 December 2025"


class Invoice(msgspec.Struct, frozen=True, kw_only=True):
    number: str
    status: Status
    version: int
    client_id: str
    client_name: str
    month: str
    currency: str
    timezone: str
    cutoff: datetime
    issue_date: str
    due_date: str
    payment_terms_days: int
    service_period: ServicePeriod
    seller: SellerBlock
    buyer: BuyerBlock
    lines: tuple[LineEntry, ...]
    subtotal: str
    tax_label: str
    tax_rate: str
    tax: str
    total: str
    issued_at: datetime
    supersedes: str | None
    machines: tuple[BilledMachine, ...]


class CreditNote(msgspec.Struct, frozen=True, kw_only=True):
    """Cancels an issued invoice in full when a new version replaces it; it has its own number
    from the same sequence, so the books show both documents."""

    number: str
    credits: str  # the invoice it cancels
    replaced_by: str
    client_id: str
    client_name: str
    month: str
    currency: str
    issue_date: str
    seller: SellerBlock
    buyer: BuyerBlock
    lines: tuple[LineEntry, ...]
    subtotal: str
    tax_label: str
    tax: str
    total: str
    issued_at: datetime


class _Content(msgspec.Struct, array_like=True):
    """What an invoice says, apart from its number and issue date: compared on reruns."""

    client_id: str
    currency: str
    cutoff: datetime
    lines: tuple[LineEntry, ...]
    subtotal: str
    tax: str
    total: str
    machines: tuple[BilledMachine, ...]


def money(amount: Decimal) -> str:
    """Plain digits, never exponent notation: `1000.00`, not `1.000E+3`."""
    return format(amount, "f")


def line_description(kind: Kind, month: Month) -> str:
    """`Managed PC, December 2025`."""
    return f"{KIND_NAME[kind]}, {month.first_day.strftime('%B %Y')}"


def service_period(month: Month) -> ServicePeriod:
    first = month.first_day
    last = month.next().first_day - timedelta(days=1)
    return ServicePeriod(
        start=first.isoformat(),
        end=last.isoformat(),
        text=f"1-{last.day} {first.strftime('%B %Y')}",
    )


def line_entries(bill: ClientBill) -> tuple[LineEntry, ...]:
    return tuple(
        LineEntry(
            kind=line.kind,
            description=line_description(line.kind, bill.month),
            quantity=line.quantity,
            unit_price=money(line.unit_price),
            amount=money(line.amount),
        )
        for line in bill.lines
    )


def bill_tax(bill: ClientBill) -> Decimal:
    return tax_amount(bill.total, bill.client.tax_rate, bill.client.currency)


def content_digest(bill: ClientBill) -> str:
    tax = bill_tax(bill)
    content = _Content(
        client_id=bill.client.client_id,
        currency=bill.client.currency,
        cutoff=bill.cutoff,
        lines=line_entries(bill),
        subtotal=money(bill.total),
        tax=money(tax),
        total=money(bill.total + tax),
        machines=bill.machines,
    )
    return hashlib.sha256(msgspec.json.encode(content)).hexdigest()


def seller_block(seller: Seller) -> SellerBlock:
    return SellerBlock(name=seller.name, address=seller.address, tax_id=seller.tax_id)


def buyer_block(terms: ClientTerms) -> BuyerBlock:
    return BuyerBlock(
        client_id=terms.client_id,
        name=terms.name,
        address=terms.billing_address,
        po_number=terms.po_number,
    )


def draft_invoice(
    bill: ClientBill,
    seller: Seller,
    *,
    number: str,
    version: int,
    issued_at: datetime,
    supersedes: str | None,
) -> Invoice:
    """The invoice for `bill`. The issue date is the cutoff's local date, whenever it is run."""
    terms = bill.client
    issue = bill.cutoff.astimezone(terms.zone).date()
    tax = bill_tax(bill)
    return Invoice(
        number=number,
        status="issued",
        version=version,
        client_id=terms.client_id,
        client_name=terms.name,
        month=str(bill.month),
        currency=terms.currency,
        timezone=terms.zone.key,
        cutoff=bill.cutoff,
        issue_date=issue.isoformat(),
        due_date=(issue + timedelta(days=seller.payment_terms_days)).isoformat(),
        payment_terms_days=seller.payment_terms_days,
        service_period=service_period(bill.month),
        seller=seller_block(seller),
        buyer=buyer_block(terms),
        lines=line_entries(bill),
        subtotal=money(bill.total),
        tax_label=terms.tax_label,
        tax_rate=money(terms.tax_rate),
        tax=money(tax),
        total=money(bill.total + tax),
        issued_at=issued_at,
        supersedes=supersedes,
        machines=bill.machines,
    )


def _negated(amount: str) -> str:
    return money(-Decimal(amount)) if Decimal(amount) else amount


def credit_note_for(
    invoice: Invoice, *, number: str, replaced_by: str, now: datetime
) -> CreditNote:
    """A credit note for the whole of `invoice`, dated like the invoice that replaces it."""
    return CreditNote(
        number=number,
        credits=invoice.number,
        replaced_by=replaced_by,
        client_id=invoice.client_id,
        client_name=invoice.client_name,
        month=invoice.month,
        currency=invoice.currency,
        issue_date=invoice.issue_date,
        seller=invoice.seller,
        buyer=invoice.buyer,
        lines=tuple(
            msgspec.structs.replace(
                line,
                description=f"Credit for invoice {invoice.number}: {line.description}",
                quantity=-line.quantity,
                amount=_negated(line.amount),
            )
            for line in invoice.lines
        ),
        subtotal=_negated(invoice.subtotal),
        tax_label=invoice.tax_label,
        tax=_negated(invoice.tax),
        total=_negated(invoice.total),
        issued_at=now,
    )


def encode_invoice(invoice: Invoice) -> bytes:
    return msgspec.json.encode(invoice)


def decode_invoice(document: bytes) -> Invoice:
    return msgspec.json.decode(document, type=Invoice)


def encode_credit_note(note: CreditNote) -> bytes:
    return msgspec.json.encode(note)


def decode_credit_note(document: bytes) -> CreditNote:
    return msgspec.json.decode(document, type=CreditNote)


class ChangeReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Changes since the previous cutoff; the lists are left out when they cannot be known."""

    previous_inventory: bool
    detail: str
    added: tuple[Added, ...] | None = None
    offboarded: tuple[Offboarded, ...] | None = None
    expired: tuple[Expired, ...] | None = None
    reclassified: tuple[Reclassified, ...] | None = None
    moved: tuple[Moved, ...] | None = None
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
        moved=changes.moved,
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
    pending_kind: tuple[PendingKind, ...]
    unmanaged: tuple[Unmanaged, ...]  # devices without an agent; empty when none are known


class NotInvoiced(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    client_name: str
    reason: str


class HeldDraft(msgspec.Struct, frozen=True, kw_only=True):
    """An invoice held for review: issued by `rmm-billing approve`."""

    client_id: str
    client_name: str
    reason: str
    machines: int
    previous_invoice: str
    previous_machines: int


class Reports(msgspec.Struct, frozen=True, kw_only=True):
    month: str
    clients: tuple[ClientReport, ...]
    licence_exposure: tuple[ExposedMachine, ...]
    not_invoiced: tuple[NotInvoiced, ...] = ()
    held_for_review: tuple[HeldDraft, ...] = ()
    warnings: tuple[str, ...] = ()


def build_reports(
    month_bill: MonthBill,
    *,
    not_invoiced: tuple[NotInvoiced, ...] = (),
    held: tuple[HeldDraft, ...] = (),
) -> Reports:
    return Reports(
        not_invoiced=not_invoiced,
        held_for_review=held,
        warnings=month_bill.warnings,
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
                pending_kind=bill.pending_kind,
                unmanaged=bill.unmanaged,
            )
            for bill in month_bill.bills
        ),
        licence_exposure=month_bill.exposure,
    )


def encode_reports(reports: Reports) -> bytes:
    return msgspec.json.format(msgspec.json.encode(reports), indent=2) + b"\n"
