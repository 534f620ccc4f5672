"""`kill -9` of a real collector: acknowledged enrollments and audit entries survive, and
last-seen lags by at most the flush interval; on both engines."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from collector.store import open_store
from collector.store.base import AuditFilter, MachineRecord
from tests.collector.conftest import StoreLocation
from tests.support.processes import collector_cli, free_port, start_collector


def post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def stored(db: str, machine_id: str) -> tuple[MachineRecord, list[str]]:
    """The machine and the audit log's actions, read back through the store."""
    store = await open_store(db)
    try:
        machine = await store.get_machine(machine_id)
        entries = await store.list_audit(AuditFilter())
    finally:
        await store.close()
    assert machine is not None
    return machine, [entry.action for _, entry in entries]


def keys_env(tmp_path: Path) -> dict[str, str]:
    return {"RMM_COLLECTOR_KEYS_DIR": str(tmp_path / "keys")}


async def test_kill_9_after_heartbeats_loses_no_enrollment_and_at_most_a_flush_of_last_seen(
    store_location: StoreLocation, tmp_path: Path
) -> None:
    db = store_location.db
    enrollment = str(
        collector_cli("client", "add", "Acme", db=db, env=keys_env(tmp_path))["enrollment_token"]
    )
    port = free_port()
    env = {
        "RMM_COLLECTOR_FLUSH_INTERVAL_S": "0.5",
        "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": "1",
        **keys_env(tmp_path),
    }
    proc = start_collector(db, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        agent = post(
            f"{base}/v1/enroll",
            {
                "enrollment_token": enrollment,
                "hardware_id": "hw-1",
                "hostname": "pc-1",
                "os": "Linux",
                "kind": "pc",
            },
        )
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            post(f"{base}/v1/heartbeat", {"components": []}, str(agent["agent_token"]))
            acknowledged = datetime.now(UTC)
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    machine, actions = await stored(db, str(agent["machine_id"]))
    assert "machine.enrolled" in actions
    lag = (acknowledged - machine.last_seen).total_seconds()
    assert lag <= 0.5 + 0.3, f"last-seen lags {lag:.3f} s behind the last acknowledged heartbeat"
    assert machine.last_seen > machine.first_seen

    # The state opens again, and the agent's token still works after the restart.
    proc = start_collector(db, port, env)
    try:
        reply = post(f"{base}/v1/heartbeat", {"components": []}, str(agent["agent_token"]))
        assert reply["commands"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


async def test_sigterm_flushes_buffered_heartbeats_before_exit(
    store_location: StoreLocation, tmp_path: Path
) -> None:
    db = store_location.db
    enrollment = str(
        collector_cli("client", "add", "Acme", db=db, env=keys_env(tmp_path))["enrollment_token"]
    )
    port = free_port()
    proc = start_collector(db, port, {"RMM_COLLECTOR_FLUSH_INTERVAL_S": "10", **keys_env(tmp_path)})
    base = f"http://127.0.0.1:{port}"
    agent = post(
        f"{base}/v1/enroll",
        {
            "enrollment_token": enrollment,
            "hardware_id": "hw-1",
            "hostname": "pc-1",
            "os": "Linux",
            "kind": "pc",
        },
    )
    await asyncio.sleep(0.2)
    post(
        f"{base}/v1/heartbeat",
        {"components": [{"name": "rmm", "status": "running"}]},
        str(agent["agent_token"]),
    )
    acknowledged = datetime.now(UTC)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    machine, _ = await stored(db, str(agent["machine_id"]))
    assert abs((acknowledged - machine.last_seen).total_seconds()) < 0.2
    assert json.loads(machine.components_json)[0]["name"] == "rmm"
