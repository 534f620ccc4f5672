"""The ledger of issued invoices: one SQLite file per installation, so a rerun returns what was
issued and numbering runs on across months.

Invoices are never changed or deleted. Numbers come from one gapless sequence per invoice prefix
(the seller's), taken inside the issuing transaction, so a rolled-back run leaves no gap and two
runs at once cannot take the same number: each transaction starts with BEGIN IMMEDIATE, so the
second run waits for the first and then finds its invoices. Replacing an invoice adds a new
version, marks the old one superseded and issues a credit note for it. Invoices held for review
are drafts without a number until approved.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from wire.times import format_instant

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_invoices",
        """
        CREATE TABLE invoice (
            number        TEXT PRIMARY KEY,
            client_id     TEXT NOT NULL,
            month         TEXT NOT NULL,
            version       INTEGER NOT NULL CHECK (version >= 1),
            currency      TEXT NOT NULL,
            total         TEXT NOT NULL,
            issued_at     TEXT NOT NULL,
            digest        TEXT NOT NULL,
            document      BLOB NOT NULL,
            superseded_by TEXT REFERENCES invoice (number),
            UNIQUE (client_id, month, version)
        );
        """,
    ),
    (
        "0002_numbers_credit_notes_drafts",
        """
        CREATE TABLE series (
            prefix        TEXT PRIMARY KEY,
            last_sequence INTEGER NOT NULL CHECK (last_sequence >= 0)
        );
        ALTER TABLE invoice ADD COLUMN machines INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX invoice_client_month ON invoice (client_id, month);
        CREATE TABLE credit_note (
            number    TEXT PRIMARY KEY,
            credits   TEXT NOT NULL UNIQUE REFERENCES invoice (number),
            client_id TEXT NOT NULL,
            month     TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            document  BLOB NOT NULL
        );
        CREATE TABLE draft (
            client_id         TEXT NOT NULL,
            month             TEXT NOT NULL,
            reason            TEXT NOT NULL,
            machines          INTEGER NOT NULL,
            previous_invoice  TEXT NOT NULL,
            previous_machines INTEGER NOT NULL,
            prefix            TEXT NOT NULL,
            digest            TEXT NOT NULL,
            held_at           TEXT NOT NULL,
            document          BLOB NOT NULL,
            PRIMARY KEY (client_id, month)
        );
        """,
    ),
    (
        "0003_pushes",
        """
        CREATE TABLE push (
            id             INTEGER PRIMARY KEY,
            target         TEXT NOT NULL,
            client_id      TEXT NOT NULL,
            month          TEXT NOT NULL,
            invoice_number TEXT NOT NULL REFERENCES invoice (number),
            object         TEXT NOT NULL,
            before         TEXT,
            after          TEXT NOT NULL,
            changed        INTEGER NOT NULL,
            at             TEXT NOT NULL
        );
        CREATE INDEX push_month ON push (target, month, client_id);
        """,
    ),
)


class LedgerError(RuntimeError):
    """The ledger file cannot be opened or is not a billing ledger."""


@dataclass(frozen=True, slots=True)
class IssuedInvoice:
    number: str
    client_id: str
    month: str
    version: int
    digest: str
    superseded_by: str | None
    machines: int = 0

    @property
    def status(self) -> str:
        return "issued" if self.superseded_by is None else "superseded"


_ISSUED = "number, client_id, month, version, digest, superseded_by, machines"


@dataclass(frozen=True, slots=True)
class Draft:
    client_id: str
    month: str
    reason: str
    machines: int
    previous_invoice: str
    previous_machines: int
    prefix: str
    digest: str
    document: bytes


@dataclass(frozen=True, slots=True)
class NewInvoice:
    number: str
    client_id: str
    month: str
    version: int
    currency: str
    total: str
    issued_at: datetime
    digest: str
    document: bytes
    machines: int = 0


@dataclass(frozen=True, slots=True)
class Pushed:
    """One PSA object set (or one webhook delivery) for a client-month's invoice."""

    target: str
    client_id: str
    month: str
    invoice_number: str
    object: str
    before: str | None
    after: str
    changed: bool
    at: str = ""


