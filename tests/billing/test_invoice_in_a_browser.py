"""The HTML invoice in a real browser (Debian's chromium, driven by Playwright), on screen and
printed: what a bookkeeper sees and what the PDF holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.billing.factories import (
    SELLER,
    client,
    machine,
    price_book_toml,
    run_cli,
    write_inventory,
)

CHROMIUM = Path("/usr/bin/chromium")


def test_the_invoice_reads_as_an_invoice_on_screen_and_prints_its_appendix_on_a_new_page(
    tmp_path: Path,
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    table = client("acme", name="Acme Dental", currency="EUR") | {
        "billing_address": "7 Molar Lane\nShelbyville",
        "tax_rate": "0.19",
        "tax_label": "VAT",
        "po_number": "PO-4411",
    }
    (tmp_path / "prices.toml").write_text(price_book_toml(table, seller=SELLER))
    fleet = [machine(f"pc-{n:03d}") for n in range(60)] + [
        machine("old", offboarded_at="2026-02-10T00:00:00Z")
    ]
    write_inventory(tmp_path / "mar.json", "2026-03-01T00:00:00Z", fleet)
    args = ["run", "--month", "2026-03", "--prices", tmp_path / "prices.toml"]
    args += ["--out", tmp_path / "out", "--inventory", tmp_path / "mar.json"]
    assert run_cli(*args, "--now", "2026-03-02T00:00:00Z", cwd=tmp_path).returncode == 0
    page_file = tmp_path / "out" / "invoice-NW-000001.html"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(page_file.as_uri())
        expect(page.get_by_role("heading", name="Invoice")).to_be_visible()
        expect(page.locator(".seller")).to_contain_text("Northwind IT Services")
        expect(page.locator(".seller")).to_contain_text("Tax id: NW-TAX-778899")
        expect(page.locator(".buyer")).to_contain_text("Acme Dental")
        expect(page.locator(".buyer")).to_contain_text("PO number: PO-4411")
        expect(page.locator("dl.facts")).to_contain_text("NW-000001")
        expect(page.locator("dl.facts")).to_contain_text("2026-03-15")  # due: 14 days' terms
        # 60 PCs at 45.00 = 2700.00, VAT 19% = 513.00.
        expect(page.locator("table.totals")).to_contain_text("2700.00 EUR")
        expect(page.locator("table.totals")).to_contain_text("VAT (19%)")
        expect(page.locator("tr.total")).to_contain_text("3213.00 EUR")
        # Seller and invoice facts side by side, the buyer below them.
        seller = page.locator(".seller").bounding_box()
        facts = page.locator("dl.facts").bounding_box()
        buyer = page.locator(".buyer").bounding_box()
        assert seller and facts and buyer
        assert facts["x"] > seller["x"] + seller["width"]
        assert buyer["y"] > seller["y"] + seller["height"]
        expect(page.locator(".appendix")).to_contain_text("Offboarded")

        page.emulate_media(media="print")
        breaks = page.locator("section.appendix").evaluate("e => getComputedStyle(e).breakBefore")
        assert breaks == "page"
        header_group = page.locator(".appendix thead").evaluate("e => getComputedStyle(e).display")
        assert header_group == "table-header-group"  # repeated on every printed page
        pdf = page.pdf(format="A4")
        browser.close()
    assert pdf.startswith(b"%PDF")
    pages = pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")
    assert pages >= 2  # the invoice, then the appendix on pages of its own
