"""Builders for billing tests: machines as the collector reports them, price books, files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from billing.inventory import Component, Kind, Machine
from billing.months import Month
from billing.pricebook import PriceBook, parse_price_book
from wire.times import parse_instant

MARCH = Month(2026, 3)
APRIL = Month(2026, 4)
MAY = Month(2026, 5)

HEALTHY = (
    Component(name="rmm", status="running", version="2.4.1"),
    Component(name="antivirus", status="running", version="4.18.2"),
    Component(name="dns_protection", status="running", version="1.9.0"),
    Component(name="backup", status="missing", version=None, required=False),
)


def at(text: str) -> datetime:
    return parse_instant(text)


def machine(
    machine_id: str = "m-1",
    *,
    client_id: str = "acme",
    hostname: str | None = None,
    kind: Kind = "pc",
    first_seen: str = "2025-06-02T09:00:00Z",
    last_seen: str = "2026-02-27T18:00:00Z",
    offboarded_at: str | None = None,
    components: Sequence[Component] = HEALTHY,
    moved_at: str | None = None,
    moved_to: str | None = None,
    pending_kind: Kind | None = None,
) -> Machine:
    return Machine(
        machine_id=machine_id,
        client_id=client_id,
        hostname=hostname or machine_id.upper(),
        kind=kind,
        first_seen=at(first_seen),
        last_seen=at(last_seen),
        offboarded_at=None if offboarded_at is None else at(offboarded_at),
        components=tuple(components),
        moved_at=None if moved_at is None else at(moved_at),
        moved_to_client_id=moved_to,
        pending_kind=pending_kind,
    )


def client(
    client_id: str = "acme",
    *,
    name: str | None = None,
    currency: str = "USD",
    timezone: str | None = None,
    prices: Sequence[tuple[str, str, str]] = (("2025-01-01", "45.00", "120.00"),),
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "id": client_id,
        "name": name or client_id.title(),
        "currency": currency,
        "price": [{"from": start, "pc": pc, "server": server} for start, pc, server in prices],
    }
    if timezone is not None:
        table["timezone"] = timezone
    return table


def price_book(*clients: dict[str, Any]) -> PriceBook:
    return parse_price_book({"client": list(clients or (client(),))})


SELLER: dict[str, Any] = {
    "name": "Northwind IT Services",
    "address": "1 Harbour Road\nSpringfield 12345",
    "tax_id": "NW-TAX-778899",
    "invoice_prefix": "NW-",
    "payment_terms_days": 14,
}


def price_book_toml(*clients: dict[str, Any], seller: dict[str, Any] | None = None) -> str:
    out = []
    if seller is not None:
        out.append("[seller]")
        out += [f"{key} = {_toml(value)}" for key, value in seller.items()]
    for table in clients or (client(),):
        out.append("[[client]]")
        out += [f"{key} = {_toml(value)}" for key, value in table.items() if key != "price"]
        for entry in table["price"]:
            out.append("  [[client.price]]")
            out += [f"  {key} = {_toml(value)}" for key, value in entry.items()]
    return "\n".join(out) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, dict):  # an inline table, e.g. a client's PSA mapping
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return msgspec.json.encode(value).decode()


def inventory_bytes(as_of: str, machines: Iterable[Machine]) -> bytes:
    return msgspec.json.encode({"as_of": as_of, "machines": list(machines)})


def write_inventory(path: Path, as_of: str, machines: Iterable[Machine]) -> Path:
    path.write_bytes(inventory_bytes(as_of, machines))
    return path


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`rmm-billing` in a real child process, as the billing team runs it."""
    return subprocess.run(
        [sys.executable, "-m", "billing.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
