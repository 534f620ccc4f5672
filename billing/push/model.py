"""What a push sends: per client, the quantities of its current invoice for the month."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import aiohttp
import msgspec

from billing.documents import Invoice
from billing.push.http import Answer, Sleep

# Prices go to the PSAs as exact JSON numbers ("33.30"), never through a float.
encode_exact = msgspec.json.Encoder(decimal_format="number").encode


def count_of(value: Any) -> Decimal:
    """A quantity a PSA answered with (a number, a numeric string or nothing), exactly."""
    try:
        return Decimal(str(value if value is not None else 0))
    except InvalidOperation:
        return Decimal(0)


def quantity_text(value: Any) -> str:
    """A PSA's quantity as the change table shows it: `3`, not `3.0`."""
    number = count_of(value)
    return str(int(number)) if number == number.to_integral_value() else str(number.normalize())


@dataclass(frozen=True, slots=True)
class ClientPush:
    invoice: Invoice
    document: bytes  # the invoice exactly as the ledger holds it
    mapping: dict[str, int] = field(default_factory=dict)

    @property
    def client_id(self) -> str:
        return self.invoice.client_id

    @property
    def label(self) -> str:
        return f"{self.invoice.client_name!r} ({self.invoice.client_id})"

    def quantity(self, kind: str) -> int:
        return sum(line.quantity for line in self.invoice.lines if line.kind == kind)

    def unit_price(self, kind: str) -> str | None:
        for line in self.invoice.lines:
            if line.kind == kind:
                return line.unit_price
        return None

    def exact_unit_price(self, kind: str) -> Decimal:
        return Decimal(self.unit_price(kind) or "0")


@dataclass(frozen=True, slots=True)
class Change:
    """One PSA object: what it held before and what the push sets (or would set)."""

    object: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


Call = Callable[[], Awaitable[Answer]]


@dataclass(slots=True)
class Context:
    session: aiohttp.ClientSession
    base_url: str
    credentials: dict[str, str]
    attempts: int
    sleep: Sleep


class Target(Protocol):
    name: str
    # Mapping keys a client needs in the price book (none for the webhook).
    required: tuple[str, ...]

    async def push(self, context: Context, item: ClientPush, *, dry_run: bool) -> list[Change]: ...
