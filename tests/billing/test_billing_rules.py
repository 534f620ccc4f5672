"""The billing rules, told with the seed's own examples on calendar dates (March-May 2026)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.bills import BillingError, ClientBill, MonthBill
from billing.engine import bill_month
from billing.inventory import Component, Machine
from billing.months import Month
from billing.pricebook import PriceBook
from billing.rules import Standing, in_inventory, standing_at
from tests.billing.factories import APRIL, MARCH, MAY, at, client, machine, price_book

MARCH_1 = "2026-03-01T00:00:00Z"
APRIL_1 = "2026-04-01T00:00:00Z"
MAY_1 = "2026-05-01T00:00:00Z"


def bill(
    month: Month,
    current: list[Machine],
    *,
    as_of: str,
    book: PriceBook | None = None,
    previous: list[Machine] | None = None,
    previous_as_of: str | None = None,
) -> MonthBill:
    inventories = [(at(as_of), current)]
    if previous is not None:
        assert previous_as_of is not None
        inventories.append((at(previous_as_of), previous))
    return bill_month(book or price_book(), month, inventories)


def only(month_bill: MonthBill) -> ClientBill:
    (client_bill,) = month_bill.bills
    return client_bill


def billed_ids(month_bill: MonthBill) -> list[str]:
    return [m.machine_id for b in month_bill.bills for m in b.machines]


# The seed's three stories.


def test_machine_first_seen_on_the_7th_is_free_that_month_and_billed_from_the_next() -> None:
    # Online from 7 March: as of the March cutoff it was not enrolled yet.
    as_of_march_1: list[Machine] = []
    march = bill(MARCH, as_of_march_1, as_of=MARCH_1)
    as_of_april_1 = [
        machine("new-pc", first_seen="2026-03-07T09:30:00Z", last_seen="2026-03-31T17:00:00Z")
    ]
    april = bill(APRIL, as_of_april_1, as_of=APRIL_1)

    assert billed_ids(march) == []
    assert only(march).total == Decimal("0.00")
    assert billed_ids(april) == ["new-pc"]
    assert only(april).total == Decimal("45.00")


def test_a_row_first_seen_on_the_7th_given_in_the_march_inventory_is_judged_free() -> None:
    # Billing applies the rules to every row it is given, whatever the file claims.
    late_row = machine(
        "new-pc", first_seen="2026-03-07T09:30:00Z", last_seen="2026-03-07T09:30:00Z"
    )
    march = bill(MARCH, [late_row], as_of=MARCH_1)
    assert billed_ids(march) == []


def test_machine_offboarded_on_the_7th_was_billed_for_that_month_and_is_not_refunded() -> None:
    as_of_march_1 = [machine("leaver", last_seen="2026-02-28T16:00:00Z")]
    as_of_april_1 = [
        machine(
            "leaver",
            last_seen="2026-03-07T10:55:00Z",
            offboarded_at="2026-03-07T11:00:00Z",
        )
    ]
    march = bill(MARCH, as_of_march_1, as_of=MARCH_1)
    april = bill(
        APRIL, as_of_april_1, as_of=APRIL_1, previous=as_of_march_1, previous_as_of=MARCH_1
    )

    assert billed_ids(march) == ["leaver"]
    assert only(march).total == Decimal("45.00")
    assert billed_ids(april) == []
    assert only(april).lines == ()  # no credit line: the month already billed is not refunded
    changes = only(april).changes
    assert changes is not None
    assert [m.machine_id for m in changes.offboarded] == ["leaver"]


def test_machine_shut_down_on_the_7th_is_billed_once_more_then_drops_out_after_30_days() -> None:
    def dark_since_the_7th() -> Machine:
        return machine("laptop", last_seen="2026-03-07T17:00:00Z")

    march = bill(MARCH, [machine("laptop", last_seen="2026-02-28T17:00:00Z")], as_of=MARCH_1)
    april = bill(APRIL, [dark_since_the_7th()], as_of=APRIL_1)
    may = bill(
        MAY,
        [dark_since_the_7th()],
        as_of=MAY_1,
        previous=[dark_since_the_7th()],
        previous_as_of=APRIL_1,
    )

    assert billed_ids(march) == ["laptop"]
    assert billed_ids(april) == ["laptop"]  # the one extra month after it went dark
    assert [m.days_offline for m in only(april).offline] == [24]
    assert billed_ids(may) == []  # 30 days after 7 March 17:00 it dropped out
    changes = only(may).changes
    assert changes is not None
    assert [(m.machine_id, m.expired_at) for m in changes.expired] == [
        ("laptop", at("2026-04-06T17:00:00Z"))
    ]
    # Never offboarded: it still carries licensed software, the MSP's exposure.
    assert [m.machine_id for m in may.exposure] == ["laptop"]


# The edges.


def test_silent_for_exactly_30_days_has_expired() -> None:
    cutoff = at(APRIL_1)
    exactly_720_hours = machine(last_seen="2026-03-02T00:00:00Z")
    one_microsecond_less = machine(last_seen="2026-03-02T00:00:00.000001Z")

    assert standing_at(exactly_720_hours, cutoff) is Standing.EXPIRED
    assert in_inventory(one_microsecond_less, cutoff)


def test_first_seen_exactly_at_the_cutoff_is_free_that_month() -> None:
    enrolled_at_cutoff = machine(first_seen=MARCH_1, last_seen=MARCH_1)
    just_before = machine("m-2", first_seen="2026-02-28T23:59:59Z", last_seen=MARCH_1)

    assert billed_ids(bill(MARCH, [enrolled_at_cutoff, just_before], as_of=MARCH_1)) == ["m-2"]


def test_offboarded_exactly_at_the_cutoff_is_not_billed() -> None:
    offboarded_at_cutoff = machine(offboarded_at=MARCH_1)
    assert standing_at(offboarded_at_cutoff, at(MARCH_1)) is Standing.OFFBOARDED
    assert billed_ids(bill(MARCH, [offboarded_at_cutoff], as_of=MARCH_1)) == []


def test_a_row_offboarded_after_the_cutoff_is_still_billed_that_month() -> None:
    offboarded_later = machine(offboarded_at="2026-03-01T00:00:01Z")
    assert billed_ids(bill(MARCH, [offboarded_later], as_of=MARCH_1)) == ["m-1"]


def test_offboard_requested_but_not_completed_leaves_the_machine_billed() -> None:
    # A pending offboard has no `offboarded_at`: the machine is still in inventory.
    pending = machine(offboarded_at=None, last_seen="2026-02-20T09:00:00Z")
    assert billed_ids(bill(MARCH, [pending], as_of=MARCH_1)) == ["m-1"]


def test_reimaged_machine_is_the_same_machine_not_a_new_free_month() -> None:
    before = machine("hw-1", hostname="DESK-OLD", first_seen="2025-06-02T09:00:00Z")
    reimaged = machine(
        "hw-1",
        hostname="DESK-NEW",
        first_seen="2025-06-02T09:00:00Z",
        last_seen="2026-03-30T08:00:00Z",
    )
    april = bill(APRIL, [reimaged], as_of=APRIL_1, previous=[before], previous_as_of=MARCH_1)

    assert billed_ids(april) == ["hw-1"]
    changes = only(april).changes
    assert changes is not None and changes.added == ()


def test_machine_offboarded_and_enrolled_again_starts_a_new_coverage_period() -> None:
    # Offboarded 10 February, enrolled again 5 March: as of 1 March it stood offboarded.
    as_of_march_1 = [
        machine("hw-2", last_seen="2026-02-10T08:00:00Z", offboarded_at="2026-02-10T09:00:00Z")
    ]
    as_of_april_1 = [
        machine("hw-2", first_seen="2026-03-05T08:00:00Z", last_seen="2026-03-31T08:00:00Z")
    ]
    april = bill(
        APRIL, as_of_april_1, as_of=APRIL_1, previous=as_of_march_1, previous_as_of=MARCH_1
    )

    assert billed_ids(bill(MARCH, as_of_march_1, as_of=MARCH_1)) == []
    assert billed_ids(april) == ["hw-2"]
    changes = only(april).changes
    assert changes is not None
    assert [m.machine_id for m in changes.added] == ["hw-2"]


def test_new_york_cutoff_is_midnight_local_time_on_both_sides_of_daylight_saving() -> None:
    book = price_book(client("bayside", timezone="America/New_York"))
    terms = book.clients["bayside"]

    assert terms.cutoff(MARCH) == at("2026-03-01T05:00:00Z")  # EST, UTC-5
    assert terms.cutoff(APRIL) == at("2026-04-01T04:00:00Z")  # EDT since 8 March, UTC-4


def test_in_new_york_a_machine_first_seen_on_the_evening_of_the_last_day_is_billed() -> None:
    book = price_book(client("bayside", timezone="America/New_York"))
    # 23:30 on 28 February in New York is 04:30 UTC on 1 March: before the local cutoff.
    evening = machine(
        "ny-1",
        client_id="bayside",
        first_seen="2026-03-01T04:30:00Z",
        last_seen="2026-03-01T04:45:00Z",
    )
    march = bill_month(book, MARCH, [(at("2026-03-01T05:00:00Z"), [evening])])
    assert billed_ids(march) == ["ny-1"]


def test_30_days_are_720_hours_even_across_a_daylight_saving_change() -> None:
    book = price_book(client("bayside", timezone="America/New_York"))
    april_cutoff = "2026-04-01T04:00:00Z"
    # Local clocks show more than 30 days from 23:30 on 1 March to 00:00 on 1 April, but only
    # 719.5 hours passed, because an hour was skipped on 8 March.
    still_in = machine("ny-in", client_id="bayside", last_seen="2026-03-02T04:30:00Z")
    just_out = machine("ny-out", client_id="bayside", last_seen="2026-03-02T04:00:00Z")
    april = bill_month(book, APRIL, [(at(april_cutoff), [still_in, just_out])])

    assert billed_ids(april) == ["ny-in"]
    assert [m.machine_id for m in april.exposure] == ["ny-out"]


def test_price_change_from_the_1st_applies_to_that_months_invoice() -> None:
    book = price_book(
        client(prices=[("2025-01-01", "45.00", "120.00"), ("2026-04-01", "50.00", "130.00")])
    )
    fleet = [machine("pc"), machine("srv", kind="server")]
    rows_april = [
        machine("pc", last_seen="2026-03-31T09:00:00Z"),
        machine("srv", kind="server", last_seen="2026-03-31T09:00:00Z"),
    ]

    assert only(bill(MARCH, fleet, as_of=MARCH_1, book=book)).total == Decimal("165.00")
    assert only(bill(APRIL, rows_april, as_of=APRIL_1, book=book)).total == Decimal("180.00")


def test_price_change_from_the_2nd_applies_from_the_next_month() -> None:
    book = price_book(
        client(prices=[("2025-01-01", "45.00", "120.00"), ("2026-04-02", "50.00", "130.00")])
    )
    rows = [machine("pc", last_seen="2026-03-31T09:00:00Z")]
    assert only(bill(APRIL, rows, as_of=APRIL_1, book=book)).total == Decimal("45.00")


def test_price_in_force_is_read_on_the_local_date_of_the_cutoff() -> None:
    # In Auckland, 1 April starts at 11:00 UTC on 31 March: April's price applies from then.
    book = price_book(
        client(
            "kiwi",
            currency="NZD",
            timezone="Pacific/Auckland",
            prices=[("2025-01-01", "45.00", "120.00"), ("2026-04-01", "50.00", "130.00")],
        )
    )
    cutoff = book.clients["kiwi"].cutoff(APRIL)
    assert cutoff == at("2026-03-31T11:00:00Z")
    rows = [machine("nz", client_id="kiwi", last_seen="2026-03-30T22:00:00Z")]
    assert only(bill_month(book, APRIL, [(cutoff, rows)])).total == Decimal("50.00")


def test_pc_reclassified_as_a_server_is_billed_as_a_server_and_reported() -> None:
    as_pc = [machine("box", kind="pc", last_seen="2026-02-27T09:00:00Z")]
    as_server = [machine("box", kind="server", last_seen="2026-03-30T09:00:00Z")]
    april = bill(APRIL, as_server, as_of=APRIL_1, previous=as_pc, previous_as_of=MARCH_1)

    client_bill = only(april)
    assert [(line.kind, line.quantity) for line in client_bill.lines] == [("server", 1)]
    assert client_bill.total == Decimal("120.00")
    assert client_bill.changes is not None
    assert [(m.previous_kind, m.kind) for m in client_bill.changes.reclassified] == [
        ("pc", "server")
    ]


def test_pcs_and_servers_are_billed_at_their_own_price() -> None:
    fleet = [machine(f"pc-{n}") for n in range(3)] + [machine("srv", kind="server")]
    client_bill = only(bill(MARCH, fleet, as_of=MARCH_1))

    assert [(line.kind, line.quantity, line.amount) for line in client_bill.lines] == [
        ("pc", 3, Decimal("135.00")),
        ("server", 1, Decimal("120.00")),
    ]
    assert client_bill.total == Decimal("255.00")


def test_the_total_is_the_sum_of_the_lines() -> None:
    book = price_book(client(prices=[("2025-01-01", "10.13", "0.13")]))
    fleet = [machine(f"pc-{n}") for n in range(3)] + [machine("srv", kind="server")]
    client_bill = only(bill(MARCH, fleet, as_of=MARCH_1, book=book))

    assert [line.amount for line in client_bill.lines] == [Decimal("30.39"), Decimal("0.13")]
    assert client_bill.total == Decimal("30.52")


@pytest.mark.parametrize(
    ("currency", "price", "quantity", "amount"),
    [
        ("JPY", "100", 3, "300"),
        ("KWD", "30.5", 1, "30.500"),
        ("USD", "0.01", 1, "0.01"),
        ("EUR", "33.33", 3, "99.99"),
    ],
)
def test_line_amounts_print_with_the_currencys_minor_unit(
    currency: str, price: str, quantity: int, amount: str
) -> None:
    book = price_book(client(currency=currency, prices=[("2025-01-01", price, price)]))
    fleet = [machine(f"pc-{n}") for n in range(quantity)]
    client_bill = only(bill(MARCH, fleet, as_of=MARCH_1, book=book))
    assert str(client_bill.lines[0].amount) == amount
    assert str(client_bill.total) == amount


# The reports behind the invoice.


def test_machine_billed_while_offline_7_days_is_reported_so_the_client_can_offboard_it() -> None:
    fleet = [
        machine("quiet-7", last_seen="2026-02-22T00:00:00Z"),
        machine("quiet-6", last_seen="2026-02-22T00:00:01Z"),
    ]
    client_bill = only(bill(MARCH, fleet, as_of=MARCH_1))
    assert [(m.machine_id, m.days_offline) for m in client_bill.offline] == [("quiet-7", 7)]
    assert billed_ids(bill(MARCH, fleet, as_of=MARCH_1)) == ["quiet-6", "quiet-7"]


def test_required_component_missing_or_stopped_is_a_coverage_gap() -> None:
    stopped_av = (
        Component(name="rmm", status="running"),
        Component(name="antivirus", status="stopped"),
        Component(name="dns_protection", status="missing"),
        Component(name="backup", status="stopped", required=False),
    )
    fleet = [
        machine("ok"),
        machine("gappy", components=stopped_av),
        machine("silent-agent", components=()),
    ]
    gaps = only(bill(MARCH, fleet, as_of=MARCH_1)).coverage_gaps

    assert [(g.machine_id, g.missing, g.stopped, g.no_components_reported) for g in gaps] == [
        ("gappy", ("dns_protection",), ("antivirus",), False),
        ("silent-agent", (), (), True),
    ]


def test_change_report_lists_added_offboarded_expired_and_reclassified_machines() -> None:
    previous = [
        machine("stays"),
        machine("leaves", last_seen="2026-02-27T09:00:00Z"),
        machine("goes-dark", last_seen="2026-02-20T09:00:00Z"),
        machine("grows", kind="pc"),
    ]
    current = [
        machine("stays", last_seen="2026-03-31T09:00:00Z"),
        machine("leaves", last_seen="2026-03-03T09:00:00Z", offboarded_at="2026-03-03T09:05:00Z"),
        machine("goes-dark", last_seen="2026-02-20T09:00:00Z"),
        machine("grows", kind="server", last_seen="2026-03-31T09:00:00Z"),
        machine("joins", first_seen="2026-03-12T09:00:00Z", last_seen="2026-03-31T09:00:00Z"),
    ]
    changes = only(
        bill(APRIL, current, as_of=APRIL_1, previous=previous, previous_as_of=MARCH_1)
    ).changes

    assert changes is not None
    assert [m.machine_id for m in changes.added] == ["joins"]
    assert [m.machine_id for m in changes.offboarded] == ["leaves"]
    assert [m.machine_id for m in changes.expired] == ["goes-dark"]
    assert [m.machine_id for m in changes.reclassified] == ["grows"]
    assert changes.removed == ()


def test_without_the_previous_inventory_the_change_report_is_unknown_not_empty() -> None:
    assert only(bill(MARCH, [machine()], as_of=MARCH_1)).changes is None


def test_licence_exposure_lists_machines_that_expired_without_a_completed_offboard() -> None:
    fleet = [
        machine("dark", last_seen="2026-01-10T09:00:00Z"),
        machine(
            "offboarded", last_seen="2026-01-10T09:00:00Z", offboarded_at="2026-01-10T10:00:00Z"
        ),
        machine("fine"),
    ]
    month_bill = bill(MARCH, fleet, as_of=MARCH_1)
    assert [(m.machine_id, m.expired_at) for m in month_bill.exposure] == [
        ("dark", at("2026-02-09T09:00:00Z"))
    ]


# What the run refuses.


def test_client_in_inventory_with_no_price_is_an_error_that_names_it() -> None:
    with pytest.raises(BillingError, match=r"'stranger' is not in the price book, yet 1 of"):
        bill(MARCH, [machine(), machine("x", client_id="stranger")], as_of=MARCH_1)


def test_a_former_client_with_nothing_left_in_inventory_needs_no_price() -> None:
    # Its machines are still listed (offboarded or dark), but none of them is billable.
    rows = [
        machine(),
        machine("gone", client_id="former", offboarded_at="2026-01-05T10:00:00Z"),
        machine("dark", client_id="former", last_seen="2026-01-05T10:00:00Z"),
    ]
    month_bill = bill(MARCH, rows, as_of=MARCH_1)

    assert billed_ids(month_bill) == ["m-1"]
    assert [(m.client_id, m.machine_id) for m in month_bill.exposure] == [("former", "dark")]


def test_client_with_machines_but_no_price_in_force_at_the_cutoff_is_an_error() -> None:
    book = price_book(client(prices=[("2026-04-01", "45.00", "120.00")]))
    with pytest.raises(
        BillingError, match=r"'Acme' \(acme\): 1 machine\(s\) to bill but no price in force"
    ):
        bill(MARCH, [machine()], as_of=MARCH_1, book=book)


def test_client_without_an_inventory_as_of_its_cutoff_is_an_error_that_names_it() -> None:
    book = price_book(client("acme"), client("bayside", timezone="America/New_York"))
    with pytest.raises(BillingError, match=r"'Bayside' \(bayside\): no inventory as of its cutoff"):
        bill_month(book, MARCH, [(at(MARCH_1), [machine()])])


def test_inventory_as_of_neither_a_cutoff_nor_a_previous_cutoff_is_refused() -> None:
    with pytest.raises(BillingError, match="neither a client's cutoff nor its previous cutoff"):
        bill(MARCH, [machine()], as_of="2026-03-09T00:00:00Z")


def test_the_same_machine_twice_in_one_inventory_is_refused() -> None:
    with pytest.raises(BillingError, match="'m-1' appears twice"):
        bill(MARCH, [machine(), machine()], as_of=MARCH_1)


def test_clients_of_other_time_zones_in_a_file_are_billed_from_their_own_cutoff() -> None:
    book = price_book(client("acme"), client("bayside", timezone="America/New_York"))
    utc_rows = [machine("a-1"), machine("b-early", client_id="bayside")]
    ny_rows = [machine("b-1", client_id="bayside")]
    month_bill = bill_month(
        book, MARCH, [(at(MARCH_1), utc_rows), (at("2026-03-01T05:00:00Z"), ny_rows)]
    )
    assert {b.client.client_id: [m.machine_id for m in b.machines] for b in month_bill.bills} == {
        "acme": ["a-1"],
        "bayside": ["b-1"],
    }
