"""The HTML invoice a client reads, and the CSV a PSA imports."""

from __future__ import annotations

import csv
import io
from zoneinfo import ZoneInfo

import msgspec

from billing.documents import Invoice, LineEntry
from billing.engine import BilledMachine
from billing.render import html_file_name, invoice_html, invoices_csv
from tests.billing.factories import at


def invoice(*machines: BilledMachine, name: str = "Acme Dental") -> Invoice:
    return Invoice(
        number="202603-acme-1",
        version=1,
        client_id="acme",
        client_name=name,
        month="2026-03",
        currency="USD",
        cutoff=at("2026-03-01T05:00:00Z"),
        issued_at=at("2026-03-09T14:30:00Z"),
        supersedes=None,
        lines=(LineEntry(kind="pc", quantity=len(machines), unit_price="45.00", amount="90.00"),),
        total="90.00",
        machines=machines,
    )


def billed(machine_id: str, hostname: str) -> BilledMachine:
    return BilledMachine(
        machine_id=machine_id,
        hostname=hostname,
        kind="pc",
        first_seen=at("2025-06-02T03:00:00Z"),
        last_seen=at("2026-02-28T23:15:00Z"),
    )


def test_html_invoice_lists_the_machines_with_times_in_the_clients_zone() -> None:
    html = invoice_html(
        invoice(billed("m-1", "FRONT-DESK"), billed("m-2", "RECEPTION")),
        ZoneInfo("America/New_York"),
    )
    assert "<td>FRONT-DESK</td><td><code>m-1</code></td><td>pc</td>" in html
    assert "<td>2025-06-01</td><td>2026-02-28 18:15</td>" in html  # EST, UTC-5
    assert "2026-03-01 00:00 America/New_York" in html  # the cutoff, local midnight
    assert "90.00 USD" in html


def test_html_invoice_escapes_whatever_the_inventory_and_price_book_hold() -> None:
    html = invoice_html(
        invoice(billed("m-<1>", "<script>x</script>"), billed("m-2", "odd\x00host & co")),
        ZoneInfo("UTC"),
    )
    assert "<script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<code>m-&lt;1&gt;</code>" in html
    assert "odd\x00host &amp; co" in html


def test_invoice_with_no_machines_says_so() -> None:
    html = invoice_html(msgspec.structs.replace(invoice(), lines=()), ZoneInfo("UTC"))
    assert "No machines were in inventory at the cutoff." in html


def test_csv_has_one_row_per_invoice_line_for_psa_import() -> None:
    rows = list(csv.reader(io.StringIO(invoices_csv([invoice(billed("m-1", "A"))]))))
    assert rows == [
        [
            "invoice_number",
            "client_id",
            "client_name",
            "month",
            "kind",
            "quantity",
            "unit_price",
            "amount",
            "currency",
        ],
        ["202603-acme-1", "acme", "Acme Dental", "2026-03", "pc", "1", "45.00", "90.00", "USD"],
    ]


def test_csv_text_cells_never_start_a_spreadsheet_formula() -> None:
    text = invoices_csv([invoice(billed("m-1", "A"), name='=HYPERLINK("http://x","pay")')])
    ((_, name_cell),) = [(row[0], row[2]) for row in csv.reader(io.StringIO(text))][1:]
    assert name_cell == '\'=HYPERLINK("http://x","pay")'


def test_html_file_names_stay_safe_and_distinct() -> None:
    assert html_file_name("202603-acme-1") == "invoice-202603-acme-1.html"
    odd = html_file_name("202603-a/b c-1")
    assert "/" not in odd and " " not in odd
    assert odd != html_file_name("202603-a_b_c-1")
