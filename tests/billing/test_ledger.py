"""The ledger keeps every issued invoice; numbers run in one gapless sequence per prefix."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from billing.ledger import MIGRATIONS, Ledger, LedgerError, NewInvoice
from tests.billing.factories import MARCH, at


def invoice_number(client_id: str, month: object, version: int) -> str:
    return f"{client_id}-{version}"  # numbers are the caller's; these tests need only uniqueness


def new(client_id: str, version: int) -> NewInvoice:
    return NewInvoice(
        number=invoice_number(client_id, MARCH, version),
        client_id=client_id,
        month=str(MARCH),
        version=version,
        currency="USD",
        total="45.00",
        issued_at=at("2026-03-02T08:00:00Z"),
        digest=f"digest-{version}",
        document=b"{}",
    )


def test_numbers_follow_one_sequence_per_prefix_across_months(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with ledger.transaction():
            taken = [ledger.next_number("NW-") for _ in range(3)]
        with ledger.transaction():
            taken.append(ledger.next_number("NW-"))
            other = ledger.next_number("SOUTH-")
        assert taken == [1, 2, 3, 4]
        assert other == 1


def test_a_rolled_back_run_leaves_no_gap_in_the_numbers(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with ledger.transaction():
            assert ledger.next_number("NW-") == 1
        with pytest.raises(RuntimeError), ledger.transaction():
            assert ledger.next_number("NW-") == 2
            raise RuntimeError("the run was refused after numbering")
        with ledger.transaction():
            assert ledger.next_number("NW-") == 2


def test_a_superseded_invoice_is_kept_and_points_to_its_successor(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with ledger.transaction():
            ledger.record(new("acme", 1), supersedes=None)
        with ledger.transaction():
            ledger.record(new("acme", 2), supersedes="acme-1")

        history = ledger.history("acme", "2026-03")
        assert [(i.number, i.superseded_by) for i in history] == [
            ("acme-1", "acme-2"),
            ("acme-2", None),
        ]
        assert ledger.latest("2026-03")["acme"].version == 2


def test_the_same_client_month_and_version_cannot_be_issued_twice(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with ledger.transaction():
            ledger.record(new("acme", 1), supersedes=None)
        with pytest.raises(sqlite3.IntegrityError), ledger.transaction():
            ledger.record(new("acme", 1), supersedes=None)
        assert len(ledger.history("acme", "2026-03")) == 1


def test_a_failed_transaction_records_nothing(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(RuntimeError), ledger.transaction():
            ledger.record(new("acme", 1), supersedes=None)
            raise RuntimeError("disk full")
        assert ledger.latest("2026-03") == {}


def test_reopening_the_ledger_keeps_its_invoices_and_migrations(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path) as ledger, ledger.transaction():
        ledger.record(new("acme", 1), supersedes=None)
    with Ledger.open(path) as ledger:
        assert ledger.document("acme-1") == b"{}"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM migration").fetchall() == [
            ("0001_invoices",),
            ("0002_numbers_credit_notes_drafts",),
            ("0003_pushes",),
        ]


def test_a_second_writer_waits_for_the_first_and_then_gives_up_with_a_clear_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path) as first, Ledger.open(path, busy_timeout=0.1) as second:
        with first.transaction():
            with pytest.raises(LedgerError, match="the ledger is busy"), second.transaction():
                pass
            first.record(new("acme", 1), supersedes=None)
        assert second.latest("2026-03")["acme"].number == "acme-1"


def test_a_ledger_of_the_old_per_client_month_numbering_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE migration (name TEXT PRIMARY KEY, applied_at TEXT)")
        db.executescript(MIGRATIONS[0][1])
        db.execute("INSERT INTO migration VALUES ('0001_invoices', '2026-03-02')")
        db.execute(
            "INSERT INTO invoice (number, client_id, month, version, currency, total, "
            "issued_at, digest, document) VALUES ('202603-acme-1', 'acme', '2026-03', 1, 'USD', "
            "'45.00', '2026-03-02T08:00:00Z', 'd', x'7b7d')"
        )
    with pytest.raises(LedgerError, match="numbered per client-month"):
        Ledger.open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM migration").fetchall() == [("0001_invoices",)]


def test_numbers_stay_gapless_across_invoices_credit_notes_and_months(tmp_path: Path) -> None:
    from billing.job import RunRequest, run_month
    from tests.billing.factories import SELLER, client, machine, price_book_toml, write_inventory

    prices = tmp_path / "prices.toml"
    prices.write_text(price_book_toml(client("acme"), client("bayside"), seller=SELLER))
    ledger = tmp_path / "ledger.sqlite3"
    for month, as_of in ((MARCH, "2026-03-01T00:00:00Z"), (MARCH.next(), "2026-04-01T00:00:00Z")):
        seen = "2026-03-30T00:00:00Z"
        rows = [
            machine(m, client_id=c, last_seen=seen) for m, c in (("a", "acme"), ("b", "bayside"))
        ]
        inventory = write_inventory(tmp_path / f"{month}.json", as_of, rows)
        for supersede in (False, True):
            run_month(
                RunRequest(
                    month=month,
                    prices=prices,
                    out=tmp_path / str(month),
                    now=at("2026-04-05T00:00:00Z"),
                    inventories=(inventory,),
                    ledger=ledger,
                    supersede_all=supersede,
                )
            )
    with sqlite3.connect(ledger) as db:
        numbers = [row[0] for row in db.execute("SELECT number FROM invoice")]
        numbers += [row[0] for row in db.execute("SELECT number FROM credit_note")]
    # Per month: 2 invoices, then 2 credit notes and 2 replacements.
    assert sorted(numbers) == [f"NW-{n:06d}" for n in range(1, 13)]
