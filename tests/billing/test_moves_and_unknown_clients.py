"""A machine moved to another client is billed once; a price-book id the inventory never lists is
warned about by name."""

from __future__ import annotations

import msgspec

from billing.documents import build_reports
from billing.engine import MonthRun, bill_month
from billing.inventory import Machine, decode_inventory
from tests.billing.factories import MARCH, at, client, inventory_bytes, machine, price_book

MARCH_1 = at("2026-03-01T00:00:00Z")
FEBRUARY_1 = at("2026-02-01T00:00:00Z")
MOVE = "2026-02-10T12:00:00Z"


def _moved_fleet() -> list[Machine]:
    # The same hardware: acme's row ends at the move, bayside's row starts there.
    return [
        machine("old", client_id="acme", moved_at=MOVE, moved_to="bayside"),
        machine("new", client_id="bayside", first_seen=MOVE),
    ]


def test_a_machine_moved_to_another_client_is_billed_once_to_the_new_client() -> None:
    book = price_book(client("acme"), client("bayside"))
    month_bill = bill_month(book, MARCH, [(MARCH_1, _moved_fleet())])

    billed = {b.client.client_id: [m.machine_id for m in b.machines] for b in month_bill.bills}
    assert billed == {"acme": [], "bayside": ["new"]}
    assert month_bill.exposure == ()  # a move is no licence exposure under the old client


def test_a_move_after_the_cutoff_leaves_the_old_client_billed() -> None:
    book = price_book(client("acme"), client("bayside"))
    rows = [machine("old", client_id="acme", moved_at="2026-03-03T00:00:00Z", moved_to="bayside")]
    month_bill = bill_month(book, MARCH, [(MARCH_1, rows)])
    assert [m.machine_id for m in month_bill.bills[0].machines] == ["old"]


def test_a_move_exactly_at_the_cutoff_ends_the_old_record() -> None:
    book = price_book(client("acme"))
    rows = [machine("old", moved_at="2026-03-01T00:00:00Z", moved_to="bayside")]
    assert bill_month(book, MARCH, [(MARCH_1, rows)]).bills[0].machines == ()


def test_the_change_report_shows_the_move_under_the_old_client() -> None:
    book = price_book(client("acme"), client("bayside"))
    previous = [machine("old", client_id="acme", last_seen="2026-01-30T10:00:00Z")]
    current = [
        machine("old", client_id="acme", moved_at=MOVE, moved_to="bayside"),
        machine("new", client_id="bayside", first_seen=MOVE),
    ]
    month_bill = bill_month(book, MARCH, [(FEBRUARY_1, previous), (MARCH_1, current)])
    acme = month_bill.bills[0].changes
    assert acme is not None
    assert [(m.machine_id, m.moved_to_client_id) for m in acme.moved] == [("old", "bayside")]
    assert acme.removed == () and acme.expired == ()


def test_saved_inventories_without_the_move_fields_still_read() -> None:
    legacy = b'{"as_of":"2026-03-01T00:00:00Z","machines":[{"machine_id":"m","client_id":"acme",'
    legacy += b'"hostname":"M","kind":"pc","first_seen":"2026-01-01T00:00:00Z",'
    legacy += b'"last_seen":"2026-02-28T00:00:00Z","offboarded_at":null,"components":[]}]}'
    row = next(decode_inventory(legacy, "saved").machines())
    assert (row.moved_at, row.moved_to_client_id, row.pending_kind) == (None, None, None)


def test_pending_kind_is_billed_as_the_confirmed_kind_and_listed() -> None:
    book = price_book(client("acme"))
    rows = [machine("srv?", kind="pc", pending_kind="server")]
    document = decode_inventory(inventory_bytes("2026-03-01T00:00:00Z", rows), "f")
    acme = bill_month(book, MARCH, [(document.as_of, document.machines())]).bills[0]
    assert [line.kind for line in acme.lines] == ["pc"]
    assert [(p.machine_id, p.pending_kind) for p in acme.pending_kind] == [("srv?", "server")]


def test_a_price_book_client_the_inventory_never_lists_is_warned_about_by_name() -> None:
    book = price_book(client("acme"), client("acme-typo", name="Acme Dental"))
    month_bill = bill_month(book, MARCH, [(MARCH_1, [machine()])])
    assert month_bill.warnings == (
        "client 'Acme Dental' (acme-typo) is in the price book but the inventory has no machine "
        "of it at all: check its id against `rmm-collector client list`",
    )


def test_unmanaged_devices_in_the_inventory_are_listed_per_client() -> None:
    envelope = {
        "as_of": "2026-03-01T00:00:00Z",
        "machines": [machine()],
        "unmanaged": [
            {
                "client_id": "acme",
                "mac": "aa:bb:cc:00:00:02",
                "ip": "10.0.0.9",
                "first_seen": "2026-02-01T10:00:00Z",
                "last_seen": "2026-02-28T10:00:00Z",
            },
            {
                "client_id": "bayside",
                "mac": "aa:bb:cc:00:00:03",
                "ip": "10.1.0.9",
                "first_seen": "2026-02-01T10:00:00Z",
                "last_seen": "2026-02-28T10:00:00Z",
            },
        ],
    }
    document = decode_inventory(msgspec.json.encode(envelope), "f")
    run = MonthRun(price_book(client("acme"), client("bayside")), MARCH)
    run.take(document.as_of, document.machines(), "f", document.unmanaged)
    acme, bayside = run.finish().bills
    assert [(d.mac, d.ip) for d in acme.unmanaged] == [("aa:bb:cc:00:00:02", "10.0.0.9")]
    assert [d.mac for d in bayside.unmanaged] == ["aa:bb:cc:00:00:03"]
    reports = build_reports(run.finish())
    assert [d.mac for d in reports.clients[0].unmanaged] == ["aa:bb:cc:00:00:02"]


def test_an_inventory_without_the_unmanaged_key_has_none() -> None:
    document = decode_inventory(inventory_bytes("2026-03-01T00:00:00Z", [machine()]), "f")
    assert document.unmanaged == []
