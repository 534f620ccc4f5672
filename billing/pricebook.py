"""The price book: the seller, then one TOML table per client, validated with errors that name the
client and key. Amounts are `Decimal`s held at the currency's minor unit: a price with more decimals
than its currency has (JPY "4999.5", USD "33.335") is refused, never rounded silently."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.currencies import MINOR_UNITS, minor_unit
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


# Invoice number: the prefix, then a sequence of at least this many digits; 20 characters at most.
SEQUENCE_DIGITS = 6
MAX_NUMBER_LENGTH = 20
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.-]*|")


@dataclass(frozen=True, slots=True)
class Seller:
    """Who the invoices are from: the MSP."""

    name: str
    address: str = ""
    tax_id: str = ""
    invoice_prefix: str = "INV-"
    payment_terms_days: int = 30

    def number(self, sequence: int) -> str:
        number = f"{self.invoice_prefix}{sequence:0{SEQUENCE_DIGITS}d}"
        if len(number) > MAX_NUMBER_LENGTH:
            raise PriceBookError(
                f"invoice number {number} would be longer than {MAX_NUMBER_LENGTH} characters: "
                f"the series {self.invoice_prefix!r} is full; give the seller a shorter prefix"
            )
        return number


@dataclass(frozen=True, slots=True)
class ClientTerms:
    client_id: str
    name: str
    currency: str
    zone: ZoneInfo
    prices: tuple[Price, ...]  # in order of `starts`
    billing_address: str = ""
    tax_rate: Decimal = Decimal(0)
    tax_label: str = "Tax"
    po_number: str = ""
    # Per PSA, the ids this client's quantities go to: {"connectwise": {"agreement_id": 7, ...}}
    psa: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How errors and reports name the client: `'Acme Dental' (acme)`."""
        return f"{self.name!r} ({self.client_id})"

    def cutoff(self, month: Month) -> datetime:
        return month.cutoff(self.zone)

    def price_in_force(self, month: Month) -> Price | None:
        """The entry with the latest `from` on or before the local date of the month's cutoff."""
        in_force = None
        for price in self.prices:
            if price.starts <= month.first_day:
                in_force = price
        return in_force


DEFAULT_SELLER = Seller(name="")


@dataclass(frozen=True, slots=True)
class PriceBook:
    clients: dict[str, ClientTerms]
    seller: Seller = DEFAULT_SELLER

    def label(self, client_id: str) -> str:
        terms = self.clients.get(client_id)
        return repr(client_id) if terms is None else terms.label


_CLIENT_KEYS = {
    "id",
    "name",
    "currency",
    "timezone",
    "price",
    "billing_address",
    "tax_rate",
    "tax_label",
    "po_number",
    "connectwise",
    "autotask",
    "halopsa",
}
# The ids each PSA needs per client: the object holding the quantities, and one per kind.
PSA_KEYS: dict[str, tuple[str, ...]] = {
    "connectwise": ("agreement_id", "pc_product_id", "server_product_id"),
    "autotask": ("contract_id", "pc_service_id", "server_service_id"),
    "halopsa": ("recurring_invoice_id", "pc_item_id", "server_item_id"),
}
_SELLER_KEYS = {"name", "address", "tax_id", "invoice_prefix", "payment_terms_days"}
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
        if key not in ("client", "seller"):
            problems.append(f"unknown key {key!r} (clients are [[client]] tables)")
    seller = _seller(document.get("seller"), problems)
    tables = document.get("client", [])
    if not isinstance(tables, list):
        problems.append("`client` must be an array of tables, written [[client]]")
        tables = []
    if isinstance(document.get("seller"), list):
        problems.append("`seller` is one table, written [seller]")
    for position, table in enumerate(tables, start=1):
        terms = _client(table, position, problems)
        if terms is None:
            continue
        if terms.client_id in clients:
            problems.append(f"client {terms.label}: appears twice")
            continue
        clients[terms.client_id] = terms
    if problems:
        raise PriceBookError(f"{source}: " + "; ".join(problems))
    return PriceBook(clients, seller)


def _seller(table: Any, problems: list[str]) -> Seller:
    if table is None or isinstance(table, list):
        return DEFAULT_SELLER
    if not isinstance(table, dict):
        problems.append("seller: must be a table, written [seller]")
        return DEFAULT_SELLER
    for key in table:
        if key not in _SELLER_KEYS:
            problems.append(f"seller: unknown key {key!r}")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("seller: name: a non-empty string is required")
        name = ""
    texts = {key: _text(table, key, "seller", problems) for key in ("address", "tax_id")}
    prefix = table.get("invoice_prefix", DEFAULT_SELLER.invoice_prefix)
    longest = MAX_NUMBER_LENGTH - SEQUENCE_DIGITS
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or len(prefix) > longest:
        problems.append(
            f"seller: invoice_prefix: {prefix!r} must be at most {longest} letters, digits or "
            "/_.- (the sequence follows it; invoice numbers are at most "
            f"{MAX_NUMBER_LENGTH} characters)"
        )
        prefix = DEFAULT_SELLER.invoice_prefix
    terms = table.get("payment_terms_days", DEFAULT_SELLER.payment_terms_days)
    if isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= 365:
        problems.append(f"seller: payment_terms_days: {terms!r} must be a whole number 0-365")
        terms = DEFAULT_SELLER.payment_terms_days
    return Seller(name, texts["address"], texts["tax_id"], prefix, terms)


