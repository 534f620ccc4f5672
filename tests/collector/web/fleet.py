"""A large, varied fleet written straight into a state (SQLite or PostgreSQL): for paging and
timing the pages.

Enrolling 100,000 machines through the API would take minutes; this writes the same rows the store
writes (clients, machines, coverage periods, facts, closed presence runs, offboard commands) in one
transaction, with every state the pages show represented in realistic shares.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from wire.times import from_micros, to_micros

if TYPE_CHECKING:
    from tests.collector.conftest import StoreLocation

COMPONENTS = ("antivirus", "backup", "dns_protection", "rmm")


@dataclass(frozen=True)
class SeededFleet:
    clients: list[tuple[str, str]]
    machines: int


@dataclass
class FleetRows:
    """The rows of every table, instants in microseconds (the SQLite store's own form)."""

    clients: list[tuple[str, str, int]] = field(default_factory=list)
    machines: list[tuple[Any, ...]] = field(default_factory=list)
    agents: list[tuple[Any, ...]] = field(default_factory=list)
    coverage: list[tuple[Any, ...]] = field(default_factory=list)
    facts: list[tuple[Any, ...]] = field(default_factory=list)
    presence: list[tuple[Any, ...]] = field(default_factory=list)
    commands: list[tuple[Any, ...]] = field(default_factory=list)


def _components(rng: random.Random) -> str:
    items = []
    for name in COMPONENTS:
        status = "running"
        roll = rng.random()
        if roll < 0.03:
            status = "stopped"
        elif roll < 0.05:
            status = "missing"
        items.append(
            {"name": name, "status": status, "version": "1.0", "required": name != "backup"}
        )
    return json.dumps(items, separators=(",", ":"))


def fleet_rows(now: datetime, *, machines: int, clients: int, seed: int = 7) -> FleetRows:
    """`machines` machines spread over `clients` clients, every state the pages show."""
    rng = random.Random(seed)
    us = to_micros
    client_rows = [(str(uuid.uuid4()), f"Client {i:04d}") for i in range(clients)]
    rows = FleetRows(clients=[(c, name, us(now - timedelta(days=1000))) for c, name in client_rows])
    machine_rows = rows.machines
    coverage_rows = rows.coverage
    facts_rows = rows.facts
    presence_rows = rows.presence
    command_rows = rows.commands
    agent_rows = rows.agents
    for i in range(machines):
        machine_id = str(uuid.uuid4())
        agent_id = str(uuid.uuid4())
        client_id = client_rows[i % clients][0]
        roll = rng.random()
        offboard_state = None
        offboarded_at = None
        if roll < 0.80:
            last_seen = now - timedelta(seconds=rng.randint(0, 120))
        elif roll < 0.90:
            last_seen = now - timedelta(hours=rng.randint(1, 29 * 24))
        elif roll < 0.96:
            last_seen = now - timedelta(days=rng.randint(31, 200))
        elif roll < 0.98:
            last_seen = now - timedelta(days=rng.randint(0, 20))
            offboard_state = "offboard_pending"
        elif roll < 0.99:
            last_seen = now - timedelta(hours=rng.randint(0, 48))
            offboard_state = "offboard_failed"
        else:
            last_seen = now - timedelta(days=rng.randint(1, 60))
            offboard_state = "offboarded"
            offboarded_at = last_seen
        first_seen = now - timedelta(days=rng.randint(220, 900))
        presence_start = last_seen - timedelta(days=rng.randint(0, 20))
        presence_start = max(presence_start, first_seen)
        kind = "server" if rng.random() < 0.15 else "pc"
        hostname = f"{'srv' if kind == 'server' else 'pc'}-{i:06d}"
        components = _components(rng)
        machine_rows.append(
            (
                machine_id,
                client_id,
                f"hw-{i}",
                hostname,
                "Windows 11" if kind == "pc" else "Debian 12",
                kind,
                components,
                us(first_seen),
                us(presence_start),
                us(last_seen),
                us(first_seen),  # facts since enrollment
                offboard_state,
                None if offboarded_at is None else us(offboarded_at),
                agent_id,
            )
        )
        agent_rows.append((agent_id, machine_id, uuid.uuid4().hex, us(first_seen)))
        coverage_rows.append(
            (machine_id, us(first_seen), None if offboarded_at is None else us(offboarded_at))
        )
        facts_rows.append((machine_id, us(first_seen), hostname, "os", kind, components))
        end = presence_start - timedelta(days=rng.randint(1, 4))
        for _ in range(2):
            start = end - timedelta(days=rng.randint(1, 30))
            if start <= first_seen:
                break
            presence_rows.append((machine_id, us(start), us(end)))
            end = start - timedelta(days=rng.randint(1, 4))
        if offboard_state is not None:
            created = last_seen - timedelta(days=rng.randint(0, 10))
            command_rows.append(
                (
                    str(uuid.uuid4()),
                    machine_id,
                    client_id,
                    agent_id,
                    offboard_state,
                    us(created),
                    None if offboard_state == "offboard_pending" else us(last_seen),
                )
            )
    return rows


def _seeded(rows: FleetRows, machines: int) -> SeededFleet:
    return SeededFleet(clients=[(c, name) for c, name, _ in rows.clients], machines=machines)


_MACHINE_COLUMNS = (
    "machine_id, client_id, hardware_id, hostname, os, kind, components, first_seen, "
    "presence_start, last_seen, facts_since, offboard_state, offboarded_at, agent_id"
)
_INSERTS = (
    ("clients", "clients (client_id, name, created_at)", 3),
    ("machines", f"machines ({_MACHINE_COLUMNS})", 14),
    ("agents", "agents (agent_id, machine_id, token_hash, created_at)", 4),
    ("coverage", "coverage (machine_id, first_seen, offboarded_at)", 3),
    ("facts", "facts (machine_id, valid_from, hostname, os, kind, components)", 6),
    ("presence", "presence (machine_id, start_at, end_at)", 3),
    (
        "commands",
        "commands (command_id, machine_id, client_id, agent_id, state, created_at, "
        "completed_at, type, sequence, issuer, reason)",
        7,
    ),
)
# Instants are these columns of each table's rows: microseconds to SQLite, datetimes to PostgreSQL.
_INSTANTS = {
    "clients": {2},
    "machines": {7, 8, 9, 10, 12},
    "agents": {3},
    "coverage": {1, 2},
    "facts": {1},
    "presence": {1, 2},
    "commands": {5, 6},
}
_COMMAND_CONSTANTS = ("offboard", 1, "seed", "end of contract")


def _statement(table: str, target: str, count: int, mark: str) -> str:
    marks = [mark.format(i + 1) for i in range(count)]
    if table == "commands":
        marks += [mark.format(count + i + 1) for i in range(len(_COMMAND_CONSTANTS))]
    return f"INSERT INTO {target} VALUES ({', '.join(marks)})"


def _values(table: str, row: tuple[Any, ...], *, as_datetimes: bool) -> tuple[Any, ...]:
    if as_datetimes:
        row = tuple(
            from_micros(v) if i in _INSTANTS[table] and v is not None else v
            for i, v in enumerate(row)
        )
    return row + _COMMAND_CONSTANTS if table == "commands" else row


def seed_sqlite(
    db_path: str, now: datetime, *, machines: int, clients: int, seed: int = 7
) -> SeededFleet:
    """Write the fleet into a migrated SQLite state, in one transaction."""
    rows = fleet_rows(now, machines=machines, clients=clients, seed=seed)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, target, count in _INSERTS:
            conn.executemany(
                _statement(table, target, count, "?"),
                [_values(table, r, as_datetimes=False) for r in getattr(rows, table)],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return _seeded(rows, machines)


async def seed_fleet(
    location: StoreLocation, now: datetime, *, machines: int, clients: int, seed: int = 7
) -> SeededFleet:
    """Write the fleet into the test's state, whichever engine holds it."""
    if location.engine == "sqlite":
        return seed_sqlite(location.db, now, machines=machines, clients=clients, seed=seed)
    rows = fleet_rows(now, machines=machines, clients=clients, seed=seed)
    conn = await asyncpg.connect(location.db)
    try:
        async with conn.transaction():
            for table, target, count in _INSERTS:
                await conn.executemany(
                    _statement(table, target, count, "${}"),
                    [_values(table, r, as_datetimes=True) for r in getattr(rows, table)],
                )
    finally:
        await conn.close()
    return _seeded(rows, machines)
