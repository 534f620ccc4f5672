"""The embedded store: one SQLite file in WAL mode.

One writer thread owns the only write connection and runs every write as `BEGIN IMMEDIATE` ..
`COMMIT`, so writers never fight over the lock inside a process; reads run on a small pool of
read-only connections, off the event loop. `synchronous=FULL` makes an acknowledged write survive
a crash of the process or of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec

from collector.store.base import (
    MACHINE_STATES,
    AgentEvent,
    AgentIdentity,
    ApiTokenInfo,
    AuditEntry,
    AuditFilter,
    Client,
    ClientOverview,
    CommandFilter,
    CommandRecord,
    CommandResultRecord,
    CommandState,
    Conflict,
    CoveragePeriod,
    EnrollmentTokenInfo,
    EnrollOutcome,
    EnrollRequestRecord,
    ExposureRow,
    HeartbeatRecord,
    InventoryRecord,
    MachineFilter,
    MachinePage,
    MachineQuery,
    MachineRecord,
    MachineState,
    NotFound,
    NotOwner,
    OffboardAttention,
    OffboardRequestRecord,
    OffboardState,
    PresenceHistory,
    PresenceRun,
    Role,
    StateWindows,
    StoreError,
)
from collector.store.inventory_json import records_from_json
from collector.store.sqlite_schema import MIGRATIONS
from wire.times import EXPIRY, format_instant, from_micros, to_micros

T = TypeVar("T")

_EXPIRY_US = int(EXPIRY.total_seconds()) * 1_000_000
_READERS = 4
_FLUSH_CHUNK = 2_000
# A buffered heartbeat `b` changes what machine row `{m}` says (hostname, os, kind omitted = kept).
_FACTS_CHANGED = (
    "{m}.hostname IS NOT COALESCE(b.hostname, {m}.hostname) "
    "OR {m}.os IS NOT COALESCE(b.os, {m}.os) OR {m}.kind IS NOT COALESCE(b.kind, {m}.kind) "
    "OR {m}.components IS NOT b.components"
)


def _us(moment: datetime) -> int:
    return to_micros(moment)


def _json_instant(column: str) -> str:
    """SQL writing the instant in `column` (microseconds) as a JSON string, as the collector
    writes instants everywhere: `"2026-11-01T00:00:00Z"`, six fraction digits when there is a
    fraction. NULL stays NULL."""
    seconds = f"{column} / 1000000, 'unixepoch'"
    return (
        f"CASE WHEN {column} % 1000000 = 0 THEN strftime('\"%Y-%m-%dT%H:%M:%SZ\"', {seconds}) "
        f"ELSE strftime('\"%Y-%m-%dT%H:%M:%S.', {seconds}) "
        f"|| substr({column} % 1000000 + 1000000, 2) || 'Z\"' END"
    )


def _inventory_object(hostname: str, kind: str, components: str) -> str:
    """SQL writing one inventory object, in one allocation, from the row `i` and the facts
    columns named. Machine and client ids are UUIDs the collector made and kind is `pc` or
    `server`: only the hostname needs escaping; components are stored as JSON."""
    return (
        'printf(\'{"machine_id":"%s","client_id":"%s","hostname":%s,'
        '"kind":"%s","first_seen":%s,"last_seen":%s,"offboarded_at":%s,'
        '"components":%s}\', '
        f"i.machine_id, i.client_id, json_quote({hostname}), {kind}, "
        f"{_json_instant('i.first_seen')}, "
        f"CASE WHEN i.last_seen = :as_of THEN :as_of_json ELSE {_json_instant('i.last_seen')} END, "
        f"COALESCE({_json_instant('i.offboarded_at')}, 'null'), {components})"
    )


def _opt_dt(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


def _detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False

    # lifetime

    @classmethod
    async def open(cls, db: str) -> SQLiteStore:
        path = Path(db)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Token digests and the audit log live here: readable by the collector's user only.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        store = cls(path)
        await store._run_write_raw(store._connect_writer)
        return store

    def _connect_writer(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        # The flush's scratch tables stay in memory, and the machine pages it updates every
        # second stay cached (64 MiB) rather than being read back from the file each time.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        self._write_conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
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

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_writer() -> None:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None

        await asyncio.get_running_loop().run_in_executor(self._writer, close_writer)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()

    # plumbing

    async def _run_write_raw(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("the store is closed")

        def run() -> T:
            conn = self._write_conn
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run_write_raw(run)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self._path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
            with self._conns_lock:
                self._read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: fn(self._reader())
        )

    @staticmethod
    def _audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
        conn.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (_us(entry.at), entry.actor, entry.action, entry.target, _detail_json(entry.detail)),
        )

    # clients and enrollment tokens

    async def create_client(self, name: str, *, now: datetime, actor: str) -> Client:
        client = Client(client_id=str(uuid.uuid4()), name=name, created_at=now)

        def run(conn: sqlite3.Connection) -> Client:
            try:
                conn.execute(
                    "INSERT INTO clients (client_id, name, created_at) VALUES (?, ?, ?)",
                    (client.client_id, name, _us(now)),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a client named {name!r} already exists") from exc
            self._audit(
                conn, AuditEntry(now, actor, "client.created", client.client_id, {"name": name})
            )
            return client

        return await self._write(run)

    async def list_clients(self) -> list[Client]:
        def run(conn: sqlite3.Connection) -> list[Client]:
            rows = conn.execute(
                "SELECT client_id, name, created_at FROM clients ORDER BY name"
            ).fetchall()
            return [Client(r[0], r[1], from_micros(r[2])) for r in rows]

        return await self._read(run)

    async def find_client(self, name_or_id: str) -> Client | None:
        def run(conn: sqlite3.Connection) -> Client | None:
            row = conn.execute(
                "SELECT client_id, name, created_at FROM clients WHERE client_id = ? OR name = ?",
                (name_or_id, name_or_id),
            ).fetchone()
            return None if row is None else Client(row[0], row[1], from_micros(row[2]))

        return await self._read(run)

    async def add_enrollment_token(
        self, client_id: str, token_hash: str, *, expires_at: datetime, now: datetime, actor: str
    ) -> EnrollmentTokenInfo:
        info = EnrollmentTokenInfo(str(uuid.uuid4()), client_id, now, expires_at, None)

        def run(conn: sqlite3.Connection) -> EnrollmentTokenInfo:
            if (
                conn.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone()
                is None
            ):
                raise NotFound(f"no client {client_id!r}")
            conn.execute(
                "INSERT INTO enrollment_tokens (token_id, client_id, token_hash, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?)",
                (info.token_id, client_id, token_hash, _us(now), _us(expires_at)),
            )
            self._audit(
                conn,
                AuditEntry(
                    now,
                    actor,
                    "enrollment_token.created",
                    client_id,
                    {"token_id": info.token_id, "expires_at": format_instant(expires_at)},
                ),
            )
            return info

        return await self._write(run)

    async def list_enrollment_tokens(self, client_id: str) -> list[EnrollmentTokenInfo]:
        def run(conn: sqlite3.Connection) -> list[EnrollmentTokenInfo]:
            rows = conn.execute(
                "SELECT token_id, client_id, created_at, expires_at, revoked_at "
                "FROM enrollment_tokens WHERE client_id = ? ORDER BY created_at, token_id",
                (client_id,),
            ).fetchall()
            return [
                EnrollmentTokenInfo(r[0], r[1], from_micros(r[2]), from_micros(r[3]), _opt_dt(r[4]))
                for r in rows
            ]

        return await self._read(run)

    async def revoke_enrollment_tokens(
        self, client_id: str, *, token_id: str | None, now: datetime, actor: str
    ) -> int:
        def run(conn: sqlite3.Connection) -> int:
            sql = (
                "UPDATE enrollment_tokens SET revoked_at = ? "
                "WHERE client_id = ? AND revoked_at IS NULL"
            )
            params: tuple[Any, ...] = (_us(now), client_id)
            if token_id is not None:
                sql += " AND token_id = ?"
                params += (token_id,)
            count = conn.execute(sql, params).rowcount
            if count:
                self._audit(
                    conn,
                    AuditEntry(
                        now,
                        actor,
                        "enrollment_token.revoked",
                        client_id,
                        {"token_id": token_id or "all", "count": count},
                    ),
                )
            return count

        return await self._write(run)

    # API tokens

    async def add_api_token(
        self, name: str, role: Role, token_hash: str, *, now: datetime, actor: str
    ) -> ApiTokenInfo:
        info = ApiTokenInfo(str(uuid.uuid4()), name, role, now, None)

        def run(conn: sqlite3.Connection) -> ApiTokenInfo:
            try:
                conn.execute(
                    "INSERT INTO api_tokens (token_id, name, role, token_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (info.token_id, name, role, token_hash, _us(now)),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"an active API token named {name!r} already exists") from exc
            self._audit(conn, AuditEntry(now, actor, "api_token.created", name, {"role": role}))
            return info

        return await self._write(run)

    async def list_api_tokens(self) -> list[ApiTokenInfo]:
        def run(conn: sqlite3.Connection) -> list[ApiTokenInfo]:
            rows = conn.execute(
                "SELECT token_id, name, role, created_at, revoked_at FROM api_tokens "
                "ORDER BY created_at"
            ).fetchall()
            return [
                ApiTokenInfo(r[0], r[1], cast(Role, r[2]), from_micros(r[3]), _opt_dt(r[4]))
                for r in rows
            ]

        return await self._read(run)

    async def revoke_api_token(self, name: str, *, now: datetime, actor: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            count = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (_us(now), name),
            ).rowcount
            if count:
                self._audit(conn, AuditEntry(now, actor, "api_token.revoked", name, {}))
            return count > 0

        return await self._write(run)

    async def find_api_token(self, token_hash: str) -> ApiTokenInfo | None:
        def run(conn: sqlite3.Connection) -> ApiTokenInfo | None:
            r = conn.execute(
                "SELECT token_id, name, role, created_at, revoked_at FROM api_tokens "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
            if r is None:
                return None
            return ApiTokenInfo(r[0], r[1], cast(Role, r[2]), from_micros(r[3]), None)

        return await self._read(run)

    # agents

    async def enroll(
        self, request: EnrollRequestRecord, *, now: datetime, gap_s: float
    ) -> EnrollOutcome:
        now_us = _us(now)
        gap_us = int(gap_s * 1_000_000)
        facts = request.facts

        def run(conn: sqlite3.Connection) -> EnrollOutcome:
            token = conn.execute(
                "SELECT client_id FROM enrollment_tokens WHERE token_hash = ? "
                "AND revoked_at IS NULL AND expires_at > ?",
                (request.enrollment_token_hash, now_us),
            ).fetchone()
            if token is None:
                raise NotFound("the enrollment token is unknown, expired or revoked")
            client_id: str = token[0]
            existing = conn.execute(
                "SELECT machine_id, offboard_state, last_seen FROM machines "
                "WHERE client_id = ? AND hardware_id = ?",
                (client_id, request.hardware_id),
            ).fetchone()
            reenrolled = existing is not None
            if existing is None:
                machine_id = str(uuid.uuid4())
                conn.execute(
                    "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, "
                    "components, first_seen, presence_start, last_seen, facts_since, agent_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        machine_id,
                        client_id,
                        request.hardware_id,
                        facts.hostname,
                        facts.os,
                        facts.kind,
                        facts.components_json,
                        now_us,
                        now_us,
                        now_us,
                        now_us,
                        request.agent_id,
                    ),
                )
                conn.execute(
                    "INSERT INTO coverage (machine_id, first_seen) VALUES (?, ?)",
                    (machine_id, now_us),
                )
            else:
                machine_id = existing[0]
                offboarded = existing[1] == "offboarded"
                self._close_presence_if_gap(conn, machine_id, now_us, existing[2], gap_us)
                self._revoke_agents(conn, machine_id, now_us)
                if offboarded:
                    # An offboarded machine enrolled again starts a new coverage period.
                    conn.execute(
                        "INSERT INTO coverage (machine_id, first_seen) VALUES (?, ?)",
                        (machine_id, now_us),
                    )
                conn.execute(
                    "UPDATE machines SET hostname = ?, os = ?, kind = ?, "
                    "components = CASE WHEN ? = '[]' THEN components ELSE ? END, "
                    "last_seen = MAX(last_seen, ?), facts_since = ?, agent_id = ?, "
                    "first_seen = CASE WHEN ? THEN ? ELSE first_seen END, "
                    "offboard_state = CASE WHEN ? THEN NULL ELSE offboard_state END, "
                    "offboarded_at = CASE WHEN ? THEN NULL ELSE offboarded_at END "
                    "WHERE machine_id = ?",
                    (
                        facts.hostname,
                        facts.os,
                        facts.kind,
                        facts.components_json,
                        facts.components_json,
                        now_us,
                        now_us,
                        request.agent_id,
                        offboarded,
                        now_us,
                        offboarded,
                        offboarded,
                        machine_id,
                    ),
                )
            conn.execute(
                "INSERT OR REPLACE INTO facts (machine_id, valid_from, hostname, os, kind, "
                "components) SELECT machine_id, ?, hostname, os, kind, components FROM machines "
                "WHERE machine_id = ?",
                (now_us, machine_id),
            )
            conn.execute(
                "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    request.agent_id,
                    machine_id,
                    request.agent_token_hash,
                    request.agent_version,
                    now_us,
                ),
            )
            self._audit(
                conn,
                AuditEntry(
                    now,
                    request.agent_id,
                    "machine.reenrolled" if reenrolled else "machine.enrolled",
                    machine_id,
                    {
                        "client_id": client_id,
                        "hostname": facts.hostname,
                        "kind": facts.kind,
                        "hardware_id": request.hardware_id,
                    },
                ),
            )
            return EnrollOutcome(request.agent_id, machine_id, client_id, reenrolled)

        return await self._write(run)

    async def enroll_new_machines_in_bulk(
        self, requests: Sequence[EnrollRequestRecord], *, now: datetime
    ) -> list[EnrollOutcome]:
        """Enroll many machines never seen before in one transaction (fleet set-up, load tests).

        Each is recorded exactly as `enroll` records a first enrollment (machine, coverage,
        facts, agent and audit entry). Hardware already enrolled for its client is a `Conflict`
        and nothing is written; re-enrollment goes through `enroll`.
        """
        if not requests:
            return []
        now_us = _us(now)
        machine_ids = [str(uuid.uuid4()) for _ in requests]

        def run(conn: sqlite3.Connection) -> list[EnrollOutcome]:
            clients: dict[str, str] = {}
            for token_hash in {r.enrollment_token_hash for r in requests}:
                row = conn.execute(
                    "SELECT client_id FROM enrollment_tokens WHERE token_hash = ? "
                    "AND revoked_at IS NULL AND expires_at > ?",
                    (token_hash, now_us),
                ).fetchone()
                if row is None:
                    raise NotFound("an enrollment token is unknown, expired or revoked")
                clients[token_hash] = row[0]
            client_ids = [clients[r.enrollment_token_hash] for r in requests]
            try:
                conn.executemany(
                    "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, "
                    "components, first_seen, presence_start, last_seen, facts_since, agent_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            machine_id,
                            client_id,
                            r.hardware_id,
                            r.facts.hostname,
                            r.facts.os,
                            r.facts.kind,
                            r.facts.components_json,
                            now_us,
                            now_us,
                            now_us,
                            now_us,
                            r.agent_id,
                        )
                        for r, machine_id, client_id in zip(
                            requests, machine_ids, client_ids, strict=True
                        )
                    ],
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    "some of this hardware is already enrolled (or listed twice); "
                    "bulk enrollment is for new machines only"
                ) from exc
            conn.executemany(
                "INSERT INTO coverage (machine_id, first_seen) VALUES (?, ?)",
                [(machine_id, now_us) for machine_id in machine_ids],
            )
            conn.executemany(
                "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (m, now_us, r.facts.hostname, r.facts.os, r.facts.kind, r.facts.components_json)
                    for r, m in zip(requests, machine_ids, strict=True)
                ],
            )
            conn.executemany(
                "INSERT INTO agents (agent_id, machine_id, token_hash, agent_version, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (r.agent_id, m, r.agent_token_hash, r.agent_version, now_us)
                    for r, m in zip(requests, machine_ids, strict=True)
                ],
            )
            conn.executemany(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        now_us,
                        r.agent_id,
                        "machine.enrolled",
                        m,
                        _detail_json(
                            {
                                "client_id": c,
                                "hostname": r.facts.hostname,
                                "kind": r.facts.kind,
                                "hardware_id": r.hardware_id,
                            }
                        ),
                    )
                    for r, m, c in zip(requests, machine_ids, client_ids, strict=True)
                ],
            )
            return [
                EnrollOutcome(r.agent_id, m, c, False)
                for r, m, c in zip(requests, machine_ids, client_ids, strict=True)
            ]

        return await self._write(run)

    @staticmethod
    def _close_presence_if_gap(
        conn: sqlite3.Connection, machine_id: str, seen_us: int, last_seen_us: int, gap_us: int
    ) -> None:
        """Enrollment of known hardware counts as a heartbeat: it may end a run of presence."""
        if seen_us - last_seen_us > gap_us:
            conn.execute(
                "INSERT OR REPLACE INTO presence (machine_id, start_at, end_at) "
                "SELECT machine_id, presence_start, last_seen FROM machines WHERE machine_id = ?",
                (machine_id,),
            )
            conn.execute(
                "UPDATE machines SET presence_start = ? WHERE machine_id = ?",
                (seen_us, machine_id),
            )

    @staticmethod
    def _revoke_agents(conn: sqlite3.Connection, machine_id: str, now_us: int) -> None:
        """Revoke every live agent token of a machine and publish it to every collector instance."""
        conn.execute(
            "INSERT INTO revocations (token_hash) SELECT token_hash FROM agents "
            "WHERE machine_id = ? AND revoked_at IS NULL",
            (machine_id,),
        )
        conn.execute(
            "UPDATE agents SET revoked_at = ? WHERE machine_id = ? AND revoked_at IS NULL",
            (now_us, machine_id),
        )

    async def revocations_since(self, seq: int) -> tuple[list[str], int]:
        def run(conn: sqlite3.Connection) -> tuple[list[str], int]:
            if seq < 0:
                top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM revocations").fetchone()
                return [], int(top[0])
            rows = conn.execute(
                "SELECT seq, token_hash FROM revocations WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
            return [r[1] for r in rows], int(rows[-1][0]) if rows else seq

        return await self._read(run)

    async def find_agent(self, token_hash: str) -> AgentIdentity | None:
        def run(conn: sqlite3.Connection) -> AgentIdentity | None:
            row = conn.execute(
                "SELECT a.agent_id, a.machine_id, m.client_id FROM agents a "
                "JOIN machines m ON m.machine_id = a.machine_id "
                "WHERE a.token_hash = ? AND a.revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
            return None if row is None else AgentIdentity(row[0], row[1], row[2])

        return await self._read(run)

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None:
        if not batch:
            return
        gap_us = int(gap_s * 1_000_000)

        def run(conn: sqlite3.Connection) -> None:
            # Set-based: the batch goes into a scratch table, one join with `machines` works out
            # everything each row needs (its rowid, whether a new run of presence starts, whether
            # its facts changed), and three statements apply that plan without joining again;
            # the machines are updated by rowid. Rows go in as multi-row VALUES, a few thousand
            # parameters bound in one call, so the writer thread takes the GIL a handful of
            # times per flush rather than once per row (the busy event loop holds it otherwise).
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS heartbeat_batch (machine_id TEXT PRIMARY KEY, "
                "first_at INTEGER, last_at INTEGER, hostname TEXT, os TEXT, kind TEXT, "
                "components TEXT)"
            )
            conn.execute(
                # No key on rid: the update then walks the plan and finds each machine by
                # rowid, rather than scanning `machines` for rows in the plan.
                "CREATE TEMP TABLE IF NOT EXISTS heartbeat_plan (rid INTEGER, "
                "machine_id TEXT, presence_start INTEGER, last_seen INTEGER, first_at INTEGER, "
                "last_at INTEGER, hostname TEXT, os TEXT, kind TEXT, components TEXT, "
                "new_run INTEGER, newest INTEGER, changed INTEGER)"
            )
            # Seven parameters a row, within what this SQLite build binds in one statement.
            rows = min(_FLUSH_CHUNK, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 7)
            for start in range(0, len(batch), rows):
                chunk = batch[start : start + rows]
                values = [
                    value
                    for r in chunk
                    for value in (
                        r.machine_id,
                        _us(r.first_at),
                        _us(r.last_at),
                        r.hostname,
                        r.os,
                        r.kind,
                        r.components_json,
                    )
                ]
                conn.execute(
                    "INSERT OR REPLACE INTO temp.heartbeat_batch VALUES "
                    + ",".join(["(?,?,?,?,?,?,?)"] * len(chunk)),
                    values,
                )
            conn.execute(
                "INSERT INTO temp.heartbeat_plan SELECT m.rowid, m.machine_id, m.presence_start, "
                "m.last_seen, b.first_at, b.last_at, COALESCE(b.hostname, m.hostname), "
                "COALESCE(b.os, m.os), COALESCE(b.kind, m.kind), b.components, "
                # A gap longer than the online window ends the current run of presence.
                "b.first_at - m.last_seen > ?, b.last_at >= m.last_seen, "
                # Facts change only from a heartbeat newer than the row (an enrollment may have
                # written newer facts since the heartbeat was received).
                f"b.last_at >= m.last_seen AND ({_FACTS_CHANGED.format(m='m')}) "
                "FROM temp.heartbeat_batch b JOIN machines m ON m.machine_id = b.machine_id",
                (gap_us,),
            )
            conn.execute(
                "INSERT OR REPLACE INTO presence (machine_id, start_at, end_at) "
                "SELECT machine_id, presence_start, last_seen FROM temp.heartbeat_plan "
                "WHERE new_run"
            )
            conn.execute(
                "INSERT OR REPLACE INTO facts (machine_id, valid_from, hostname, os, kind, "
                "components) SELECT machine_id, last_at, hostname, os, kind, components "
                "FROM temp.heartbeat_plan WHERE changed"
            )
            conn.execute(
                "UPDATE machines SET "
                "presence_start = CASE WHEN p.new_run THEN p.first_at "
                "ELSE machines.presence_start END, "
                "last_seen = MAX(machines.last_seen, p.last_at), "
                "hostname = CASE WHEN p.newest THEN p.hostname ELSE machines.hostname END, "
                "os = CASE WHEN p.newest THEN p.os ELSE machines.os END, "
                "kind = CASE WHEN p.newest THEN p.kind ELSE machines.kind END, "
                "components = CASE WHEN p.newest THEN p.components "
                "ELSE machines.components END, "
                "facts_since = CASE WHEN p.changed THEN p.last_at ELSE machines.facts_since END "
                "FROM temp.heartbeat_plan p WHERE machines.rowid = p.rid"
            )
            conn.execute("DELETE FROM temp.heartbeat_batch")
            conn.execute("DELETE FROM temp.heartbeat_plan")

        await self._write(run)

    async def record_events(
        self, identity: AgentIdentity, events: Sequence[AgentEvent], *, now: datetime
    ) -> int:
        now_us = _us(now)

        def run(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO agent_events (machine_id, event_id, agent_id, at, "
                "received_at, type, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        identity.machine_id,
                        e.event_id,
                        identity.agent_id,
                        _us(e.at),
                        now_us,
                        e.type,
                        e.detail_json,
                    )
                    for e in events
                ],
            )
            return conn.total_changes - before

        return await self._write(run)

    async def list_events(self, machine_id: str, *, limit: int) -> list[AgentEvent]:
        def run(conn: sqlite3.Connection) -> list[AgentEvent]:
            rows = conn.execute(
                "SELECT event_id, at, type, detail FROM agent_events WHERE machine_id = ? "
                "ORDER BY at DESC, event_id LIMIT ?",
                (machine_id, limit),
            ).fetchall()
            return [AgentEvent(r[0], from_micros(r[1]), r[2], r[3]) for r in rows]

        return await self._read(run)

    # machines and inventory

    _MACHINE_COLUMNS = (
        "machine_id, client_id, hardware_id, hostname, os, kind, first_seen, last_seen, "
        "components, offboard_state, offboarded_at, agent_id"
    )

    @staticmethod
    def _machine(r: sqlite3.Row | tuple[Any, ...]) -> MachineRecord:
        return MachineRecord(
            machine_id=r[0],
            client_id=r[1],
            hardware_id=r[2],
            hostname=r[3],
            os=r[4],
            kind=r[5],
            first_seen=from_micros(r[6]),
            last_seen=from_micros(r[7]),
            components_json=r[8],
            offboard_state=cast(OffboardState | None, r[9]),
            offboarded_at=_opt_dt(r[10]),
            agent_id=r[11],
        )

    async def get_machine(self, machine_id: str) -> MachineRecord | None:
        def run(conn: sqlite3.Connection) -> MachineRecord | None:
            row = conn.execute(
                f"SELECT {self._MACHINE_COLUMNS} FROM machines WHERE machine_id = ?",
                (machine_id,),
            ).fetchone()
            return None if row is None else self._machine(row)

        return await self._read(run)

    @staticmethod
    def _state_condition(state: MachineState, windows: StateWindows) -> tuple[str, list[Any]]:
        online_us, expired_us = _us(windows.online_since), _us(windows.expired_before)
        if state in ("offboard_pending", "offboarded", "offboard_failed"):
            return "offboard_state = ?", [state]
        if state == "expired":
            return "offboard_state IS NULL AND last_seen <= ?", [expired_us]
        if state == "online":
            return "offboard_state IS NULL AND last_seen >= ?", [online_us]
        return "offboard_state IS NULL AND last_seen < ? AND last_seen > ?", [online_us, expired_us]

    def _machine_conditions(
        self,
        client_id: str | None,
        kind: str | None,
        hostname_contains: str | None,
        state: MachineState | None,
        windows: StateWindows,
    ) -> tuple[list[str], list[Any]]:
        """The filters the API's machine list and the web pages share."""
        conditions: list[str] = []
        params: list[Any] = []
        if client_id is not None:
            conditions.append("client_id = ?")
            params.append(client_id)
        if kind is not None:
            conditions.append("kind = ?")
            params.append(kind)
        if hostname_contains:
            conditions.append("instr(lower(hostname), lower(?)) > 0")
            params.append(hostname_contains)
        if state is not None:
            condition, extra = self._state_condition(state, windows)
            conditions.append(condition)
            params.extend(extra)
        return conditions, params

    async def list_machines(
        self, machine_filter: MachineFilter, windows: StateWindows
    ) -> list[MachineRecord]:
        f = machine_filter
        conditions, params = self._machine_conditions(
            f.client_id, f.kind, f.hostname_contains, f.state, windows
        )
        if f.after_machine_id is not None:
            conditions.append("machine_id > ?")
            params.append(f.after_machine_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {self._MACHINE_COLUMNS} FROM machines {where} ORDER BY machine_id LIMIT ?"
        params.append(f.limit)

        def run(conn: sqlite3.Connection) -> list[MachineRecord]:
            return [self._machine(r) for r in conn.execute(sql, params).fetchall()]

        return await self._read(run)

    async def count_machines_by_state(self, windows: StateWindows) -> dict[MachineState, int]:
        def run(conn: sqlite3.Connection) -> dict[MachineState, int]:
            rows = conn.execute(
                "SELECT CASE WHEN offboard_state IS NOT NULL THEN offboard_state "
                "WHEN last_seen <= ? THEN 'expired' WHEN last_seen >= ? THEN 'online' "
                "ELSE 'offline' END AS state, COUNT(*) FROM machines GROUP BY state",
                (_us(windows.expired_before), _us(windows.online_since)),
            ).fetchall()
            counts: dict[MachineState, int] = dict.fromkeys(MACHINE_STATES, 0)
            for state, count in rows:
                counts[cast(MachineState, state)] = count
            return counts

        return await self._read(run)

    # Fast path, as in the PostgreSQL store: the machine row holds the current coverage period
    # (from `first_seen`), the current run of presence (from `presence_start`) and the facts in
    # force since `facts_since`. When each began before `as_of`, the row answers; only the rest
    # look back into `coverage`, `presence` or `facts` (CASE evaluates just the branch taken).
    # Rows come in storage (rowid) order: one sequential pass over the table, where the
    # machine_id index would visit it at random.
    _INVENTORY_ROWS_SQL = """
        SELECT m.rowid AS position, m.machine_id, m.client_id, m.hostname, m.kind, m.components,
            m.facts_since,
            CASE WHEN m.first_seen < :as_of THEN m.first_seen
                 ELSE (SELECT MAX(c.first_seen) FROM coverage c WHERE c.machine_id = m.machine_id
                       AND c.first_seen < :as_of) END AS first_seen,
            CASE WHEN m.presence_start <= :as_of THEN MIN(m.last_seen, :as_of)
                 ELSE (SELECT MIN(p.end_at, :as_of) FROM presence p
                       WHERE p.machine_id = m.machine_id AND p.start_at <= :as_of
                       ORDER BY p.start_at DESC LIMIT 1) END AS last_seen,
            CASE WHEN m.first_seen < :as_of
                 THEN CASE WHEN m.offboarded_at <= :as_of THEN m.offboarded_at END
                 ELSE (SELECT CASE WHEN c.offboarded_at <= :as_of THEN c.offboarded_at END
                       FROM coverage c WHERE c.machine_id = m.machine_id
                       AND c.first_seen < :as_of ORDER BY c.first_seen DESC LIMIT 1) END
                AS offboarded_at
        FROM machines m
        WHERE m.rowid > :after AND m.rowid <= :upto
          AND (m.first_seen < :as_of OR EXISTS (SELECT 1 FROM coverage c
               WHERE c.machine_id = m.machine_id AND c.first_seen < :as_of))
        ORDER BY m.rowid
        LIMIT :limit
    """

    # One batch of those rows as one string of JSON objects, written by SQLite in a single step
    # of the aggregate, during which the sqlite3 module lets go of the GIL. The facts in force at
    # as_of come from the row, or else from one look-up into `facts` that writes the whole object
    # (a machine with no facts by then yields NULL, which the aggregate skips). COUNT(*) counts
    # the rows read, so a batch shorter than the limit is the last. The text comes back as a BLOB:
    # bytes, ready to send, without decoding it into a str and encoding it again.
    _INVENTORY_JSON_SQL = f"""
        SELECT CAST(group_concat(
                CASE WHEN i.facts_since <= :as_of
                THEN {_inventory_object("i.hostname", "i.kind", "i.components")}
                ELSE (SELECT {_inventory_object("f.hostname", "f.kind", "f.components")}
                      FROM facts f WHERE f.machine_id = i.machine_id AND f.valid_from <= :as_of
                      ORDER BY f.valid_from DESC LIMIT 1) END, ',') AS BLOB),
            MAX(i.position), COUNT(*)
        FROM ({_INVENTORY_ROWS_SQL}) i
    """

    async def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncGenerator[bytes, None]:
        """Two streams, each over half of the table by rowid, on two reader threads: a batch is
        one SQLite step with the GIL let go, so the two use both cores. Each keeps its next
        batch in flight while the caller writes out the current one."""
        as_of_json = msgspec.json.encode(as_of).decode()
        params: dict[str, Any] = {"as_of": _us(as_of), "as_of_json": as_of_json}

        def batch(conn: sqlite3.Connection, after: int, upto: int) -> tuple[int | None, bytes]:
            """The batch after rowid `after`, and the rowid to continue from (None: done)."""
            objects, last, count = conn.execute(
                self._INVENTORY_JSON_SQL,
                {**params, "after": after, "upto": upto, "limit": batch_size},
            ).fetchone()
            return (last if count == batch_size else None), objects or b""

        def fetch(after: int, upto: int) -> asyncio.Future[tuple[int | None, bytes]]:
            return asyncio.ensure_future(self._read(lambda conn: batch(conn, after, upto)))

        low, high = await self._read(
            lambda conn: conn.execute("SELECT MIN(rowid) - 1, MAX(rowid) FROM machines").fetchone()
        )
        if high is None:
            return
        middle = (low + high) // 2
        ahead = {fetch(low, middle): middle, fetch(middle, high): high}
        try:
            while ahead:
                done, _ = await asyncio.wait(ahead, return_when=asyncio.FIRST_COMPLETED)
                for fetched in done:
                    upto = ahead.pop(fetched)
                    resume, chunk = fetched.result()
                    if resume is not None:
                        ahead[fetch(resume, upto)] = upto
                    if chunk:
                        yield chunk
        finally:
            for fetching in ahead:
                fetching.cancel()
            for fetching in ahead:
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching

    def iter_inventory(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncIterator[list[InventoryRecord]]:
        return records_from_json(self.iter_inventory_json(as_of, batch_size=batch_size))

    async def expire_machines(self, windows: StateWindows) -> list[str]:
        now = windows.now
        expired_us = _us(windows.expired_before)

        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "UPDATE machines SET expired_at = last_seen + ? "
                "WHERE last_seen <= ? "
                "AND (offboard_state IS NULL OR offboard_state != 'offboarded') "
                "AND (expired_at IS NULL OR expired_at <= last_seen) "
                "RETURNING machine_id, client_id, hostname, last_seen, offboard_state",
                (_EXPIRY_US, expired_us),
            ).fetchall()
            for machine_id, client_id, hostname, last_seen, offboard_state in rows:
                self._audit(
                    conn,
                    AuditEntry(
                        now,
                        "system",
                        "machine.expired",
                        machine_id,
                        {
                            "client_id": client_id,
                            "hostname": hostname,
                            "last_seen": format_instant(from_micros(last_seen)),
                            "expired_at": format_instant(from_micros(last_seen + _EXPIRY_US)),
                            "offboard_state": offboard_state,
                        },
                    ),
                )
            return [r[0] for r in rows]

        return await self._write(run)

    # remote commands (offboarding)

    _COMMAND_COLUMNS = (
        "command_id, type, machine_id, client_id, agent_id, sequence, state, issuer, reason, "
        "ticket, created_at, delivered_at, delivery_count, completed_at, result_status, "
        "result_reason, steps, rejections"
    )

    @staticmethod
    def _command(r: tuple[Any, ...]) -> CommandRecord:
        return CommandRecord(
            command_id=r[0],
            type=r[1],
            machine_id=r[2],
            client_id=r[3],
            agent_id=r[4],
            sequence=r[5],
            state=cast(CommandState, r[6]),
            issuer=r[7],
            reason=r[8],
            ticket=r[9],
            created_at=from_micros(r[10]),
            delivered_at=_opt_dt(r[11]),
            delivery_count=r[12],
            completed_at=_opt_dt(r[13]),
            result_status=r[14],
            result_reason=r[15],
            steps_json=r[16],
            rejections=r[17],
        )

    def _command_by_id(self, conn: sqlite3.Connection, command_id: str) -> CommandRecord | None:
        row = conn.execute(
            f"SELECT {self._COMMAND_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)
        ).fetchone()
        return None if row is None else self._command(row)

    @staticmethod
    def _next_sequence(conn: sqlite3.Connection, agent_id: str) -> int:
        """Sequence numbers are per agent and only grow."""
        row = conn.execute(
            "UPDATE agents SET command_seq = command_seq + 1 WHERE agent_id = ? "
            "RETURNING command_seq",
            (agent_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no agent {agent_id!r}")
        return int(row[0])

    async def request_offboard(
        self, request: OffboardRequestRecord, *, now: datetime
    ) -> tuple[CommandRecord, bool]:
        def run(conn: sqlite3.Connection) -> tuple[CommandRecord, bool]:
            machine = conn.execute(
                "SELECT client_id, agent_id, offboard_state, hostname FROM machines "
                "WHERE machine_id = ?",
                (request.machine_id,),
            ).fetchone()
            if machine is None:
                raise NotFound("no machine has that id")
            client_id, agent_id, offboard_state, hostname = machine
            if offboard_state == "offboarded":
                raise Conflict("the machine is already offboarded")
            pending = conn.execute(
                f"SELECT {self._COMMAND_COLUMNS} FROM commands WHERE machine_id = ? "
                "AND state = 'offboard_pending' ORDER BY created_at DESC LIMIT 1",
                (request.machine_id,),
            ).fetchone()
            if pending is not None:
                return self._command(pending), False
            command_id = str(uuid.uuid4())
            sequence = self._next_sequence(conn, agent_id)
            conn.execute(
                "INSERT INTO commands (command_id, type, machine_id, client_id, agent_id, "
                "sequence, state, issuer, reason, ticket, created_at) "
                "VALUES (?, 'offboard', ?, ?, ?, ?, 'offboard_pending', ?, ?, ?, ?)",
                (
                    command_id,
                    request.machine_id,
                    client_id,
                    agent_id,
                    sequence,
                    request.issuer,
                    request.reason,
                    request.ticket,
                    _us(now),
                ),
            )
            conn.execute(
                "UPDATE machines SET offboard_state = 'offboard_pending' WHERE machine_id = ?",
                (request.machine_id,),
            )
            self._audit(
                conn,
                AuditEntry(
                    now,
                    request.issuer,
                    "offboard.requested",
                    request.machine_id,
                    {
                        "command_id": command_id,
                        "reason": request.reason,
                        "ticket": request.ticket,
                        "client_id": client_id,
                        "hostname": hostname,
                    },
                ),
            )
            command = self._command_by_id(conn, command_id)
            assert command is not None
            return command, True

        return await self._write(run)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        return await self._read(lambda conn: self._command_by_id(conn, command_id))

    async def list_commands(self, command_filter: CommandFilter) -> list[CommandRecord]:
        conditions: list[str] = []
        params: list[Any] = []
        f = command_filter
        if f.state is not None:
            conditions.append("state = ?")
            params.append(f.state)
        if f.machine_id is not None:
            conditions.append("machine_id = ?")
            params.append(f.machine_id)
        if f.after_command_id is not None:
            conditions.append("command_id > ?")
            params.append(f.after_command_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {self._COMMAND_COLUMNS} FROM commands {where} ORDER BY command_id LIMIT ?"
        params.append(f.limit)

        def run(conn: sqlite3.Connection) -> list[CommandRecord]:
            return [self._command(r) for r in conn.execute(sql, params).fetchall()]

        return await self._read(run)

    async def machines_with_open_commands(self) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT DISTINCT machine_id FROM commands WHERE state = 'offboard_pending'"
            ).fetchall()
            return {r[0] for r in rows}

        return await self._read(run)

    async def commands_for_delivery(
        self, identity: AgentIdentity, *, now: datetime
    ) -> list[CommandRecord]:
        now_us = _us(now)

        def run(conn: sqlite3.Connection) -> list[CommandRecord]:
            rows = conn.execute(
                f"SELECT {self._COMMAND_COLUMNS} FROM commands WHERE machine_id = ? "
                "AND state = 'offboard_pending' ORDER BY sequence",
                (identity.machine_id,),
            ).fetchall()
            delivered = []
            for row in rows:
                command = self._command(row)
                if command.agent_id != identity.agent_id:
                    # The machine was enrolled again: the command now goes to its new agent,
                    # under that agent's own sequence.
                    conn.execute(
                        "UPDATE commands SET agent_id = ?, sequence = ? WHERE command_id = ?",
                        (
                            identity.agent_id,
                            self._next_sequence(conn, identity.agent_id),
                            command.command_id,
                        ),
                    )
                conn.execute(
                    "UPDATE commands SET delivery_count = delivery_count + 1, "
                    "delivered_at = COALESCE(delivered_at, ?) WHERE command_id = ?",
                    (now_us, command.command_id),
                )
                if command.delivery_count == 0:
                    self._audit(
                        conn,
                        AuditEntry(
                            now,
                            "system",
                            "command.delivered",
                            command.machine_id,
                            {"command_id": command.command_id, "agent_id": identity.agent_id},
                        ),
                    )
                refreshed = self._command_by_id(conn, command.command_id)
                assert refreshed is not None
                delivered.append(refreshed)
            return delivered

        return await self._write(run)

    async def record_command_result(
        self, identity: AgentIdentity, result: CommandResultRecord, *, now: datetime
    ) -> CommandRecord:
        now_us = _us(now)

        def run(conn: sqlite3.Connection) -> CommandRecord:
            command = self._command_by_id(conn, result.command_id)
            if command is None:
                raise NotFound("no command has that id")
            if command.agent_id != identity.agent_id or command.machine_id != identity.machine_id:
                raise NotOwner("the command belongs to another agent")
            detail: dict[str, Any] = {
                "command_id": command.command_id,
                "status": result.status,
                "reason": result.reason,
            }
            if result.status == "rejected":
                # A refusal is a security event; it never ends the command, so a forged
                # command cannot cancel the genuine one with the same id.
                conn.execute(
                    "UPDATE commands SET rejections = rejections + 1 WHERE command_id = ?",
                    (command.command_id,),
                )
                self._audit(
                    conn,
                    AuditEntry(
                        now, identity.agent_id, "command.rejected", command.machine_id, detail
                    ),
                )
            elif command.state == "offboarded":
                pass  # a repeated final report: already recorded
            elif result.status == "succeeded":
                conn.execute(
                    "UPDATE commands SET state = 'offboarded', completed_at = ?, "
                    "result_status = ?, result_reason = ?, steps = ? WHERE command_id = ?",
                    (now_us, result.status, result.reason, result.steps_json, command.command_id),
                )
                conn.execute(
                    "UPDATE machines SET offboard_state = 'offboarded', offboarded_at = ? "
                    "WHERE machine_id = ?",
                    (now_us, command.machine_id),
                )
                conn.execute(
                    "UPDATE coverage SET offboarded_at = ? WHERE machine_id = ? AND first_seen = "
                    "(SELECT first_seen FROM machines WHERE machine_id = ?)",
                    (now_us, command.machine_id, command.machine_id),
                )
                # The final report is in: the agent's token has done its last job.
                self._revoke_agents(conn, command.machine_id, now_us)
                self._audit(
                    conn,
                    AuditEntry(
                        now, identity.agent_id, "offboard.completed", command.machine_id, detail
                    ),
                )
            else:
                conn.execute(
                    "UPDATE commands SET state = 'offboard_failed', completed_at = ?, "
                    "result_status = ?, result_reason = ?, steps = ? WHERE command_id = ?",
                    (now_us, result.status, result.reason, result.steps_json, command.command_id),
                )
                conn.execute(
                    "UPDATE machines SET offboard_state = 'offboard_failed' "
                    "WHERE machine_id = ? AND offboard_state = 'offboard_pending'",
                    (command.machine_id,),
                )
                failed = [s for s in json.loads(result.steps_json) if s.get("status") != "ok"]
                self._audit(
                    conn,
                    AuditEntry(
                        now,
                        identity.agent_id,
                        "offboard.failed",
                        command.machine_id,
                        {**detail, "failed_steps": failed},
                    ),
                )
            refreshed = self._command_by_id(conn, command.command_id)
            assert refreshed is not None
            return refreshed

        try:
            return await self._write(run)
        except NotOwner:
            await self.add_audit(
                AuditEntry(
                    now,
                    identity.agent_id,
                    "command.result_refused",
                    result.command_id,
                    {
                        "reason": "the command belongs to another agent",
                        "machine_id": identity.machine_id,
                        "status": result.status,
                    },
                )
            )
            raise

    async def licence_exposure(
        self, windows: StateWindows, *, pending_before: datetime
    ) -> tuple[list[ExposureRow], list[ExposureRow]]:
        def run(conn: sqlite3.Connection) -> tuple[list[ExposureRow], list[ExposureRow]]:
            expired = conn.execute(
                "SELECT m.machine_id, m.client_id, m.hostname, m.kind, m.last_seen, "
                "m.offboard_state, c.command_id, c.created_at FROM machines m "
                "LEFT JOIN commands c ON c.machine_id = m.machine_id "
                "AND c.state = 'offboard_pending' "
                "WHERE m.last_seen <= ? AND (m.offboard_state IS NULL "
                "OR m.offboard_state != 'offboarded') ORDER BY m.client_id, m.last_seen",
                (_us(windows.expired_before),),
            ).fetchall()
            pending = conn.execute(
                "SELECT m.machine_id, m.client_id, m.hostname, m.kind, m.last_seen, "
                "m.offboard_state, c.command_id, c.created_at FROM commands c "
                "JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_pending' AND c.created_at <= ? "
                "ORDER BY c.created_at",
                (_us(pending_before),),
            ).fetchall()

            def row(r: tuple[Any, ...]) -> ExposureRow:
                return ExposureRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    from_micros(r[4]),
                    cast(OffboardState | None, r[5]),
                    r[6],
                    _opt_dt(r[7]),
                )

            return [row(r) for r in expired], [row(r) for r in pending]

        return await self._read(run)

    # audit

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._write(lambda conn: self._audit(conn, entry))

    async def list_audit(self, audit_filter: AuditFilter) -> list[tuple[int, AuditEntry]]:
        conditions: list[str] = []
        params: list[Any] = []
        f = audit_filter
        for column, value in (("actor", f.actor), ("action", f.action), ("target", f.target)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if f.since is not None:
            conditions.append("at >= ?")
            params.append(_us(f.since))
        if f.before_id is not None:
            conditions.append("id < ?")
            params.append(f.before_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT id, at, actor, action, target, detail FROM audit {where} "
            "ORDER BY id DESC LIMIT ?"
        )
        params.append(f.limit)

        def run(conn: sqlite3.Connection) -> list[tuple[int, AuditEntry]]:
            return [
                (r[0], AuditEntry(from_micros(r[1]), r[2], r[3], r[4], json.loads(r[5])))
                for r in conn.execute(sql, params).fetchall()
            ]

        return await self._read(run)

    # aggregates and pages for the web pages

    # Covered: components reported and every required one running. Statuses are only running,
    # stopped or missing, so a list mentioning neither of the other two needs no JSON parsing.
    _COVERED_SQL = (
        "CASE WHEN components = '[]' THEN 0 "
        "WHEN instr(components, 'stopped') = 0 AND instr(components, 'missing') = 0 THEN 1 "
        "WHEN EXISTS (SELECT 1 FROM json_each(components) j "
        "WHERE IFNULL(json_extract(j.value, '$.required'), 1) "
        "AND json_extract(j.value, '$.status') != 'running') THEN 0 ELSE 1 END"
    )

    async def client_overview(
        self, windows: StateWindows, *, stale_before: datetime, pending_before: datetime
    ) -> list[ClientOverview]:
        params = {
            "online": _us(windows.online_since),
            "expired": _us(windows.expired_before),
            "stale": _us(stale_before),
        }
        in_inventory = "IFNULL(offboard_state, '') != 'offboarded' AND last_seen > :expired"
        machines_sql = (
            "SELECT client_id, "
            "SUM(offboard_state IS NULL AND last_seen >= :online), "
            "SUM(offboard_state IS NULL AND last_seen < :online AND last_seen > :expired), "
            "SUM(offboard_state IS NULL AND last_seen <= :expired), "
            "SUM(IFNULL(offboard_state, '') = 'offboard_pending'), "
            "SUM(IFNULL(offboard_state, '') = 'offboard_failed'), "
            "SUM(IFNULL(offboard_state, '') = 'offboarded'), "
            f"SUM({in_inventory}), "
            f"SUM(CASE WHEN {in_inventory} THEN {self._COVERED_SQL} ELSE 0 END), "
            "SUM(offboard_state IS NULL AND last_seen <= :stale AND last_seen > :expired), "
            "SUM(IFNULL(offboard_state, '') != 'offboarded' AND last_seen <= :expired) "
            "FROM machines GROUP BY client_id"
        )
        states: tuple[MachineState, ...] = (
            "online",
            "offline",
            "expired",
            "offboard_pending",
            "offboard_failed",
            "offboarded",
        )

        def run(conn: sqlite3.Connection) -> list[ClientOverview]:
            clients = conn.execute("SELECT client_id, name FROM clients ORDER BY name").fetchall()
            counts = {r[0]: r[1:] for r in conn.execute(machines_sql, params).fetchall()}
            overdue = dict(
                conn.execute(
                    "SELECT client_id, COUNT(*) FROM commands WHERE state = 'offboard_pending' "
                    "AND created_at <= ? GROUP BY client_id",
                    (_us(pending_before),),
                ).fetchall()
            )
            rows = []
            for client_id, name in clients:
                c = counts.get(client_id, (0,) * 10)
                rows.append(
                    ClientOverview(
                        client_id=client_id,
                        name=name,
                        by_state=dict(zip(states, c[:6], strict=True)),
                        in_inventory=c[6],
                        covered=c[7],
                        stale=c[8],
                        exposed=c[9],
                        pending_overdue=overdue.get(client_id, 0),
                    )
                )
            return rows

        return await self._read(run)

    def _component_condition(self, query: MachineQuery) -> tuple[str, list[Any]]:
        status, name = query.component_status, query.component
        if status is None:
            if name is None:
                return "", []
            # a name alone: machines reporting that component at all
            return (
                "EXISTS (SELECT 1 FROM json_each(components) j "
                "WHERE json_extract(j.value, '$.name') = ?)",
                [name],
            )
        if name is None:
            if status == "covered":
                return f"({self._COVERED_SQL}) = 1", []
            if status == "gap":
                return f"({self._COVERED_SQL}) = 0", []
            return (
                "EXISTS (SELECT 1 FROM json_each(components) j "
                "WHERE json_extract(j.value, '$.status') = ?)",
                [status],
            )
        named = "SELECT 1 FROM json_each(components) j WHERE json_extract(j.value, '$.name') = ?"
        if status == "missing":
            return f"NOT EXISTS ({named} AND json_extract(j.value, '$.status') != 'missing')", [
                name
            ]
        if status == "gap":
            return f"NOT EXISTS ({named} AND json_extract(j.value, '$.status') = 'running')", [name]
        wanted = "running" if status == "covered" else status
        return f"EXISTS ({named} AND json_extract(j.value, '$.status') = ?)", [name, wanted]

    async def machine_page(self, query: MachineQuery, windows: StateWindows) -> MachinePage:
        q = query
        conditions, params = self._machine_conditions(
            q.client_id, q.kind, q.hostname_contains, q.state, windows
        )
        if q.seen_before is not None:
            conditions.append("last_seen <= ?")
            params.append(_us(q.seen_before))
        if q.exposed:
            conditions.append("IFNULL(offboard_state, '') != 'offboarded' AND last_seen <= ?")
            params.append(_us(windows.expired_before))
        condition, extra = self._component_condition(q)
        if condition:
            conditions.append(condition)
            params.extend(extra)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        order = (
            "last_seen, machine_id"
            if q.sort == "last_seen"
            else "hostname COLLATE NOCASE, machine_id"
        )
        page_sql = (
            f"SELECT {self._MACHINE_COLUMNS} FROM machines {where} "
            f"ORDER BY {order} LIMIT ? OFFSET ?"
        )

        def run(conn: sqlite3.Connection) -> MachinePage:
            total = conn.execute(f"SELECT COUNT(*) FROM machines {where}", params).fetchone()[0]
            rows = conn.execute(page_sql, [*params, q.limit, q.offset]).fetchall()
            return MachinePage(machines=[self._machine(r) for r in rows], total=int(total))

        return await self._read(run)

    async def presence_history(self, machine_id: str, *, since: datetime) -> PresenceHistory:
        since_us = _us(since)

        def run(conn: sqlite3.Connection) -> PresenceHistory:
            runs = [
                PresenceRun(from_micros(start), from_micros(end))
                for start, end in conn.execute(
                    "SELECT start_at, end_at FROM presence WHERE machine_id = ? AND end_at >= ? "
                    "ORDER BY start_at",
                    (machine_id, since_us),
                ).fetchall()
            ]
            current = conn.execute(
                "SELECT presence_start, last_seen FROM machines WHERE machine_id = ?",
                (machine_id,),
            ).fetchone()
            if current is not None and current[1] >= since_us:
                runs.append(PresenceRun(from_micros(current[0]), from_micros(current[1])))
            coverage = [
                CoveragePeriod(from_micros(first), _opt_dt(offboarded))
                for first, offboarded in conn.execute(
                    "SELECT first_seen, offboarded_at FROM coverage WHERE machine_id = ? "
                    "ORDER BY first_seen",
                    (machine_id,),
                ).fetchall()
            ]
            return PresenceHistory(runs=runs, coverage=coverage)

        return await self._read(run)

    async def offboards_needing_attention(
        self, *, pending_before: datetime, limit: int
    ) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
        columns = ", ".join(f"c.{name.strip()}" for name in self._COMMAND_COLUMNS.split(","))

        def run(
            conn: sqlite3.Connection,
        ) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
            pending = conn.execute(
                f"SELECT {columns}, m.hostname FROM commands c "
                "JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_pending' AND c.created_at <= ? "
                "ORDER BY c.created_at LIMIT ?",
                (_us(pending_before), limit),
            ).fetchall()
            failed = conn.execute(
                f"SELECT {columns}, m.hostname FROM commands c "
                "JOIN machines m ON m.machine_id = c.machine_id "
                "WHERE c.state = 'offboard_failed' AND m.offboard_state = 'offboard_failed' "
                "AND NOT EXISTS (SELECT 1 FROM commands later WHERE later.machine_id = "
                "c.machine_id AND later.created_at > c.created_at) "
                "ORDER BY c.completed_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return (
                [OffboardAttention(self._command(r[:-1]), r[-1]) for r in pending],
                [OffboardAttention(self._command(r[:-1]), r[-1]) for r in failed],
            )

        return await self._read(run)
