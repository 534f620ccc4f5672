"""What the billing team reads on the console, and the preview as JSON."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from billing.bills import ClientBill, MonthBill
from billing.documents import LineEntry, line_entries, money
from billing.job import RunOutcome, RunRequest
from billing.render import plural, totals_by_currency
from billing.rules import expires_at
from wire.times import format_instant


def run_summary(outcome: RunOutcome, request: RunRequest) -> str:
    invoices = outcome.current
    pcs = sum(line.quantity for i in invoices for line in i.lines if line.kind == "pc")
    servers = sum(line.quantity for i in invoices for line in i.lines if line.kind == "server")
    text = [
        f"Billed {request.month} for {plural(len(invoices), 'client')}: "
        f"{plural(pcs + servers, 'machine')} ({plural(pcs, 'PC')}, {plural(servers, 'server')})."
    ]
    text += _totals_lines(totals_by_currency(invoices), "invoice")
    text.append(
        f"Invoices: {len(outcome.issued):,} issued now, {len(outcome.unchanged):,} already "
        f"issued, {len(outcome.superseded):,} superseded (each with a credit note), "
        f"{len(outcome.held):,} held for review, {len(outcome.not_invoiced):,} not invoiced "
        "(nothing billable)."
    )
    bills = outcome.month_bill.bills
    changes = sum(
        len(c.added) + len(c.offboarded) + len(c.expired) + len(c.reclassified) + len(c.removed)
        for c in (bill.changes for bill in bills)
        if c is not None
    )
    text.append(
        f"Reports: {plural(changes, 'change')} since last month, "
        f"{plural(sum(len(b.offline) for b in bills), 'machine')} billed while offline 7+ days, "
        f"{plural(sum(len(b.coverage_gaps) for b in bills), 'coverage gap')}, "
        f"{plural(len(outcome.month_bill.exposure), 'machine')} expired without offboard."
    )
    html = sum(1 for name in outcome.written if name.endswith(".html"))
    evidence = sum(1 for name in outcome.written if name.startswith("evidence-"))
    text.append(
        f"Wrote invoices.json, invoices.csv, reports.json, {plural(html, 'HTML document')} and "
        f"{plural(evidence, 'evidence file')} to {request.out} (ledger {request.ledger_path})."
    )
    for draft in outcome.held:
        text.append(
            f"Held for review: {draft.client_name!r} ({draft.client_id}): {draft.reason}; "
            f"issue it with rmm-billing approve --month {request.month} --client "
            f"{draft.client_id}"
        )
    for warning in outcome.month_bill.warnings:
        text.append(f"Warning: {warning}")
    for old, new in outcome.superseded:
        text.append(f"Note: {new} supersedes {old}, which is kept in the ledger.")
    for number in outcome.differing:
        text.append(
            f"Note: {number} was issued earlier and stands, but the inventory and prices now give "
            "a different invoice; rerun with --supersede-client to replace it."
        )
    if outcome.timings:
        text.append(
            "Timings: "
            + ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in outcome.timings)
        )
    missing = [b.client.client_id for b in bills if b.changes is None]
    if missing:
        text.append(
            f"Note: no inventory as of the previous cutoff for {plural(len(missing), 'client')}; "
            "their change report says so."
        )
    return "\n".join(text)


def _totals_lines(totals: dict[str, tuple[int, Decimal]], noun: str) -> list[str]:
    return [
        f"  {currency}  {plural(count, noun):>14}  {money(amount):>16}"
        for currency, (count, amount) in totals.items()
    ]


class _Expiring(msgspec.Struct, frozen=True, kw_only=True):
    machine_id: str
    hostname: str
    kind: str
    last_seen: datetime
    expires_at: datetime


class _PreviewInvoice(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    client_name: str
    currency: str
    cutoff: datetime
    lines: tuple[LineEntry, ...]
    total: str
    machines: int
    expiring_before_cutoff: tuple[_Expiring, ...]
    would_be_held: str | None


def _as_of(month_bill: MonthBill) -> datetime | None:
    return month_bill.bills[0].evaluated_at if month_bill.bills else None


def _expiring(bill: ClientBill) -> tuple[_Expiring, ...]:
    return tuple(
        _Expiring(
            machine_id=m.machine_id,
            hostname=m.hostname,
            kind=m.kind,
            last_seen=m.last_seen,
            expires_at=expires_at(m),
        )
        for m in bill.expiring
    )


def preview_json(month_bill: MonthBill, held: dict[str, str] | None = None) -> bytes:
    held = held or {}
    invoices = [
        _PreviewInvoice(
            client_id=bill.client.client_id,
            client_name=bill.client.name,
            currency=bill.client.currency,
            cutoff=bill.cutoff,
            lines=line_entries(bill),
            total=money(bill.total),
            machines=len(bill.machines),
            expiring_before_cutoff=_expiring(bill),
            would_be_held=held.get(bill.client.client_id),
        )
        for bill in month_bill.bills
    ]
    totals: dict[str, Decimal] = {}
    for bill in month_bill.bills:
        totals[bill.client.currency] = totals.get(bill.client.currency, Decimal(0)) + bill.total
    document = {
        "month": str(month_bill.month),
        "as_of": _as_of(month_bill),
        "invoices": invoices,
        "totals": {currency: money(amount) for currency, amount in sorted(totals.items())},
    }
    return msgspec.json.format(msgspec.json.encode(document), indent=2)


def preview_text(month_bill: MonthBill, held: dict[str, str] | None = None) -> str:
    held = held or {}
    as_of = _as_of(month_bill)
    since = f" as it stands at {format_instant(as_of)}" if as_of else ""
    text = [f"Preview of {month_bill.month} if nothing changes (inventory{since}):"]
    totals: dict[str, tuple[int, Decimal]] = {}
    for bill in month_bill.bills:
        parts = " + ".join(
            f"{plural(line.quantity, 'PC' if line.kind == 'pc' else 'server')} x "
            f"{money(line.unit_price)}"
            for line in bill.lines
        )
        text.append(
            f"  {bill.client.client_id} ({bill.client.name}): {parts or 'nothing to bill'}"
            f" = {money(bill.total)} {bill.client.currency}"
        )
        if bill.client.client_id in held:
            text.append(f"    would be held for review: {held[bill.client.client_id]}")
        if bill.expiring:
            text.append(
                f"    {plural(len(bill.expiring), 'machine')} will expire before the cutoff "
                f"({format_instant(bill.cutoff)}) unless they check in: "
                + ", ".join(m.hostname for m in bill.expiring[:10])
                + (" ..." if len(bill.expiring) > 10 else "")
            )
        count, amount = totals.get(bill.client.currency, (0, Decimal(0)))
        totals[bill.client.currency] = (count + 1, amount + bill.total)
    text.append("Totals:")
    text += _totals_lines(dict(sorted(totals.items())), "client")
    return "\n".join(text)
