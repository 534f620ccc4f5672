"""Properties that hold for any fleet and any prices."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.bills import MonthBill
from billing.currencies import MINOR_UNITS, minor_unit
from billing.engine import bill_month
from billing.inventory import Machine
from billing.rules import line_amount
from tests.billing.factories import MARCH, at, client, machine, price_book

CUTOFF = at("2026-03-01T00:00:00Z")
HOUR = timedelta(hours=1)
# Around the edges that matter: the cutoff itself and exactly 30 days before it.
EDGES = [CUTOFF, CUTOFF - timedelta(hours=720), CUTOFF - timedelta(days=7)]

instants = st.one_of(
    st.sampled_from(EDGES),
    st.integers(min_value=-24 * 70, max_value=24 * 10).map(lambda h: CUTOFF + h * HOUR),
)
# Prices in minor units (cents, yen, fils): a price book refuses decimals a currency lacks.
prices = st.integers(min_value=0, max_value=10_000_000)


def _in(currency: str, minor: int) -> str:
    return format(Decimal(minor).scaleb(-MINOR_UNITS[currency]), "f")


@st.composite
def machines(draw: st.DrawFn) -> list[Machine]:
    count = draw(st.integers(min_value=0, max_value=30))
    fleet = []
    for number in range(count):
        first_seen = draw(instants)
        last_seen = max(first_seen, draw(instants))
        offboarded = draw(st.one_of(st.none(), instants))
        if offboarded is not None:
            offboarded = max(offboarded, last_seen)
        fleet.append(
            machine(
                f"m-{number}",
                client_id=draw(st.sampled_from(["acme", "bayside"])),
                kind=draw(st.sampled_from(["pc", "server"])),
                first_seen=_iso(first_seen),
                last_seen=_iso(last_seen),
                offboarded_at=None if offboarded is None else _iso(offboarded),
            )
        )
    return fleet


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _bill(fleet: list[Machine], pc: int, server: int, currency: str) -> MonthBill:
    book = price_book(
        client(
            "acme",
            currency=currency,
            prices=[("2025-01-01", _in(currency, pc), _in(currency, server))],
        ),
        client(
            "bayside", currency="USD", prices=[("2025-01-01", _in("USD", server), _in("USD", pc))]
        ),
    )
    return bill_month(book, MARCH, [(CUTOFF, fleet)])


@settings(max_examples=150, deadline=None)
@given(machines(), prices, prices, st.sampled_from(["USD", "JPY", "KWD"]))
def test_invoice_total_is_the_sum_of_its_lines(
    fleet: list[Machine], pc: int, server: int, currency: str
) -> None:
    for client_bill in _bill(fleet, pc, server, currency).bills:
        assert client_bill.total == sum((line.amount for line in client_bill.lines), Decimal(0))
        for line in client_bill.lines:
            assert line.amount == line_amount(
                line.quantity, line.unit_price, client_bill.client.currency
            )
            assert line.amount == line.amount.quantize(minor_unit(client_bill.client.currency))
        assert sum(line.quantity for line in client_bill.lines) == len(client_bill.machines)


@settings(max_examples=150, deadline=None)
@given(machines())
def test_no_machine_offboarded_expired_or_not_yet_enrolled_at_the_cutoff_is_billed(
    fleet: list[Machine],
) -> None:
    by_id = {m.machine_id: m for m in fleet}
    billed = [m.machine_id for b in _bill(fleet, "45", "120", "USD").bills for m in b.machines]
    for machine_id in billed:
        row = by_id[machine_id]
        assert row.first_seen < CUTOFF
        assert row.offboarded_at is None or row.offboarded_at > CUTOFF
        assert CUTOFF - row.last_seen < timedelta(days=30)
    expected = {
        m.machine_id
        for m in fleet
        if m.first_seen < CUTOFF
        and (m.offboarded_at is None or m.offboarded_at > CUTOFF)
        and CUTOFF - m.last_seen < timedelta(hours=720)
    }
    assert set(billed) == expected


@settings(max_examples=100, deadline=None)
@given(machines(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_the_order_of_the_inventory(
    fleet: list[Machine], shuffler: random.Random
) -> None:
    shuffled = list(fleet)
    shuffler.shuffle(shuffled)
    assert _bill(fleet, 4513, 12000, "USD") == _bill(shuffled, 4513, 12000, "USD")
