"""The small query layer both engines speak, so the store's SQL is written once.

Statements use `?` placeholders and standard SQL that SQLite and PostgreSQL both run (`ON
CONFLICT`, `RETURNING`, `COUNT(*) FILTER (WHERE ...)`, `COALESCE`). What differs between the two is
kept in one `Dialect` per engine: a few SQL fragments (JSON access, case-insensitive search, row
locks) and how instants travel (SQLite keeps INTEGER microseconds, PostgreSQL `timestamptz`).

A `Tx` is one transaction: the store's parts read the rows a rule needs, call the rule (a plain
function in `collector.rules`), then write what it decided, all through the same `Tx`. Advisory
locks (`lock`, `try_lock`) serialise work across collector instances on PostgreSQL; on SQLite the
single writer already does, so they are no-ops there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from collector.store.records import Conflict, HeartbeatRecord, StoreError

T = TypeVar("T")
Row = Sequence[Any]

# Advisory lock keys: one per kind of work that must not run twice at once across instances.
LOCK_MIGRATIONS = 0x524D4D_0001
LOCK_REVOCATIONS = 0x524D4D_0002
LOCK_SWEEP = 0x524D4D_0003
LOCK_FLUSH = 0x524D4D_0004
LOCK_RETENTION = 0x524D4D_0005


class UniqueViolation(Conflict):
    """A row with that key exists already (the engine's unique constraint said so)."""


class StoreUnavailable(StoreError):
    """The database cannot serve right now (locked, full, read-only, unreachable): try later."""


class Dialect(ABC):
    """The SQL fragments and value conversions that differ between the engines."""

    name: str
    # Appended to a SELECT whose rows a rule will decide on, so another instance waits.
    for_update: str

    @abstractmethod
    def instant(self, value: Any) -> datetime:
        """An instant read from a column."""

    def opt_instant(self, value: Any) -> datetime | None:
        return None if value is None else self.instant(value)

    @abstractmethod
    def greatest(self, first: str, second: str) -> str: ...

    @abstractmethod
    def contains_ci(self, column: str) -> str:
        """True where `column` contains the next parameter, ignoring ASCII case."""

    @abstractmethod
    def order_nocase(self, column: str) -> str:
        """ORDER BY term folding ASCII case, then bytewise (the same order on both engines)."""

    @abstractmethod
    def plus_interval(self, column: str) -> str:
        """`column` plus the next parameter, a `timedelta`."""

    @abstractmethod
    def component_exists(self, where: str) -> str:
        """EXISTS over the elements of the `components` JSON column, each readable through
        `self.component_field(name)` inside `where`."""

    @abstractmethod
    def component_field(self, name: str) -> str: ...

    @abstractmethod
    def component_required(self) -> str:
        """True for an element whose `required` is true or absent."""

    @abstractmethod
    def text_position(self, text: str, needle: str) -> str:
        """1-based position of the literal `needle` in `text`, 0 when absent."""

    def covered(self) -> str:
        """1 for machines reporting components with every required one running, else 0.

        Statuses are only running, stopped or missing, so a list mentioning neither of the other
        two is covered without parsing the JSON."""
        not_running = self.component_exists(
            f"{self.component_required()} AND {self.component_field('status')} <> 'running'"
        )
        return (
            "CASE WHEN components = '[]' THEN 0 "
            f"WHEN {self.text_position('components', 'stopped')} = 0 "
            f"AND {self.text_position('components', 'missing')} = 0 THEN 1 "
            f"WHEN {not_running} THEN 0 ELSE 1 END"
        )


class Tx(Protocol):
    """One transaction on one connection."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it touched."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...

    async def lock(self, key: int) -> None:
        """Hold the advisory lock `key` until this transaction ends (waiting for it)."""
        ...

    async def try_lock(self, key: int) -> bool:
        """Take the advisory lock `key` for this transaction if nobody holds it."""
        ...


class Engine(Protocol):
    """One database: its connections, its transactions, and the few operations whose SQL is
    each engine's own because they are the hot paths (the last-seen flush, the inventory)."""

    dialect: Dialect
    location: str

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `fn` in one write transaction, committed when this returns."""
        ...

    async def read(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `fn` in one read-only transaction: every statement sees one snapshot."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """One statement outside any explicit transaction (the cheapest read)."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None:
        """Write one flush of buffered heartbeats (see `collector.rules.presence`)."""
        ...

    def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int
    ) -> AsyncGenerator[bytes, None]:
        """Batches of inventory objects (see `collector.store.inventory_json`), one snapshot."""
        ...

    async def close(self) -> None: ...


def numbered_placeholders(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`, leaving string literals and quoted
    identifiers alone."""
    out: list[str] = []
    number = 0
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def one_of(column: str, values: frozenset[str] | None) -> tuple[str | None, list[Any]]:
    """`column IN (...)` for a set of values (None: no condition; empty: matches nothing)."""
    if values is None:
        return None, []
    if not values:
        return "1 = 0", []
    ordered = sorted(values)
    return f"{column} IN ({', '.join('?' for _ in ordered)})", ordered


def where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def filters(*comparisons: tuple[str, str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause comparing each column with its value, for the values that are not None
    (`("state", "=", "offboard_pending")`), and the arguments it takes in order."""
    given = [(column, op, value) for column, op, value in comparisons if value is not None]
    return where([f"{column} {op} ?" for column, op, _ in given]), [v for _, _, v in given]
