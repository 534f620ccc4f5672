"""The price book: one TOML table per client, validated with errors that name the client and key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.currencies import MINOR_UNITS
from billing.months import Month


class PriceBookError(ValueError):
    """The price book cannot be used; the message lists every problem found."""


@dataclass(frozen=True, slots=True)
class Price:
    """Prices per machine that apply from `starts` (a date in the client's time zone) on."""

    starts: date
    pc: Decimal
    server: Decimal

    def for_kind(self, kind: str) -> Decimal:
        return self.pc if kind == "pc" else self.server


@dataclass(frozen=True, slots=True)
class ClientTerms:
    client_id: str
    name: str
    currency: str
    zone: ZoneInfo
    prices: tuple[Price, ...]  # in order of `starts`

    def cutoff(self, month: Month) -> datetime:
        return month.cutoff(self.zone)

    def price_in_force(self, month: Month) -> Price | None:
        """The entry with the latest `from` on or before the local date of the month's cutoff."""
        in_force = None
        for price in self.prices:
            if price.starts <= month.first_day:
                in_force = price
        return in_force


@dataclass(frozen=True, slots=True)
class PriceBook:
    clients: dict[str, ClientTerms]


_CLIENT_KEYS = {"id", "name", "currency", "timezone", "price"}
_PRICE_KEYS = {"from", "pc", "server"}


def load_price_book(path: Path) -> PriceBook:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise PriceBookError(f"price book {path}: cannot be read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PriceBookError(f"price book {path}: not valid TOML ({exc})") from exc
    return parse_price_book(document, source=str(path))


def parse_price_book(document: dict[str, Any], *, source: str = "price book") -> PriceBook:
    problems: list[str] = []
    clients: dict[str, ClientTerms] = {}
    for key in document:
        if key != "client":
            problems.append(f"unknown key {key!r} (clients are [[client]] tables)")
    tables = document.get("client", [])
    if not isinstance(tables, list):
        problems.append("`client` must be an array of tables, written [[client]]")
        tables = []
    for position, table in enumerate(tables, start=1):
        terms = _client(table, position, problems)
        if terms is None:
            continue
        if terms.client_id in clients:
            problems.append(f"client {terms.client_id!r}: appears twice")
            continue
        clients[terms.client_id] = terms
    if problems:
        raise PriceBookError(f"{source}: " + "; ".join(problems))
    return PriceBook(clients)


def _client(table: Any, position: int, problems: list[str]) -> ClientTerms | None:
    if not isinstance(table, dict):
        problems.append(f"client #{position}: must be a table")
        return None
    client_id = table.get("id")
    if not isinstance(client_id, str) or not client_id.strip():
        problems.append(f"client #{position}: id: a non-empty string is required")
        return None
    where = f"client {client_id!r}"
    before = len(problems)
    for key in table:
        if key not in _CLIENT_KEYS:
            problems.append(f"{where}: unknown key {key!r}")
    name = table.get("name", client_id)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name: must be a non-empty string")
    currency = table.get("currency")
    if not isinstance(currency, str):
        problems.append(f'{where}: currency: required, an ISO 4217 code such as "USD"')
    elif currency not in MINOR_UNITS:
        problems.append(f"{where}: currency: {currency!r} is not an ISO 4217 currency code")
    zone = _zone(table.get("timezone", "UTC"), where, problems)
    prices = _prices(table.get("price"), where, problems)
    if len(problems) > before or zone is None:
        return None
    assert isinstance(name, str) and isinstance(currency, str)
    return ClientTerms(client_id, name, currency, zone, prices)


def _zone(value: Any, where: str, problems: list[str]) -> ZoneInfo | None:
    if not isinstance(value, str) or not value:
        problems.append(f'{where}: timezone: must be an IANA name such as "America/New_York"')
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: timezone: {value!r} is not a known time zone")
        return None


def _prices(value: Any, where: str, problems: list[str]) -> tuple[Price, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: price: at least one [[client.price]] entry is required")
        return ()
    prices: list[Price] = []
    for position, entry in enumerate(value, start=1):
        at = f"{where}: price #{position}"
        if not isinstance(entry, dict):
            problems.append(f"{at}: must be a table")
            continue
        for key in entry:
            if key not in _PRICE_KEYS:
                problems.append(f"{at}: unknown key {key!r}")
        starts = _date(entry.get("from"), f"{at}: from", problems)
        pc = _amount(entry.get("pc"), f"{at}: pc", problems)
        server = _amount(entry.get("server"), f"{at}: server", problems)
        if starts is None or pc is None or server is None:
            continue
        if prices and starts <= prices[-1].starts:
            problems.append(
                f"{at}: from: dates out of order ({starts} does not come after "
                f"{prices[-1].starts}); list prices oldest first, one per date"
            )
            continue
        prices.append(Price(starts, pc, server))
    return tuple(prices)


def _date(value: Any, at: str, problems: list[str]) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    problems.append(f'{at}: {value!r} is not a date (write "YYYY-MM-DD")')
    return None


def _amount(value: Any, at: str, problems: list[str]) -> Decimal | None:
    if not isinstance(value, str):
        shown = "missing" if value is None else f"{value!r} is not a string"
        problems.append(f'{at}: {shown}; write the price as a string such as "45.00"')
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        problems.append(f"{at}: {value!r} is not a decimal number")
        return None
    if not amount.is_finite() or amount < 0:
        problems.append(f"{at}: {value!r} must be a finite amount of zero or more")
        return None
    return amount
