"""The embedded engine: one SQLite file in WAL mode.

One writer thread owns the only write connection and runs every write as `BEGIN IMMEDIATE` ..
`COMMIT`; an asyncio lock gives one transaction at a time the writer, so writers never fight over
the file lock inside a process. Reads run on a few read-only connections, each with a thread of
its own (a connection is only ever used from its thread, in order), off the event loop.
`synchronous=FULL` makes an acknowledged write survive a crash of the process or of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from collector.store.records import HeartbeatRecord, StoreError
from collector.store.sql import Dialect, Row, StoreUnavailable, Tx, UniqueViolation
from collector.store.sqlite import flush, inventory
from collector.store.sqlite.dialect import SQLITE
from collector.store.sqlite.schema import MIGRATIONS
from wire.times import to_micros

T = TypeVar("T")

_READERS = 4
# A request waits this long for a lock another process holds, then is told to retry (503):
# long stalls must not hold requests, and a failed flush simply runs again a second later.
_BUSY_TIMEOUT_MS = 2_000
_OPEN_BUSY_TIMEOUT_MS = 60_000
_WRITE_LOCK_WAIT_S = 2.0


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return value


def _params(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_param(a) for a in args)


def _migrations_pending(conn: sqlite3.Connection) -> bool:
    """Whether the file (as last committed) lacks a migration; reading takes no lock."""
    try:
        applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    except sqlite3.OperationalError:  # a new file: no table yet
        return True
    return any(name not in applied for name, _ in MIGRATIONS)


def translate(exc: sqlite3.Error) -> StoreError:
    """What a driver error means for the caller."""
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in message:
        return UniqueViolation(message)
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"SQLite: {message}")
    return StoreError(f"SQLite: {message}")


class Worker:
    """One connection and the one thread that uses it: whatever is queued runs in order."""

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self.conn = conn
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True)


class SQLiteTx:
    """A transaction on one worker; it begins with its first statement (one thread hop less)."""

    dialect: Dialect = SQLITE

    def __init__(self, worker: Worker, begin: str) -> None:
        self._worker = worker
        self._begin = begin
        self.began = False

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        def guarded() -> T:
            try:
                if not self.began:
                    self._worker.conn.execute(self._begin)
                    self.began = True
                return fn(self._worker.conn)
            except sqlite3.Error as exc:
                raise translate(exc) from exc

        return self._worker.call(guarded)

    async def execute(self, sql: str, *args: Any) -> int:
        params = _params(args)
        return await self._run(lambda conn: conn.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [_params(row) for row in rows]
        if batch:
            await self._run(lambda conn: conn.executemany(sql, batch))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        params = _params(args)
        return await self._run(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        params = _params(args)
        row: Row | None = await self._run(lambda conn: conn.execute(sql, params).fetchone())
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def lock(self, key: int) -> None:
        """The one writer already excludes every other write."""

    async def try_lock(self, key: int) -> bool:
        return True

    async def end(self, statement: str) -> None:
        """COMMIT or ROLLBACK, queued behind whatever this worker still runs."""
        if not self.began:
            return

        def run() -> None:
            try:
                self._worker.conn.execute(statement)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._worker.conn.execute("ROLLBACK")
                raise translate(exc) from exc

        await self._worker.call(run)


def _begin_read(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    # In WAL mode a read transaction takes its snapshot at its first read.
    conn.execute("SELECT 1 FROM machines LIMIT 1").fetchall()


def _end_read(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("COMMIT")


class SQLiteEngine:
    dialect: Dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self._path = path
        self.location = str(path)
        self._writer: Worker | None = None
        self._write_lock = asyncio.Lock()
        self._idle: asyncio.LifoQueue[Worker] = asyncio.LifoQueue()
        self._readers: list[Worker] = []
        self._opening = 0
        # An inventory holds two readers for its whole stream: one at a time, so two never wait
        # for each other's second reader.
        self._inventory_lock = asyncio.Lock()
        self._closed = False

    # lifetime

    @classmethod
    async def open(cls, db: str) -> SQLiteEngine:
        path = Path(db)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # Token digests and the audit log live here: readable by the collector only.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(
                f"cannot create the SQLite file {path}: {exc.strerror or exc}; check that "
                f"{path.parent} exists and this user may write there"
            ) from exc
        engine = cls(path)
        try:
            conn = await asyncio.to_thread(engine._connect_writer)
            engine._writer = Worker(conn, "sqlite-writer")
            await engine._writer.call(lambda: engine._migrate(conn))
        except sqlite3.Error as exc:
            await engine.close()
            raise StoreError(
                f"cannot open the SQLite file {path}: {exc}; check that this user may write "
                f"the file and its folder {path.parent} (SQLite keeps -wal and -shm files "
                "there) and that no other process holds the database locked"
            ) from exc
        return engine

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        # Switching a new file to WAL and migrating it wait for instances opening it too
        # (each migrates in turn); `_migrate` then sets the short wait requests have.
        conn.execute(f"PRAGMA busy_timeout={_OPEN_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # The flush's scratch tables stay in memory, and the machine pages it updates every
        # second stay cached (64 MiB) rather than being read back from the file each time.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        if not _migrations_pending(conn):
            # Migrated already: a lock held now is another process's work, not a migration
            # about to end, and is reported as soon as a request would be.
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in applied:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", (name,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        workers = [*self._readers, *([self._writer] if self._writer else [])]
        for worker in workers:
            await worker.call(worker.conn.close)
            worker.shutdown()
        self._readers.clear()

    def _check_open(self) -> Worker:
        if self._closed or self._writer is None:
            raise StoreError("the store is closed")
        return self._writer

    # transactions

    @contextlib.asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        """The writer for one transaction; a request does not wait long behind a stall."""
        try:
            async with asyncio.timeout(_WRITE_LOCK_WAIT_S):
                await self._write_lock.acquire()
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"the database is busy: a write has been waiting over {_WRITE_LOCK_WAIT_S:.0f} s"
            ) from exc
        try:
            yield
        finally:
            self._write_lock.release()

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        writer = self._check_open()
        async with self._writer_turn():
            tx = SQLiteTx(writer, "BEGIN IMMEDIATE")
            try:
                result = await fn(tx)
            except BaseException:
                await asyncio.shield(tx.end("ROLLBACK"))
                raise
            await tx.end("COMMIT")
            return result

    async def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer's thread as one transaction (for the flush's many statements,
        which are cheaper without a thread hop each)."""
        writer = self._check_open()

        def run() -> T:
            conn = writer.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise translate(exc) from exc

        async with self._writer_turn():
            return await writer.call(run)

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[Worker]:
        """A read connection of the pool, for the caller alone until it is done with it."""
        self._check_open()
        if self._idle.empty() and len(self._readers) + self._opening < _READERS:
            uri = self._path.resolve().as_uri() + "?mode=ro"

            def connect() -> sqlite3.Connection:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
                return conn

            self._opening += 1
            try:
                worker = Worker(await asyncio.to_thread(connect), "sqlite-reader")
            finally:
                self._opening -= 1
            self._readers.append(worker)
        else:
            worker = await self._idle.get()
        try:
            yield worker
        finally:
            self._idle.put_nowait(worker)

    async def read(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        async with self.reader() as worker:
            tx = SQLiteTx(worker, "BEGIN")
            try:
                return await fn(tx)
            finally:
                await asyncio.shield(tx.end("COMMIT"))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        params = _params(args)
        async with self.reader() as worker:

            def run() -> list[Row]:
                try:
                    return worker.conn.execute(sql, params).fetchall()
                except sqlite3.Error as exc:
                    raise translate(exc) from exc

            return await worker.call(run)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    # the hot paths

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None:
        gap_us = int(gap_s * 1_000_000)
        await self.write_sync(lambda conn: flush.apply_heartbeats(conn, batch, gap_us))

    async def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int
    ) -> AsyncGenerator[bytes, None]:
        async with self._inventory_lock, self.reader() as first, self.reader() as second:
            streams = (first, second)
            try:
                await self._share_snapshot(streams)
                async for chunk in inventory.stream(streams, as_of, batch_size=batch_size):
                    yield chunk
            finally:
                for worker in streams:
                    await asyncio.shield(worker.call(functools.partial(_end_read, worker.conn)))

    async def _share_snapshot(self, workers: Sequence[Worker]) -> None:
        """Open one read transaction on each worker, all on the same snapshot: while they start,
        the file's write lock is held (no process commits in between), then let go."""
        writer = self._check_open()
        async with self._write_lock:
            await writer.call(lambda: writer.conn.execute("BEGIN IMMEDIATE"))
            try:
                for worker in workers:
                    await worker.call(functools.partial(_begin_read, worker.conn))
            finally:
                await asyncio.shield(writer.call(lambda: writer.conn.execute("ROLLBACK")))
