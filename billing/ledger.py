"""The ledger of issued invoices: one SQLite file, so a rerun returns what was issued.

Invoices are never changed or deleted. Replacing one adds a new version and marks the old one as
superseded by it; numbering is a function of (client, month, version) and the table enforces it.
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
            """
            SELECT number, client_id, month, version, digest, superseded_by FROM invoice
            WHERE month = ? AND superseded_by IS NULL
            """,
            (month,),
        )
        return {row[1]: IssuedInvoice(*row) for row in rows}

    def history(self, client_id: str, month: str) -> list[IssuedInvoice]:
        rows = self._db.execute(
            """
            SELECT number, client_id, month, version, digest, superseded_by FROM invoice
            WHERE client_id = ? AND month = ? ORDER BY version
            """,
            (client_id, month),
        )
        return [IssuedInvoice(*row) for row in rows]

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
                (number, client_id, month, version, currency, total, issued_at, digest, document)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
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
            ),
        )
        if supersedes is not None:
            self._db.execute(
                "UPDATE invoice SET superseded_by = ? WHERE number = ?",
                (invoice.number, supersedes),
            )
