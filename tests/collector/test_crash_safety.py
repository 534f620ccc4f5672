"""`kill -9` of a real collector: acknowledged enrollments and audit entries survive, and
last-seen lags by at most the flush interval."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from tests.support.processes import collector_cli, free_port, start_collector
from wire.times import from_micros


def post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_kill_9_after_heartbeats_loses_no_enrollment_and_at_most_a_flush_of_last_seen(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "state.sqlite3")
    enrollment = str(collector_cli("client", "add", "Acme", db=db)["enrollment_token"])
    port = free_port()
    env = {"RMM_COLLECTOR_FLUSH_INTERVAL_S": "0.5", "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": "1"}
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
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    with sqlite3.connect(db) as conn:
        machine_id, first_seen, last_seen = conn.execute(
            "SELECT machine_id, first_seen, last_seen FROM machines"
        ).fetchone()
        actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY id")]
    assert machine_id == agent["machine_id"]
    assert "machine.enrolled" in actions
    lag = (acknowledged - from_micros(last_seen)).total_seconds()
    assert lag <= 0.5 + 0.3, f"last-seen lags {lag:.3f} s behind the last acknowledged heartbeat"
    assert from_micros(last_seen) > from_micros(first_seen)

    # The state opens again, and the agent's token still works after the restart.
    proc = start_collector(db, port, env)
    try:
        reply = post(f"{base}/v1/heartbeat", {"components": []}, str(agent["agent_token"]))
        assert reply["commands"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_sigterm_flushes_buffered_heartbeats_before_exit(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    enrollment = str(collector_cli("client", "add", "Acme", db=db)["enrollment_token"])
    port = free_port()
    proc = start_collector(db, port, {"RMM_COLLECTOR_FLUSH_INTERVAL_S": "10"})
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
    time.sleep(0.2)
    post(
        f"{base}/v1/heartbeat",
        {"components": [{"name": "rmm", "status": "running"}]},
        str(agent["agent_token"]),
    )
    acknowledged = datetime.now(UTC)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    with sqlite3.connect(db) as conn:
        (last_seen, components) = conn.execute(
            "SELECT last_seen, components FROM machines"
        ).fetchone()
    assert abs((acknowledged - from_micros(last_seen)).total_seconds()) < 0.2
    assert json.loads(components)[0]["name"] == "rmm"
