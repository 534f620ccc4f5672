"""Human-facing renderings: the HTML invoice, the CSV for PSA import, the console summary."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from html import escape
from zoneinfo import ZoneInfo

import msgspec

from billing.bills import ClientBill
from billing.documents import BuyerBlock, CreditNote, Invoice, LineEntry, SellerBlock
from billing.explain import Explained, billed_rows
from wire.times import format_instant

CSV_COLUMNS = (
    "document_type",
    "invoice_number",
    "status",
    "supersedes",
    "client_id",
    "client_name",
    "po_number",
    "month",
    "issue_date",
    "due_date",
    "service_period_start",
    "service_period_end",
    "kind",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "currency",
    "subtotal",
    "tax_label",
    "tax_rate",
    "tax",
    "total",
)

EVIDENCE_COLUMNS = (
    "client_id",
    "machine_id",
    "hostname",
    "kind",
    "billed",
    "rule",
    "detail",
    "first_seen",
    "last_seen",
    "offboarded_at",
    "moved_at",
    "moved_to_client_id",
)

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_RULE_LABEL = {
    "billed": "Billed",
    "not_enrolled_yet": "Not yet enrolled",
    "offboarded": "Offboarded",
    "moved": "Moved",
    "expired": "Expired",
}

_STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, "Helvetica Neue", Arial, sans-serif; margin: 2rem auto;
       max-width: 52rem; color: #1b1b1b; font-size: 14px; line-height: 1.4; }
header.parties { display: flex; justify-content: space-between; gap: 2rem; }
.seller .name { font-size: 1.3rem; font-weight: 700; }
.address { white-space: pre-line; }
h1 { font-size: 1.8rem; letter-spacing: 0.05em; margin: 0 0 0.5rem; text-align: right; }
dl.facts { display: grid; grid-template-columns: auto auto; gap: 0.1rem 1rem; margin: 0; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; text-align: right; }
.buyer { margin: 1.5rem 0; padding: 0.8rem 1rem; border-left: 3px solid #1b1b1b; }
.label { color: #555; font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.08em; }
.banner { padding: 0.5rem 1rem; border: 2px solid #a40000; color: #a40000; font-weight: 700; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem; text-align: left;
         vertical-align: top; }
thead th { border-bottom: 2px solid #1b1b1b; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.totals { width: auto; margin-left: auto; min-width: 18rem; }
table.totals td { border: none; }
table.totals tr.total td { border-top: 2px solid #1b1b1b; font-weight: 700; font-size: 1.1rem; }
.notes { color: #444; font-size: 0.9rem; }
.appendix h2 { font-size: 1.1rem; } .appendix table { font-size: 0.8rem; }
.appendix td.no { color: #a40000; }
@page { size: A4; margin: 15mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  thead { display: table-header-group; }
  tr, .buyer, table.totals { break-inside: avoid; page-break-inside: avoid; }
  section.appendix { break-before: page; page-break-before: always; }
}
"""


def evidence_file_name(client_id: str) -> str:
    return _safe_file("evidence", client_id, ".csv")


def _safe_file(stem: str, key: str, suffix: str) -> str:
    if _SAFE_NAME.fullmatch(key):
        return f"{stem}-{key}{suffix}"
    # Client ids are the collector's; keep odd characters out of file names, and names unique.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)
    return f"{stem}-{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}{suffix}"


def html_file_name(invoice_number: str) -> str:
    return _safe_file("invoice", invoice_number, ".html")


def _local(moment: datetime, zone: ZoneInfo) -> str:
    """`2026-03-01 00:00` in `zone`."""
    return moment.astimezone(zone).isoformat(" ", "minutes")[:16]


# A million machine rows are rendered per run: these format and escape whole columns at once,
# in C, instead of calling a Python function per cell.


def _local_column(moments: Sequence[datetime], zone: ZoneInfo) -> list[str]:
    encoded = msgspec.json.encode([moment.astimezone(zone) for moment in moments])
    return [text[:16].replace("T", " ") for text in msgspec.json.decode(encoded, type=list[str])]


def _escaped_column(texts: Sequence[str]) -> list[str]:
    joined = "\x00".join(texts)
    if not texts or joined.count("\x00") != len(texts) - 1:  # a value holds the separator
        return [escape(text) for text in texts]
    return escape(joined).split("\x00")


def appendix_rows(invoice: Invoice, bill: ClientBill | None) -> list[Explained]:
    """The machines behind an invoice, each with the rule that decided: the billed ones from the
    invoice itself, the others from this run's bill when it is the client's current invoice."""
    rows = billed_rows(invoice.machines, invoice.cutoff)
    if bill is not None:
        rows += bill.unbilled
    return rows


