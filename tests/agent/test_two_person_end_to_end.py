"""Two-person offboarding end to end: a real collector, a real agent that pins two operators'
keys, and the operators' own `rmm-collector operator keygen` and `remote offboard|approve --key`
as subprocesses. The order waits for the second signature, then runs each step once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.conftest import BIN, Agent, Collector, StandIn, wait_for
from tests.agent.test_end_to_end import enrolled
from tests.agent.test_offboarding_end_to_end import (
    command_state,
    installed_daemon,  # noqa: F401  (a fixture)
    keys,
    reap_when_killed,
    uninstaller,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

PASSPHRASE = "correct horse battery"


def operator_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rmm-collector"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RMM_OPERATOR_PASSPHRASE": PASSPHRASE, **env},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_an_offboard_signed_by_requester_and_second_operator_runs_once(
    own_collector: Collector,
    make_agent: Callable[..., Agent],
    installed_daemon: Callable[[], StandIn],  # noqa: F811
    tmp_path: Path,
) -> None:
    collector = own_collector
    pin = keys(collector, "generate")
    lines = {}
    for who in ("alice", "bob"):
        made = operator_cli("operator", "keygen", "--key", str(tmp_path / f"{who}.key"), env={})
        assert made.returncode == 0, made.stderr
        assert (tmp_path / f"{who}.key").stat().st_mode & 0o777 == 0o600
        lines[who] = made.stdout.strip().splitlines()[-1]
        assert PASSPHRASE.encode() not in (tmp_path / f"{who}.key").read_bytes()
    collector.cli("operator", "add", "Alice", lines["alice"])
    tina = str(collector.cli("token", "add", "tina", "--role", "technician")["token"])
    tom = str(collector.cli("token", "add", "tom", "--role", "technician")["token"])
    daemon = installed_daemon()
    journal = tmp_path / "uninstall.journal"
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        command_keys=[pin],
        operator_keys=[lines["alice"], lines["bob"]],
        offboard_approvals=2,
        self_remove=["true"],
        components=[
            {
                "name": "antivirus",
                "processes": [daemon.name],
                "uninstall": [uninstaller(tmp_path, daemon, journal)],
            }
        ],
    )
    agent.start()
    machine_id = enrolled(agent)
    wait_for(
        lambda: collector.components(machine_id).get("antivirus", {}).get("status") == "running",
        what="the first heartbeat",
    )

    remote = {"RMM_API_URL": collector.url}
    requested = operator_cli(
        "remote",
        "offboard",
        machine_id,
        "--reason",
        "contract ended",
        "--key",
        str(tmp_path / "alice.key"),
        "--yes",
        env={**remote, "RMM_API_TOKEN": tina},
    )
    assert requested.returncode == 0, requested.stderr
    assert "1 of 2 approval(s): Alice" in requested.stderr
    command_id = requested.stderr.split("command ")[1].split()[0]
    time.sleep(2)  # heartbeats go on: nothing is delivered on one signature
    assert command_state(collector, command_id)() == "awaiting_approval"
    assert not journal.exists()

    approved = operator_cli(
        "remote",
        "approve",
        command_id,
        "--key",
        str(tmp_path / "bob.key"),
        "--yes",
        env={**remote, "RMM_API_TOKEN": tom},
    )
    assert approved.returncode == 0, approved.stderr
    assert "contract ended" in approved.stderr and "antivirus" in approved.stderr
    wait_for(
        lambda: command_state(collector, command_id)() == "offboarded",
        timeout=30,
        what="the offboard to complete",
        on_timeout=agent.log,
    )
    reap_when_killed(daemon)
    assert journal.read_text() == "ran\n"
    story = [
        e["action"] for e in reversed(collector.get(f"/v1/audit?target={machine_id}")["entries"])
    ]
    wanted = [
        "offboard.requested",
        "offboard.approved",
        "offboard.approved",
        "offboard.approved_for_delivery",
        "command.delivered",
        "offboard.completed",
    ]
    assert [action for action in story if action in wanted] == wanted


def test_a_wrong_passphrase_or_plain_http_elsewhere_signs_nothing(tmp_path: Path) -> None:
    key = tmp_path / "op.key"
    assert operator_cli("operator", "keygen", "--key", str(key), env={}).returncode == 0
    again = operator_cli("operator", "keygen", "--key", str(key), env={})
    assert again.returncode == 2 and "never overwritten" in again.stderr
    wrong = operator_cli(
        "remote",
        "approve",
        "c-1",
        "--key",
        str(key),
        env={
            "RMM_API_URL": "http://127.0.0.1:9",
            "RMM_API_TOKEN": "t",
            "RMM_OPERATOR_PASSPHRASE": "not the passphrase",
        },
    )
    assert wrong.returncode == 2 and "does not open with that passphrase" in wrong.stderr
    plain = operator_cli(
        "remote",
        "approve",
        "c-1",
        "--key",
        str(key),
        env={"RMM_API_URL": "http://noc.example.net", "RMM_API_TOKEN": "t"},
    )
    assert plain.returncode == 2 and "plain HTTP" in plain.stderr


def test_a_200_machine_client_is_offboarded_with_two_commands_in_under_a_minute(
    own_collector: Collector, tmp_path: Path
) -> None:
    """Measured here: both commands together, signing included (the agents are simulated by
    their enrollments and one heartbeat each, saying they require two pinned operators)."""
    import json
    import urllib.request

    collector = own_collector
    keys(collector, "generate")
    lines = {}
    for who in ("alice", "bob"):
        made = operator_cli("operator", "keygen", "--key", str(tmp_path / f"{who}.key"), env={})
        lines[who] = made.stdout.strip().splitlines()[-1]
    key_ids = [line.split(":")[0] for line in lines.values()]
    token = collector.enrollment_token("Contoso")
    tina = str(collector.cli("token", "add", "tina", "--role", "technician")["token"])

    def post(path: str, body: dict[str, object], bearer: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        request = urllib.request.Request(
            collector.url + path, data=json.dumps(body).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]

    for n in range(200):
        agent = post(
            "/v1/enroll",
            {
                "enrollment_token": token,
                "hardware_id": f"hw-{n}",
                "hostname": f"pc-{n:03}",
                "os": "Linux",
                "kind": "pc",
            },
        )
        post(
            "/v1/heartbeat",
            {"components": [], "offboard_approvals": 2, "operator_key_ids": key_ids},
            agent["agent_token"],
        )
    env = {"RMM_API_URL": collector.url, "RMM_API_TOKEN": tina}
    started = time.monotonic()
    ordered = operator_cli(
        "remote",
        "offboard",
        "--client",
        "Contoso",
        "--all",
        "--reason",
        "contract ended",
        "--key",
        str(tmp_path / "alice.key"),
        "--yes",
        "--json",
        env=env,
    )
    assert ordered.returncode == 0, ordered.stderr
    assert "200 live machine(s)" in ordered.stderr
    batch_id = json.loads(ordered.stdout)["batch_id"]
    approved = operator_cli(
        "remote",
        "approve",
        "--batch",
        batch_id,
        "--key",
        str(tmp_path / "bob.key"),
        "--yes",
        env=env,
    )
    took = time.monotonic() - started
    assert approved.returncode == 0, approved.stderr
    assert "signed 200 of 200" in approved.stderr
    assert took < 60, took
    batch = collector.get(f"/v1/batches/{batch_id}")
    assert {c["state"] for c in batch["commands"]} == {"offboard_pending"}
    print(f"200-machine bulk offboard, both commands: {took:.1f} s")
