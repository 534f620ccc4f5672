"""`rmm-fleetsim` against real collector processes: enroll, seed, heartbeat, offboard, check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetsim.load import Acknowledged
from fleetsim.people import find_lost
from tests.collector.conftest import PostgresDatabase
from tests.support import postgres as pg
from tests.support.processes import BIN, collector_cli, free_port, start_collector

FAST = {
    "RMM_COLLECTOR_FLUSH_INTERVAL_S": "0.2",
    "RMM_COLLECTOR_COMMAND_POLL_S": "0.2",
    "RMM_COLLECTOR_AUTH_CACHE_S": "0.5",
}


def fleetsim(*args: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "rmm-fleetsim"), *args, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=10) == 0


def test_agents_enrolled_over_http_heartbeat_and_answer_offboards_with_nothing_lost(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "state.sqlite3")
    env = {**FAST, "RMM_COLLECTOR_KEYS_DIR": str(tmp_path / "keys")}
    enrollment = str(collector_cli("client", "add", "Acme", db=db)["enrollment_token"])
    admin = str(collector_cli("token", "add", "sim", "--role", "admin", db=db)["token"])
    pin = subprocess.run(
        [str(BIN / "rmm-collector"), "keys", "generate", "--db", db],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    collector = start_collector(db, port, env)
    base = f"http://127.0.0.1:{port}"
    agents = tmp_path / "agents.jsonl"
    try:
        status, enrolled = fleetsim(
            "enroll",
            "--collector",
            base,
            "--count",
            "40",
            "--agents",
            str(agents),
            env={"RMM_FLEETSIM_ENROLLMENT_TOKEN": enrollment},
        )
        assert status == 0 and enrolled["enrolled"] == 40
        assert oct(agents.stat().st_mode & 0o777) == "0o600"
        status, run = fleetsim(
            "run",
            "--collector",
            base,
            "--agents",
            str(agents),
            "--rate",
            "100",
            "--duration",
            "2",
            "--offboard",
            "3",
            "--command-key",
            pin,
            "--settle",
            "1",
            env={"RMM_FLEETSIM_API_TOKEN": admin},
        )
    finally:
        stop(collector)
    assert status == 0, run
    assert run["errors"] == {}
    assert run["heartbeats_ok"] >= 150
    assert run["offboards"] == {"requested": 3, "offboarded": 3}
    assert run["commands"]["verified"] == 3 and run["commands"]["refused"] == 0
    assert run["loss_check"]["lost"] == 0
    assert run["loss_check"]["agents_checked"] == 40


def test_a_seeded_fleet_heartbeats_through_two_instances_on_postgres_with_nothing_lost(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    pg.run_blocking(pg.empty_tables(postgres_database.url, postgres_database.tables))
    db = postgres_database.url
    agents = tmp_path / "agents.jsonl"
    status, seeded = fleetsim(
        "seed", "--db", db, "--count", "2000", "--agents", str(agents), env={}
    )
    assert status == 0 and seeded["enrolled"] == 2000
    viewer = str(collector_cli("token", "add", "noc", "--role", "viewer", db=db)["token"])
    ports = [free_port(), free_port()]
    collectors = [start_collector(db, port, FAST) for port in ports]
    try:
        status, run = fleetsim(
            "run",
            *[arg for port in ports for arg in ("--collector", f"http://127.0.0.1:{port}")],
            "--agents",
            str(agents),
            "--rate",
            "1000",
            "--duration",
            "2",
            "--change-share",
            "0.1",
            "--settle",
            "1",
            env={"RMM_FLEETSIM_API_TOKEN": viewer},
        )
    finally:
        stop(*collectors)
    assert status == 0, run
    assert run["errors"] == {}
    assert run["loss_check"] == {"agents_checked": 2000, "lost": 0, "lost_sample": []}


def test_a_heartbeat_the_collector_does_not_show_is_reported_lost() -> None:
    sent = datetime(2026, 3, 2, 9, 0, 1, tzinfo=UTC).timestamp()
    acknowledged = {"kept": Acknowledged(sent, sent + 0.01), "lost": Acknowledged(sent, sent)}
    seen = {
        "kept": datetime(2026, 3, 2, 9, 0, 1, 5000, tzinfo=UTC),
        "lost": datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC),  # an earlier heartbeat's time
    }
    report = find_lost(acknowledged, seen)
    assert (report.checked, report.lost) == (2, ["lost"])
    assert find_lost({"gone": Acknowledged(sent, sent)}, {}).lost == ["gone"]
