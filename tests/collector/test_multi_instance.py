"""Two real `rmm-collector serve` processes on one PostgreSQL, with agents driven through both.

This is the deployment `deploy/collector/multi-instance/` describes: stateless collectors behind
a load balancer that may send any request to any of them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.collector.conftest import PostgresDatabase
from tests.support import postgres as pg
from tests.support.processes import BIN, collector_cli, free_port, start_collector
from wire.times import parse_instant

FLUSH_S = 0.2
REVOCATION_POLL_S = 0.5
COMMAND_POLL_S = 0.3
HEARTBEAT_INTERVAL_S = 3


def call(
    base: str, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(check: Any, timeout: float, step: float = 0.05) -> float:
    """Seconds until `check()` is true; fails the test after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


class Fleet:
    """Two collector processes, a client, an admin and a technician, and a signing key."""

    def __init__(self, db: str, tmp_path: Path) -> None:
        self.env = {
            "RMM_COLLECTOR_KEYS_DIR": str(tmp_path / "keys"),
            "RMM_COLLECTOR_FLUSH_INTERVAL_S": str(FLUSH_S),
            "RMM_COLLECTOR_AUTH_CACHE_S": str(REVOCATION_POLL_S),
            "RMM_COLLECTOR_COMMAND_POLL_S": str(COMMAND_POLL_S),
            "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
        }
        created = collector_cli("client", "add", "Acme", db=db, env=self.env)
        self.enrollment = str(created["enrollment_token"])
        self.admin = str(collector_cli("token", "add", "noc", "--role", "admin", db=db)["token"])
        self.tech = str(
            collector_cli("token", "add", "tina", "--role", "technician", db=db)["token"]
        )
        pin = subprocess.run(
            [str(BIN / "rmm-collector"), "keys", "generate", "--db", db],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.key_id = pin.split(":", 1)[0]
        ports = [free_port(), free_port()]
        self.procs = [
            start_collector(db, port, self.env, log_path=tmp_path / f"collector-{i}.log")
            for i, port in enumerate(ports)
        ]
        self.a, self.b = (f"http://127.0.0.1:{port}" for port in ports)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                assert proc.wait(timeout=10) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()

    def enroll(self, base: str, hardware_id: str, previous: str | None = None) -> dict[str, Any]:
        status, body = call(
            base,
            "POST",
            "/v1/enroll",
            {
                "enrollment_token": self.enrollment,
                "hardware_id": hardware_id,
                "hostname": f"pc-{hardware_id}",
                "os": "Linux",
                "kind": "pc",
                **({"previous_agent_token": previous} if previous else {}),
            },
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    def heartbeat(self, base: str, token: str, **fields: Any) -> tuple[int, Any]:
        body = {"components": [{"name": "rmm", "status": "running"}], **fields}
        return call(base, "POST", "/v1/heartbeat", body, token)

    def machine(self, base: str, machine_id: str) -> dict[str, Any]:
        status, body = call(base, "GET", f"/v1/machines/{machine_id}", token=self.admin)
        assert status == 200, body
        return body  # type: ignore[no-any-return]


@pytest.fixture
def fleet(postgres_database: PostgresDatabase, tmp_path: Path) -> Iterator[Fleet]:
    pg.run_blocking(pg.empty_tables(postgres_database.url, postgres_database.tables))
    running = Fleet(postgres_database.url, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_enrolled_through_one_instance_and_heard_through_the_other(fleet: Fleet) -> None:
    agent = fleet.enroll(fleet.a, "hw-1")
    sent = datetime.now(UTC)
    status, reply = fleet.heartbeat(fleet.b, agent["agent_token"], hostname="renamed")
    assert status == 200 and reply["commands"] == []
    heard = datetime.now(UTC)

    def flushed() -> bool:
        machine = fleet.machine(fleet.a, agent["machine_id"])
        return bool(machine["hostname"] == "renamed")

    wait_for(flushed, timeout=FLUSH_S + 2)
    machine = fleet.machine(fleet.a, agent["machine_id"])
    assert sent <= parse_instant(machine["last_seen"]) <= heard
    assert machine["state"] == "online"


def test_many_agents_alternating_instances_all_have_their_last_heartbeat(fleet: Fleet) -> None:
    bases = (fleet.a, fleet.b)
    agents = [fleet.enroll(bases[i % 2], f"hw-{i:03}") for i in range(30)]
    last: dict[str, tuple[datetime, datetime]] = {}  # sent .. acknowledged, per machine
    for round_ in range(3):
        for i, agent in enumerate(agents):
            sent = datetime.now(UTC)
            status, _ = fleet.heartbeat(bases[(i + round_) % 2], agent["agent_token"])
            assert status == 200
            last[agent["machine_id"]] = (sent, datetime.now(UTC))
    time.sleep(FLUSH_S * 3)
    for base in bases:
        status, listed = call(base, "GET", "/v1/machines", token=fleet.admin)
        assert status == 200
        seen = {m["machine_id"]: parse_instant(m["last_seen"]) for m in listed["machines"]}
        assert set(seen) == set(last)
        for machine_id, (sent, acknowledged) in last.items():
            # the last heartbeat's receive time, not an earlier round's
            assert sent <= seen[machine_id] <= acknowledged
    _, inventory = call(fleet.b, "GET", "/v1/inventory", token=fleet.admin)
    assert len(inventory["machines"]) == 30


def test_a_token_revoked_through_one_instance_stops_working_on_the_other_within_the_poll(
    fleet: Fleet,
) -> None:
    old = fleet.enroll(fleet.a, "hw-1")
    assert fleet.heartbeat(fleet.a, old["agent_token"])[0] == 200  # cached by instance A
    # re-enrolled through B: the old token is revoked
    new = fleet.enroll(fleet.b, "hw-1", previous=old["agent_token"])
    assert new["machine_id"] == old["machine_id"]
    assert fleet.heartbeat(fleet.b, old["agent_token"])[0] == 401  # B revoked it itself
    # The contract: within one heartbeat interval (the poll is set well inside it).
    took = wait_for(lambda: fleet.heartbeat(fleet.a, old["agent_token"])[0] == 401, timeout=10)
    assert took < HEARTBEAT_INTERVAL_S, f"instance A kept the revoked token {took:.2f} s"
    assert fleet.heartbeat(fleet.a, new["agent_token"])[0] == 200


def test_an_offboard_requested_on_one_instance_is_delivered_by_both_and_lands_once(
    fleet: Fleet,
) -> None:
    agent = fleet.enroll(fleet.a, "hw-1")
    token = agent["agent_token"]
    for base in (fleet.a, fleet.b):  # both instances know the agent
        assert fleet.heartbeat(base, token, key_ids=[fleet.key_id])[0] == 200
    status, accepted = call(
        fleet.a,
        "POST",
        f"/v1/machines/{agent['machine_id']}/offboard",
        {"reason": "laptop returned"},
        fleet.tech,
    )
    assert status == 202
    command_id = accepted["command_id"]

    def delivered_by(base: str) -> list[dict[str, Any]]:
        status, reply = fleet.heartbeat(base, token, key_ids=[fleet.key_id])
        assert status == 200
        return reply["commands"]  # type: ignore[no-any-return]

    from_b: list[dict[str, Any]] = []

    def b_delivers() -> bool:
        # B learns of the request made through A from the database, within its poll.
        from_b[:] = delivered_by(fleet.b)
        return bool(from_b)

    wait_for(b_delivers, timeout=COMMAND_POLL_S + 3)
    from_a = delivered_by(fleet.a)
    assert [c["command_id"] for c in from_a] == [from_b[0]["command_id"]] == [command_id]
    sequences = {json.loads(base64.b64decode(c["payload"]))["sequence"] for c in from_a + from_b}
    assert len(sequences) == 1

    result = {"status": "succeeded", "steps": []}
    with ThreadPoolExecutor(max_workers=2) as pool:
        replies = list(
            pool.map(
                lambda base: call(base, "POST", f"/v1/commands/{command_id}/result", result, token),
                (fleet.a, fleet.b),
            )
        )
    assert any(status == 200 for status, _ in replies), replies
    for base in (fleet.a, fleet.b):
        status, command = call(base, "GET", f"/v1/commands/{command_id}", token=fleet.admin)
        assert status == 200 and command["state"] == "offboarded"
    _, audit = call(fleet.b, "GET", "/v1/audit?action=offboard.completed", token=fleet.admin)
    assert len(audit["entries"]) == 1
    _, delivered = call(fleet.b, "GET", "/v1/audit?action=command.delivered", token=fleet.admin)
    assert len(delivered["entries"]) == 1
