"""The ledger keeps every issued invoice; numbers are a function of (client, month, version)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from billing.documents import invoice_number
from billing.ledger import Ledger, LedgerError, NewInvoice
from tests.billing.factories import MARCH, at


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


def test_invoice_numbers_are_deterministic_per_client_month_and_version() -> None:
    assert invoice_number("acme", MARCH, 1) == "202603-acme-1"
    assert invoice_number("acme", MARCH, 2) == "202603-acme-2"
    assert invoice_number("acme", MARCH.next(), 1) == "202604-acme-1"


def test_a_superseded_invoice_is_kept_and_points_to_its_successor(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        with ledger.transaction():
            ledger.record(new("acme", 1), supersedes=None)
        with ledger.transaction():
            ledger.record(new("acme", 2), supersedes="202603-acme-1")

        history = ledger.history("acme", "2026-03")
        assert [(i.number, i.superseded_by) for i in history] == [
            ("202603-acme-1", "202603-acme-2"),
            ("202603-acme-2", None),
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
        assert ledger.document("202603-acme-1") == b"{}"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM migration").fetchall() == [("0001_invoices",)]


def test_a_second_writer_waits_for_the_first_and_then_gives_up_with_a_clear_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path) as first, Ledger.open(path, busy_timeout=0.1) as second:
        with first.transaction():
            with pytest.raises(LedgerError, match="the ledger is busy"), second.transaction():
                pass
            first.record(new("acme", 1), supersedes=None)
        assert second.latest("2026-03")["acme"].number == "202603-acme-1"