def _text(table: dict[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or "\x00" in value:
        problems.append(f"{where}: {key}: must be a string")
        return ""
    return value


def _client(table: Any, position: int, problems: list[str]) -> ClientTerms | None:
    if not isinstance(table, dict):
        problems.append(f"client #{position}: must be a table")
        return None
    client_id = table.get("id")
    if not isinstance(client_id, str) or not client_id.strip():
        problems.append(f"client #{position}: id: a non-empty string is required")
        return None
    raw_name = table.get("name")
    shown = f"{raw_name!r} ({client_id})" if isinstance(raw_name, str) else repr(client_id)
    where = f"client {shown}"
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
    known = currency if isinstance(currency, str) and currency in MINOR_UNITS else None
    prices = _prices(table.get("price"), where, known, problems)
    details = {k: _text(table, k, where, problems) for k in ("billing_address", "po_number")}
    label = table.get("tax_label", "Tax")
    if not isinstance(label, str) or not label.strip():
        problems.append(f'{where}: tax_label: must be a non-empty string such as "VAT"')
    rate = _tax_rate(table.get("tax_rate", "0"), f"{where}: tax_rate", problems)
    psa = {
        target: mapping
        for target in PSA_KEYS
        if target in table
        and (mapping := _psa(table[target], target, f"{where}: {target}", problems))
    }
    if len(problems) > before or zone is None or rate is None:
        return None
    assert isinstance(name, str) and isinstance(currency, str) and isinstance(label, str)
    return ClientTerms(
        client_id,
        name,
        currency,
        zone,
        prices,
        billing_address=details["billing_address"],
        tax_rate=rate,
        tax_label=label,
        po_number=details["po_number"],
        psa=psa,
    )


def _psa(value: Any, target: str, at: str, problems: list[str]) -> dict[str, int]:
    if not isinstance(value, dict):
        problems.append(f"{at}: must be a table, written [client.{target}]")
        return {}
    mapping: dict[str, int] = {}
    for key, entry in value.items():
        if key not in PSA_KEYS[target]:
            problems.append(f"{at}: unknown key {key!r} (expected {', '.join(PSA_KEYS[target])})")
        elif isinstance(entry, bool) or not isinstance(entry, int) or entry <= 0:
            problems.append(f"{at}: {key}: {entry!r} must be the PSA's numeric id")
        else:
            mapping[key] = entry
    return mapping


def _tax_rate(value: Any, at: str, problems: list[str]) -> Decimal | None:
    if not isinstance(value, str):
        problems.append(
            f'{at}: {value!r} is not a string; write the rate as a string such as "0.19"'
        )
        return None
    try:
        rate = Decimal(value.strip())
    except InvalidOperation:
        problems.append(f"{at}: {value!r} is not a decimal number")
        return None
    if not rate.is_finite() or rate.is_signed() or rate >= 1:
        problems.append(f'{at}: {value!r} must be a fraction from 0 up to 1 ("0.19" for 19%)')
        return None
    return rate


def _zone(value: Any, where: str, problems: list[str]) -> ZoneInfo | None:
    if not isinstance(value, str) or not value:
        problems.append(f'{where}: timezone: must be an IANA name such as "America/New_York"')
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: timezone: {value!r} is not a known time zone")
        return None


def _prices(value: Any, where: str, currency: str | None, problems: list[str]) -> tuple[Price, ...]:
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
        pc = _amount(entry.get("pc"), f"{at}: pc", currency, problems)
        server = _amount(entry.get("server"), f"{at}: server", currency, problems)
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


def _amount(value: Any, at: str, currency: str | None, problems: list[str]) -> Decimal | None:
    if not isinstance(value, str):
        shown = "missing" if value is None else f"{value!r} is not a string"
        problems.append(f'{at}: {shown}; write the price as a string such as "45.00"')
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        problems.append(f"{at}: {value!r} is not a decimal number")
        return None
    if not amount.is_finite() or amount.is_signed():
        problems.append(f"{at}: {value!r} must be a finite amount of zero or more, unsigned")
        return None
    if currency is None:
        return amount
    unit = minor_unit(currency)
    if amount != amount.quantize(unit, rounding=ROUND_HALF_UP):
        digits = MINOR_UNITS[currency]
        problems.append(
            f"{at}: {value!r} has more decimals than {currency} allows ({digits}); "
            f"write it as {format(amount.quantize(unit, rounding=ROUND_HALF_UP), 'f')!r} "
            "or another amount"
        )
        return None
    return amount.quantize(unit)