class Ledger:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = 60.0) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
            connection.execute("PRAGMA foreign_keys = ON")
            ledger = cls(connection)
            ledger._migrate()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"ledger {path}: {exc}") from exc
        except LedgerError as exc:
            connection.close()
            raise LedgerError(f"ledger {path}: {exc}") from exc
        return ledger

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self.transaction():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS migration (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
            applied = {row[0] for row in self._db.execute("SELECT name FROM migration")}
            for name, script in MIGRATIONS:
                if name in applied:
                    continue
                if (
                    name == "0002_numbers_credit_notes_drafts"
                    and self._db.execute("SELECT count(*) FROM invoice").fetchone()[0]
                ):
                    raise LedgerError(
                        "it holds invoices numbered per client-month (the format before "
                        "gapless numbering); keep it as the record of those months and let this "
                        "installation's ledger start afresh (default ./data/billing-ledger.sqlite3)"
                    )
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO migration (name, applied_at) VALUES (?, datetime('now'))", (name,)
                )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One writer at a time: a second run of the same month waits, then sees the first's."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise LedgerError(f"the ledger is busy or unwritable ({exc}); try again") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def latest(self, month: str) -> dict[str, IssuedInvoice]:
        """The current (highest) version of each client's invoice for `month`."""
        rows = self._db.execute(
            f"SELECT {_ISSUED} FROM invoice WHERE month = ? AND superseded_by IS NULL",
            (month,),
        )
        return {row[1]: IssuedInvoice(*row) for row in rows}

    def month_invoices(self, month: str) -> list[IssuedInvoice]:
        """Every invoice issued for `month`, current and superseded, by client and version."""
        rows = self._db.execute(
            f"SELECT {_ISSUED} FROM invoice WHERE month = ? ORDER BY client_id, version",
            (month,),
        )
        return [IssuedInvoice(*row) for row in rows]

    def history(self, client_id: str, month: str) -> list[IssuedInvoice]:
        rows = self._db.execute(
            f"SELECT {_ISSUED} FROM invoice WHERE client_id = ? AND month = ? ORDER BY version",
            (client_id, month),
        )
        return [IssuedInvoice(*row) for row in rows]

    def previous_invoices(self, month: str) -> dict[str, IssuedInvoice]:
        """Per client, its current invoice of the latest month before `month` that has one."""
        rows = self._db.execute(
            f"""
            SELECT {_ISSUED} FROM invoice AS i
            WHERE superseded_by IS NULL AND month = (
                SELECT max(month) FROM invoice AS p
                WHERE p.client_id = i.client_id AND p.month < ? AND p.superseded_by IS NULL
            )
            """,
            (month,),
        )
        return {row[1]: IssuedInvoice(*row) for row in rows}

    def next_number(self, prefix: str) -> int:
        """The next sequence number of `prefix`'s series; call inside a transaction."""
        self._db.execute(
            "INSERT INTO series (prefix, last_sequence) VALUES (?, 0) ON CONFLICT DO NOTHING",
            (prefix,),
        )
        row = self._db.execute(
            "UPDATE series SET last_sequence = last_sequence + 1 WHERE prefix = ? "
            "RETURNING last_sequence",
            (prefix,),
        ).fetchone()
        return int(row[0])

    def record_credit_note(
        self, number: str, credits: str, client_id: str, month: str, at: datetime, document: bytes
    ) -> None:
        self._db.execute(
            "INSERT INTO credit_note (number, credits, client_id, month, issued_at, document) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (number, credits, client_id, month, format_instant(at), document),
        )

    def credit_notes(self, month: str) -> list[tuple[str, bytes]]:
        rows = self._db.execute(
            "SELECT number, document FROM credit_note WHERE month = ? ORDER BY client_id, number",
            (month,),
        )
        return [(row[0], bytes(row[1])) for row in rows]

    def hold(self, draft: Draft, at: datetime) -> None:
        """Keep (or refresh) the draft of a client-month held for review."""
        self._db.execute(
            """
            INSERT INTO draft (client_id, month, reason, machines, previous_invoice,
                               previous_machines, prefix, digest, held_at, document)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (client_id, month) DO UPDATE SET
                reason = excluded.reason, machines = excluded.machines,
                previous_invoice = excluded.previous_invoice,
                previous_machines = excluded.previous_machines, prefix = excluded.prefix,
                digest = excluded.digest,
                held_at = excluded.held_at, document = excluded.document
            """,
            (
                draft.client_id,
                draft.month,
                draft.reason,
                draft.machines,
                draft.previous_invoice,
                draft.previous_machines,
                draft.prefix,
                draft.digest,
                format_instant(at),
                draft.document,
            ),
        )

    def drafts(self, month: str) -> list[Draft]:
        rows = self._db.execute(
            "SELECT client_id, month, reason, machines, previous_invoice, previous_machines, "
            "prefix, digest, document FROM draft WHERE month = ? ORDER BY client_id",
            (month,),
        )
        return [
            Draft(
                client_id=row[0],
                month=row[1],
                reason=row[2],
                machines=row[3],
                previous_invoice=row[4],
                previous_machines=row[5],
                prefix=row[6],
                digest=row[7],
                document=bytes(row[8]),
            )
            for row in rows
        ]

    def record_push(self, pushed: Pushed, at: datetime) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO push (target, client_id, month, invoice_number, object, before, "
                "after, changed, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pushed.target,
                    pushed.client_id,
                    pushed.month,
                    pushed.invoice_number,
                    pushed.object,
                    pushed.before,
                    pushed.after,
                    int(pushed.changed),
                    format_instant(at),
                ),
            )

    def pushes(self, month: str, target: str | None = None) -> list[Pushed]:
        rows = self._db.execute(
            "SELECT target, client_id, month, invoice_number, object, before, after, changed, at "
            "FROM push WHERE month = ? AND (? IS NULL OR target = ?) ORDER BY client_id, id",
            (month, target, target),
        )
        return [Pushed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8]) for r in rows]

    def drop_draft(self, client_id: str, month: str) -> None:
        self._db.execute("DELETE FROM draft WHERE client_id = ? AND month = ?", (client_id, month))

    def document(self, number: str) -> bytes:
        row = self._db.execute(
            "SELECT document FROM invoice WHERE number = ?", (number,)
        ).fetchone()
        if row is None:
            raise LedgerError(f"invoice {number} is not in the ledger")
        return bytes(row[0])

    def record(self, invoice: NewInvoice, *, supersedes: str | None) -> None:
        self._db.execute(
            """
            INSERT INTO invoice
                (number, client_id, month, version, currency, total, issued_at, digest, document,
                 machines)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                invoice.number,
                invoice.client_id,
                invoice.month,
                invoice.version,
                invoice.currency,
                invoice.total,
                format_instant(invoice.issued_at),
                invoice.digest,
                invoice.document,
                invoice.machines,
            ),
        )
        if supersedes is not None:
            self._db.execute(
                "UPDATE invoice SET superseded_by = ? WHERE number = ?",
                (invoice.number, supersedes),
            )
