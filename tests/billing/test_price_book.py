"""The price book is checked up front, and every error names the client and the key."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.pricebook import PriceBookError, load_price_book, parse_price_book
from tests.billing.factories import MARCH, client, price_book_toml


def parse(*clients: dict[str, Any]) -> Any:
    return parse_price_book({"client": list(clients)})


def test_prices_are_decimal_strings_and_time_zone_defaults_to_utc() -> None:
    book = parse(client(prices=[("2026-01-01", "45.10", "120")]))
    terms = book.clients["acme"]
    assert terms.prices[0].pc == Decimal("45.10")
    assert terms.prices[0].server == Decimal("120")
    assert terms.zone.key == "UTC"


def test_price_book_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(price_book_toml(client(timezone="Europe/Paris", currency="EUR")))
    terms = load_price_book(path).clients["acme"]
    assert (terms.currency, terms.zone.key) == ("EUR", "Europe/Paris")


def test_toml_dates_are_accepted_as_well_as_strings() -> None:
    table = client()
    table["price"][0]["from"] = date(2025, 1, 1)
    assert parse(table).clients["acme"].prices[0].starts == date(2025, 1, 1)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            client(prices=[("2026-01-01", "45,00", "120.00")]),
            "client 'Acme' (acme): price #1: pc: '45,00'",
        ),
        (client(prices=[("2026-01-01", "45.00", "NaN")]), "client 'Acme' (acme): price #1: server"),
        (client(prices=[("2026-01-01", "-1", "120.00")]), "price #1: pc: '-1' must be"),
        (client(currency="USX"), "client 'Acme' (acme): currency: 'USX' is not an ISO 4217"),
        (client(timezone="Mars/Olympus"), "client 'Acme' (acme): timezone: 'Mars/Olympus'"),
        (client(prices=[("2026-13-01", "45.00", "120.00")]), "price #1: from: '2026-13-01'"),
        (
            client(prices=[("2026-02-01", "45", "120"), ("2026-01-01", "50", "130")]),
            "client 'Acme' (acme): price #2: from: dates out of order",
        ),
        (
            client(prices=[("2026-02-01", "45", "120"), ("2026-02-01", "50", "130")]),
            "dates out of order",
        ),
        (client(prices=[]), "client 'Acme' (acme): price: at least one"),
    ],
)
def test_bad_price_book_entries_are_refused_naming_client_and_key(
    table: dict[str, Any], message: str
) -> None:
    with pytest.raises(PriceBookError, match=re.escape(message)):
        parse(table)


def test_a_price_written_as_a_float_is_refused_because_floats_lose_cents() -> None:
    table = client()
    table["price"][0]["pc"] = 45.1
    with pytest.raises(
        PriceBookError, match=r"client 'Acme' \(acme\): price #1: pc: 45.1 is not a string"
    ):
        parse(table)


def test_a_client_listed_twice_is_refused() -> None:
    with pytest.raises(PriceBookError, match=r"client 'Acme' \(acme\): appears twice"):
        parse(client(), client())


def test_a_misspelt_key_is_refused_rather_than_ignored() -> None:
    table = client()
    table["curency"] = "EUR"
    with pytest.raises(PriceBookError, match=r"client 'Acme' \(acme\): unknown key 'curency'"):
        parse(table)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PriceBookError) as caught:
        parse(client("a", currency="XXX"), client("b", timezone="Nowhere/Land"))
    assert "client 'A' (a): currency" in str(caught.value)
    assert "client 'B' (b): timezone" in str(caught.value)


def test_unreadable_or_invalid_toml_is_a_price_book_error(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="cannot be read"):
        load_price_book(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[client]\nid = ")
    with pytest.raises(PriceBookError, match="not valid TOML"):
        load_price_book(broken)


def test_price_in_force_is_the_latest_entry_on_or_before_the_first_of_the_month() -> None:
    book = parse(
        client(
            prices=[
                ("2025-01-01", "40", "100"),
                ("2026-03-01", "45", "120"),
                ("2026-03-02", "50", "130"),
            ]
        )
    )
    price = book.clients["acme"].price_in_force(MARCH)
    assert price is not None and price.pc == Decimal("45")