def _parties(
    seller: SellerBlock, buyer: BuyerBlock, title: str, facts: list[tuple[str, str]]
) -> str:
    e = escape
    tax_id = f"<div>Tax id: {e(seller.tax_id)}</div>" if seller.tax_id else ""
    facts_html = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts if v)
    po = f"<div>PO number: {e(buyer.po_number)}</div>" if buyer.po_number else ""
    return f"""<header class="parties">
<div class="seller"><div class="name">{e(seller.name)}</div>
<div class="address">{e(seller.address)}</div>{tax_id}</div>
<div class="meta"><h1>{e(title)}</h1><dl class="facts">{facts_html}</dl></div>
</header>
<section class="buyer"><div class="label">Bill to</div>
<div><strong>{e(buyer.name)}</strong></div>
<div class="address">{e(buyer.address)}</div>{po}
<div class="muted">Client id {e(buyer.client_id)}</div></section>
"""


def _lines_table(lines: Sequence[LineEntry], currency: str) -> str:
    e = escape
    rows = "".join(
        f"<tr><td>{e(line.description)}</td><td class=num>{line.quantity}</td>"
        f"<td class=num>{e(line.unit_price)}</td><td class=num>{e(line.amount)}</td></tr>"
        for line in lines
    )
    return f"""<table class="lines">
<thead><tr><th>Description</th><th class=num>Quantity</th>
<th class=num>Unit price ({e(currency)})</th><th class=num>Amount ({e(currency)})</th></tr></thead>
<tbody>{rows}</tbody>
</table>"""


def _totals(subtotal: str, tax_label: str, rate: str, tax: str, total: str, currency: str) -> str:
    e = escape
    shown = f" ({_percent(rate)})" if rate else ""
    return f"""<table class="totals">
<tr><td>Subtotal</td><td class=num>{e(subtotal)} {e(currency)}</td></tr>
<tr><td>{e(tax_label)}{e(shown)}</td><td class=num>{e(tax)} {e(currency)}</td></tr>
<tr class="total"><td>Total due</td><td class=num>{e(total)} {e(currency)}</td></tr>
</table>"""


def _percent(rate: str) -> str:
    return f"{(Decimal(rate) * 100).normalize():f}%"


def invoice_html(invoice: Invoice, rows: Sequence[Explained] | None = None) -> str:
    """A printable invoice, with an appendix listing the machines and why each was billed or not
    (`rows`, by default the billed ones); times are in the client's zone."""
    e = escape
    zone = ZoneInfo(invoice.timezone)
    zone_name = e(invoice.timezone)
    if rows is None:
        rows = appendix_rows(invoice, None)
    appendix = "".join(
        f"<tr><td>{host}</td><td><code>{machine_id}</code></td><td>{row.kind}</td>"
        f"<td class={'yes' if row.billed else 'no'}>{'yes' if row.billed else 'no'}</td>"
        f"<td>{_RULE_LABEL[row.rule]}</td><td>{detail}</td></tr>"
        for row, host, machine_id, detail in zip(
            rows,
            _escaped_column([r.hostname for r in rows]),
            _escaped_column([r.machine_id for r in rows]),
            _escaped_column([r.detail for r in rows]),
            strict=True,
        )
    )
    banner = ""
    if invoice.status == "superseded":
        banner = (
            '<p class="banner">Superseded: this invoice was replaced by a later one and '
            "cancelled by a credit note. Do not pay it.</p>"
        )
    replaces = (
        f"<p><strong>Replaces invoice {e(invoice.supersedes)}</strong>, cancelled by a credit "
        "note.</p>"
        if invoice.supersedes
        else ""
    )
    facts = [
        ("Invoice number", invoice.number),
        ("Issue date", invoice.issue_date),
        ("Due date", invoice.due_date),
        ("Payment terms", f"{invoice.payment_terms_days} days"),
        ("Service period", invoice.service_period.text),
    ]
    billed = len(invoice.machines)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Invoice {e(invoice.number)}</title>
<style>{_STYLE}</style></head>
<body>
{banner}
{_parties(invoice.seller, invoice.buyer, "Invoice", facts)}
{replaces}
{_lines_table(invoice.lines, invoice.currency)}
{
        _totals(
            invoice.subtotal,
            invoice.tax_label,
            invoice.tax_rate,
            invoice.tax,
            invoice.total,
            invoice.currency,
        )
    }
