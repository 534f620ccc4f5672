"""The seller and each client's billing details; amounts kept at the currency's minor unit."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from billing.pricebook import PriceBookError, parse_price_book
from billing.rules import tax_amount
from tests.billing.factories import client

SELLER = {
    "name": "Northwind IT Services",
    "address": "1 Harbour Road\nSpringfield 12345",
    "tax_id": "NW-TAX-778899",
    "invoice_prefix": "NW-",
    "payment_terms_days": 14,
}


def parse(*clients: dict[str, Any], seller: dict[str, Any] | None = None) -> Any:
    document: dict[str, Any] = {"client": list(clients)}
    if seller is not None:
        document["seller"] = seller
    return parse_price_book(document)


def test_seller_and_client_billing_details_are_read() -> None:
    table = client(name="Acme Dental", currency="EUR")
    table |= {
        "billing_address": "7 Molar Lane\nShelbyville",
        "tax_rate": "0.19",
        "tax_label": "VAT",
        "po_number": "PO-4411",
    }
    book = parse(table, seller=SELLER)
    assert book.seller.name == "Northwind IT Services"
    assert book.seller.number(7) == "NW-000007"
    assert book.seller.payment_terms_days == 14
    terms = book.clients["acme"]
    assert (terms.tax_rate, terms.tax_label, terms.po_number) == (Decimal("0.19"), "VAT", "PO-4411")
    assert terms.billing_address.startswith("7 Molar Lane")


def test_tax_rate_defaults_to_zero() -> None:
    assert parse(client()).clients["acme"].tax_rate == 0


@pytest.mark.parametrize(
    ("currency", "pc", "field"),
    [("JPY", "4999.5", "pc"), ("USD", "33.335", "pc"), ("KWD", "1.2345", "pc")],
)
def test_a_price_with_more_decimals_than_its_currency_is_refused_naming_client_and_field(
    currency: str, pc: str, field: str
) -> None:
    table = client(name="Acme Dental", currency=currency, prices=[("2026-01-01", pc, "1")])
    with pytest.raises(PriceBookError) as refused:
        parse(table)
    message = str(refused.value)
    assert f"client 'Acme Dental' (acme): price #1: {field}: '{pc}' has more decimals" in message
    assert currency in message


def test_minus_zero_is_refused() -> None:
    with pytest.raises(PriceBookError, match=r"server: '-0' must be a finite amount"):
        parse(client(prices=[("2026-01-01", "45.00", "-0")]))


def test_amounts_are_held_at_the_currency_minor_unit() -> None:
    book = parse(client(currency="KWD", prices=[("2026-01-01", "30.5", "120")]))
    price = book.clients["acme"].prices[0]
    assert (format(price.pc, "f"), format(price.server, "f")) == ("30.500", "120.000")
    yen = parse(client(currency="JPY", prices=[("2026-01-01", "4999", "12000")]))
    assert format(yen.clients["acme"].prices[0].pc, "f") == "4999"


@pytest.mark.parametrize(
    ("subtotal", "rate", "currency", "tax"),
    [
        ("166.65", "0.19", "EUR", "31.66"),
        ("100.05", "0.10", "USD", "10.01"),  # 10.005 rounds half up
        ("4999", "0.10", "JPY", "500"),  # 499.9
        ("30.500", "0.05", "KWD", "1.525"),
        ("12.345", "0.10", "KWD", "1.235"),  # 1.2345 half up
    ],
)
def test_tax_is_rounded_half_up_to_the_currency_minor_unit(
    subtotal: str, rate: str, currency: str, tax: str
) -> None:
    assert format(tax_amount(Decimal(subtotal), Decimal(rate), currency), "f") == tax


@pytest.mark.parametrize(
    ("seller", "message"),
    [
        ({"address": "x"}, "seller: name: a non-empty string is required"),
        ({"name": "N", "invoice_prefix": "A-VERY-LONG-PREFIX-"}, "invoice_prefix"),
        ({"name": "N", "invoice_prefix": "N W"}, "invoice_prefix"),
        ({"name": "N", "payment_terms_days": -1}, "payment_terms_days"),
        ({"name": "N", "colour": "blue"}, "seller: unknown key 'colour'"),
    ],
)
def test_bad_seller_is_refused(seller: dict[str, Any], message: str) -> None:
    with pytest.raises(PriceBookError, match=message):
        parse(client(), seller=seller)


@pytest.mark.parametrize("rate", ["-0.1", "1.5", "19%", "-0"])
def test_bad_tax_rate_is_refused_naming_the_client(rate: str) -> None:
    table = client(name="Acme Dental") | {"tax_rate": rate}
    with pytest.raises(PriceBookError, match=r"client 'Acme Dental' \(acme\): tax_rate"):
        parse(table)


def test_a_clients_psa_mapping_is_read_beside_it() -> None:
    table = client() | {
        "connectwise": {"agreement_id": 4411, "pc_product_id": 17, "server_product_id": 18}
    }
    mapping = parse(table).clients["acme"].psa
    assert mapping == {
        "connectwise": {"agreement_id": 4411, "pc_product_id": 17, "server_product_id": 18}
    }


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"agreement": 1}, "connectwise: unknown key 'agreement' (expected agreement_id"),
        (
            {"agreement_id": "4411"},
            "connectwise: agreement_id: '4411' must be the PSA's numeric id",
        ),
        ({"agreement_id": 0}, "connectwise: agreement_id: 0 must be"),
    ],
)
def test_a_bad_psa_mapping_is_refused_naming_client_and_key(
    mapping: dict[str, Any], message: str
) -> None:
    with pytest.raises(PriceBookError, match=re.escape(f"client 'Acme' (acme): {message}")):
        parse(client() | {"connectwise": mapping})


def test_an_invoice_number_never_grows_past_20_characters() -> None:
    seller = parse(client(), seller=SELLER | {"invoice_prefix": "NORTHWIND-2026"}).seller
    assert seller.number(999_999) == "NORTHWIND-2026999999"
    with pytest.raises(PriceBookError, match="longer than 20 characters"):
        seller.number(1_000_000)
