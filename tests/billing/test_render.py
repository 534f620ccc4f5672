"""The HTML invoice a client reads, and the CSV a PSA imports."""

from __future__ import annotations

import csv
import io

import msgspec

from billing.bills import BilledMachine
from billing.documents import (
    BuyerBlock,
    Invoice,
    LineEntry,
    SellerBlock,
    ServicePeriod,
    credit_note_for,
)
from billing.render import credit_note_html, html_file_name, invoice_html, invoices_csv
from tests.billing.factories import at


def invoice(
    *machines: BilledMachine, name: str = "Acme Dental", zone: str = "America/New_York"
) -> Invoice:
    return Invoice(
        number="NW-000007",
        status="issued",
        version=1,
        client_id="acme",
        client_name=name,
        month="2026-03",
        currency="USD",
        timezone=zone,
        cutoff=at("2026-03-01T05:00:00Z"),
        issue_date="2026-03-01",
        due_date="2026-03-15",
        payment_terms_days=14,
        service_period=ServicePeriod(start="2026-03-01", end="2026-03-31", text="1-31 March 2026"),
        seller=SellerBlock(
            name="Northwind IT", address="1 Harbour Road\nSpringfield", tax_id="T-1"
        ),
        buyer=BuyerBlock(client_id="acme", name=name, address="7 Molar Lane", po_number="PO-9"),
        lines=(
            LineEntry(
                kind="pc",
                description="Managed PC, March 2026",
                quantity=len(machines),
                unit_price="45.00",
                amount="90.00",
            ),
        ),
        subtotal="90.00",
        tax_label="VAT",
        tax_rate="0.19",
        tax="17.10",
        total="107.10",
        issued_at=at("2026-03-09T14:30:00Z"),
        supersedes=None,
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


def test_html_invoice_has_seller_buyer_number_dates_terms_lines_tax_and_total() -> None:
    html = invoice_html(invoice(billed("m-1", "FRONT-DESK"), billed("m-2", "RECEPTION")))
    for expected in (
        "Northwind IT",
        "Tax id: T-1",
        "<strong>Acme Dental</strong>",
        "PO number: PO-9",
        "<dt>Invoice number</dt><dd>NW-000007</dd>",
        "<dt>Issue date</dt><dd>2026-03-01</dd>",
        "<dt>Due date</dt><dd>2026-03-15</dd>",
        "<dt>Payment terms</dt><dd>14 days</dd>",
        "<dt>Service period</dt><dd>1-31 March 2026</dd>",
        "<td>Managed PC, March 2026</td>",
        "VAT (19%)",
        "107.10 USD",
        "2026-03-01 00:00 America/New_York",  # the cutoff, local midnight
        "@media print",
    ):
        assert expected in html, expected


def test_html_appendix_lists_each_machine_with_the_rule_and_its_reason() -> None:
    html = invoice_html(invoice(billed("m-1", "FRONT-DESK")))
    assert "<td>FRONT-DESK</td><td><code>m-1</code></td><td>pc</td>" in html
    assert (
        "enrolled 2025-06-02 03:00 UTC, last seen 2026-02-28 23:15 UTC, 5 hours before the "
        "cutoff: in inventory, billed"
    ) in html


def test_html_invoice_escapes_whatever_the_inventory_and_price_book_hold() -> None:
    html = invoice_html(
        invoice(billed("m-<1>", "<script>x</script>"), billed("m-2", "odd\x00host & co"))
    )
    assert "<script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<code>m-&lt;1&gt;</code>" in html
    assert "odd\x00host &amp; co" in html


def test_a_superseded_invoice_says_so_and_its_credit_note_cancels_it_in_full() -> None:
    old = invoice(billed("m-1", "A"), billed("m-2", "B"))
    superseded = msgspec.structs.replace(old, status="superseded")
    assert "Do not pay it" in invoice_html(superseded)
    note = credit_note_for(old, number="NW-000008", replaced_by="NW-000009", now=old.issued_at)
    assert (note.total, note.tax, note.lines[0].quantity) == ("-107.10", "-17.10", -2)
    html = credit_note_html(note)
    assert "cancels invoice NW-000007 in full" in html and "-107.10 USD" in html


def test_csv_text_cells_never_start_a_spreadsheet_formula() -> None:
    text = invoices_csv([invoice(billed("m-1", "A"), name='=HYPERLINK("http://x","pay")')])
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["client_name"] == '\'=HYPERLINK("http://x","pay")'


def test_csv_rows_carry_dates_service_period_tax_total_and_supersedes() -> None:
    (row,) = list(csv.DictReader(io.StringIO(invoices_csv([invoice(billed("m-1", "A"))]))))
    assert {
        k: row[k]
        for k in (
            "issue_date",
            "due_date",
            "service_period_start",
            "service_period_end",
            "tax",
            "total",
            "supersedes",
        )
    } == {
        "issue_date": "2026-03-01",
        "due_date": "2026-03-15",
        "service_period_start": "2026-03-01",
        "service_period_end": "2026-03-31",
        "tax": "17.10",
        "total": "107.10",
        "supersedes": "",
    }


def test_html_file_names_stay_safe_and_distinct() -> None:
    assert html_file_name("NW-000001") == "invoice-NW-000001.html"
    odd = html_file_name("202603-a/b c-1")
    assert "/" not in odd and " " not in odd
    assert odd != html_file_name("202603-a_b_c-1")
