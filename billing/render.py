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

from billing.documents import Invoice

CSV_COLUMNS = (
    "invoice_number",
    "client_id",
    "client_name",
    "month",
    "kind",
    "quantity",
    "unit_price",
    "amount",
    "currency",
)

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_KIND_LABEL = {"pc": "PCs", "server": "Servers"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { margin-bottom: 0; } .muted { color: #666; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: bold; border-top: 2px solid #222; }
@media print { body { margin: 0; } }
"""


def html_file_name(invoice_number: str) -> str:
    if _SAFE_NAME.fullmatch(invoice_number):
        return f"invoice-{invoice_number}.html"
    # Client ids are the collector's; keep odd characters out of file names, and names unique.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", invoice_number)
    return f"invoice-{safe}-{hashlib.sha256(invoice_number.encode()).hexdigest()[:8]}.html"


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


def invoice_html(invoice: Invoice, zone: ZoneInfo) -> str:
    """A readable invoice with the machine list behind it; times are in the client's zone."""
    e = escape
    zone_name = e(zone.key)
    lines = "".join(
        f"<tr><td>{_KIND_LABEL[line.kind]}</td><td class=num>{line.quantity}</td>"
        f"<td class=num>{e(line.unit_price)}</td><td class=num>{e(line.amount)}</td></tr>"
        for line in invoice.lines
    )
    if not lines:
        lines = "<tr><td colspan=4>No machines were in inventory at the cutoff.</td></tr>"
    machines = invoice.machines
    rows = "".join(
        f"<tr><td>{host}</td><td><code>{machine_id}</code></td><td>{m.kind}</td>"
        f"<td>{first_seen[:10]}</td><td>{last_seen}</td></tr>"
        for m, host, machine_id, first_seen, last_seen in zip(
            machines,
            _escaped_column([m.hostname for m in machines]),
            _escaped_column([m.machine_id for m in machines]),
            _local_column([m.first_seen for m in machines], zone),
            _local_column([m.last_seen for m in machines], zone),
            strict=True,
        )
    )
    supersedes = (
        f"<p><strong>Replaces invoice {e(invoice.supersedes)}.</strong></p>"
        if invoice.supersedes
        else ""
    )
    currency = e(invoice.currency)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Invoice {e(invoice.number)}</title><style>{_STYLE}</style></head>
<body>
<h1>Invoice {e(invoice.number)}</h1>
<p class="muted">Issued {_local(invoice.issued_at, zone)} ({zone_name})</p>
{supersedes}
<p><strong>{e(invoice.client_name)}</strong> <span class="muted">({e(invoice.client_id)})</span></p>
<p>Support for {e(invoice.month)}, billed in advance for every machine in inventory at the cutoff,
{_local(invoice.cutoff, zone)} {zone_name}. Machines that came online after the cutoff are free
this month and billed from the next.</p>
<table>
<thead><tr><th>Item</th><th class=num>Quantity</th><th class=num>Unit price ({currency})</th>
<th class=num>Amount ({currency})</th></tr></thead>
<tbody>{lines}</tbody>
<tfoot><tr><td colspan=3>Total</td><td class=num>{e(invoice.total)} {currency}</td></tr></tfoot>
</table>
<h2>Machines billed ({len(invoice.machines)})</h2>
<table>
<thead><tr><th>Hostname</th><th>Machine</th><th>Kind</th><th>First seen</th>
<th>Last seen ({zone_name})</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</body>
</html>
"""


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula (a client named "=HYPERLINK(...)")."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def invoices_csv(invoices: Iterable[Invoice]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for invoice in invoices:
        for line in invoice.lines:
            writer.writerow(
                (
                    spreadsheet_safe(invoice.number),
                    spreadsheet_safe(invoice.client_id),
                    spreadsheet_safe(invoice.client_name),
                    invoice.month,
                    line.kind,
                    line.quantity,
                    line.unit_price,
                    line.amount,
                    invoice.currency,
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
