"""A large, varied fleet written straight into a SQLite state: for paging and timing the pages.

Enrolling 100,000 machines through the API would take minutes; this writes the same rows the store
writes (clients, machines, coverage periods, facts, closed presence runs, offboard commands) in one
transaction, with every state the pages show represented in realistic shares.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from wire.times import to_micros

COMPONENTS = ("antivirus", "backup", "dns_protection", "rmm")


@dataclass(frozen=True)
class SeededFleet:
    clients: list[tuple[str, str]]
    machines: int


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


def seed_fleet(
    db_path: str, now: datetime, *, machines: int, clients: int, seed: int = 7
) -> SeededFleet:
    """Write `machines` machines spread over `clients` clients into a migrated SQLite state."""
    rng = random.Random(seed)
    us = to_micros
    client_rows = [(str(uuid.uuid4()), f"Client {i:04d}") for i in range(clients)]
    machine_rows = []
    coverage_rows = []
    facts_rows = []
    presence_rows = []
    command_rows = []
    agent_rows = []
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
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO clients (client_id, name, created_at) VALUES (?, ?, ?)",
            [(c, name, us(now - timedelta(days=1000))) for c, name in client_rows],
        )
        conn.executemany(
            "INSERT INTO machines (machine_id, client_id, hardware_id, hostname, os, kind, "
            "components, first_seen, presence_start, last_seen, offboard_state, offboarded_at, "
            "agent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            machine_rows,
        )
        conn.executemany(
            "INSERT INTO agents (agent_id, machine_id, token_hash, created_at) VALUES (?, ?, ?, ?)",
            agent_rows,
        )
        conn.executemany(
            "INSERT INTO coverage (machine_id, first_seen, offboarded_at) VALUES (?, ?, ?)",
            coverage_rows,
        )
        conn.executemany(
            "INSERT INTO facts (machine_id, valid_from, hostname, os, kind, components) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            facts_rows,
        )
        conn.executemany(
            "INSERT INTO presence (machine_id, start_at, end_at) VALUES (?, ?, ?)", presence_rows
        )
        conn.executemany(
            "INSERT INTO commands (command_id, type, machine_id, client_id, agent_id, sequence, "
            "state, issuer, reason, created_at, completed_at) "
            "VALUES (?, 'offboard', ?, ?, ?, 1, ?, 'seed', 'end of contract', ?, ?)",
            command_rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return SeededFleet(clients=client_rows, machines=machines)