<p class="notes">Support for {e(invoice.service_period.text)}, billed in advance for every machine
in inventory at the cutoff, {_local(invoice.cutoff, zone)} {zone_name}. A machine that comes
online after the cutoff is free this month and billed from the next; one that stays silent for 30
days drops out of inventory. The appendix lists each machine and the rule that decided.</p>
<section class="appendix">
<h2>Appendix: machines at the cutoff ({billed:,} billed, {len(rows) - billed:,} not billed)</h2>
<table>
<thead><tr><th>Hostname</th><th>Machine</th><th>Kind</th><th>Billed</th><th>Rule</th>
<th>Reason</th></tr></thead>
<tbody>{appendix}</tbody>
</table>
</section>
</body>
</html>
"""


def credit_note_html(note: CreditNote) -> str:
    e = escape
    facts = [
        ("Credit note", note.number),
        ("Credits invoice", note.credits),
        ("Replaced by", note.replaced_by),
        ("Issue date", note.issue_date),
    ]
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Credit note {e(note.number)}</title>
<style>{_STYLE}</style></head>
<body>
{_parties(note.seller, note.buyer, "Credit note", facts)}
<p>This credit note cancels invoice {e(note.credits)} in full; invoice {e(note.replaced_by)}
replaces it.</p>
{_lines_table(note.lines, note.currency)}
{_totals(note.subtotal, note.tax_label, "", note.tax, note.total, note.currency)}
</body>
</html>
"""


def evidence_csv(client_id: str, rows: Sequence[Explained]) -> str:
    """One row per machine of the client at the cutoff, billed or not, with the deciding rule."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EVIDENCE_COLUMNS)
    cid = spreadsheet_safe(client_id)
    encoded = msgspec.json.encode([[r.first_seen, r.last_seen] for r in rows])
    instants = msgspec.json.decode(encoded, type=list[tuple[str, str]])
    for row, (first, last) in zip(rows, instants, strict=True):
        writer.writerow(
            (
                cid,
                spreadsheet_safe(row.machine_id),
                spreadsheet_safe(row.hostname),
                row.kind,
                "yes" if row.billed else "no",
                row.rule,
                row.detail,
                first,
                last,
                "" if row.offboarded_at is None else format_instant(row.offboarded_at),
                "" if row.moved_at is None else format_instant(row.moved_at),
                spreadsheet_safe(row.moved_to_client_id or ""),
            )
        )
    return buffer.getvalue()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula (a client named "=HYPERLINK(...)")."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def invoices_csv(invoices: Iterable[Invoice], notes: Iterable[CreditNote] = ()) -> str:
    """One row per line, for PSA import: every invoice of the month with its status, and the
    credit notes that cancel superseded ones (negative quantities and amounts)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for invoice in invoices:
        period = invoice.service_period
        for line in invoice.lines:
            writer.writerow(
                (
                    "invoice",
                    spreadsheet_safe(invoice.number),
                    invoice.status,
                    spreadsheet_safe(invoice.supersedes or ""),
                    spreadsheet_safe(invoice.client_id),
                    spreadsheet_safe(invoice.client_name),
                    spreadsheet_safe(invoice.buyer.po_number),
                    invoice.month,
                    invoice.issue_date,
                    invoice.due_date,
                    period.start,
                    period.end,
                    line.kind,
                    line.description,
                    line.quantity,
                    line.unit_price,
                    line.amount,
                    invoice.currency,
                    invoice.subtotal,
                    spreadsheet_safe(invoice.tax_label),
                    invoice.tax_rate,
                    invoice.tax,
                    invoice.total,
                )
            )
    for note in notes:
        for line in note.lines:
            writer.writerow(
                (
                    "credit_note",
                    spreadsheet_safe(note.number),
                    "issued",
                    spreadsheet_safe(note.credits),
                    spreadsheet_safe(note.client_id),
                    spreadsheet_safe(note.client_name),
                    spreadsheet_safe(note.buyer.po_number),
                    note.month,
                    note.issue_date,
                    note.issue_date,
                    "",
                    "",
                    line.kind,
                    line.description,
                    line.quantity,
                    line.unit_price,
                    line.amount,
                    note.currency,
                    note.subtotal,
                    spreadsheet_safe(note.tax_label),
                    "",
                    note.tax,
                    note.total,
                )
            )
    return buffer.getvalue()


def totals_by_currency(invoices: Iterable[Invoice]) -> dict[str, tuple[int, Decimal]]:
    """Per currency: how many invoices, and their total."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for invoice in invoices:
        count, amount = totals.get(invoice.currency, (0, Decimal(0)))
        totals[invoice.currency] = (count + 1, amount + Decimal(invoice.total))
    return dict(sorted(totals.items()))


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
