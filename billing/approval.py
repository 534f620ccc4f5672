"""Drafts held for review: what a preview would hold, and issuing one once a person approved it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from billing.bills import BillingError, MonthBill
from billing.documents import Invoice, decode_invoice, encode_invoice
from billing.ledger import Ledger, NewInvoice
from billing.months import Month
from billing.pricebook import Seller
from billing.review import ReviewBounds, swing_reason


def approve(ledger_path: Path, month: Month, client_id: str, now: datetime) -> Invoice:
    """Issue the held draft of `client_id` for `month`: it takes the next number of its series."""
    if not ledger_path.exists():
        raise BillingError(f"ledger {ledger_path}: does not exist; nothing is held")
    with Ledger.open(ledger_path) as ledger, ledger.transaction():
        drafts = {draft.client_id: draft for draft in ledger.drafts(str(month))}
        draft = drafts.get(client_id)
        if draft is None:
            held = ", ".join(sorted(drafts)) or "none"
            raise BillingError(
                f"no invoice of {month} is held for client {client_id!r} (held: {held})"
            )
        held_invoice = decode_invoice(draft.document)
        issued = ledger.latest(str(month)).get(client_id)
        if issued is not None:
            raise BillingError(
                f"client {held_invoice.client_name!r} ({client_id}) already has invoice "
                f"{issued.number} for {month}"
            )
        seller = Seller(name=held_invoice.seller.name, invoice_prefix=draft.prefix)
        invoice = msgspec.structs.replace(
            held_invoice, number=seller.number(ledger.next_number(draft.prefix)), issued_at=now
        )
        ledger.record(
            NewInvoice(
                number=invoice.number,
                client_id=client_id,
                month=str(month),
                version=invoice.version,
                currency=invoice.currency,
                total=invoice.total,
                issued_at=now,
                digest=draft.digest,
                document=encode_invoice(invoice),
                machines=len(invoice.machines),
            ),
            supersedes=None,
        )
        ledger.drop_draft(client_id, str(month))
    return invoice


def would_hold(month_bill: MonthBill, ledger_path: Path, bounds: ReviewBounds) -> dict[str, str]:
    """Per client, why its invoice would be held for review if the month were billed now."""
    if not ledger_path.exists():
        return {}
    month = str(month_bill.month)
    with Ledger.open(ledger_path) as ledger:
        previous = ledger.previous_invoices(month)
        issued = ledger.latest(month)
    reasons = {}
    for bill in month_bill.bills:
        before = previous.get(bill.client.client_id)
        if before is None or bill.client.client_id in issued or not bill.machines:
            continue
        why = swing_reason(before.machines, len(bill.machines), before.number, bounds)
        if why is not None:
            reasons[bill.client.client_id] = why
    return reasons
