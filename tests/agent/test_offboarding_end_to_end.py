"""Signed remote offboarding end to end: a real collector, a real agent process, stand-in
components with real uninstall steps, and the audit log telling the story."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import (
    BIN,
    COLLECTOR_ENV,
    Agent,
    Collector,
    StandIn,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

MakeAgent = Callable[..., Agent]


def keys(collector: Collector, action: str, *extra: str) -> str:
    done = subprocess.run(
        [str(BIN / "rmm-collector"), "keys", action, *extra, "--db", collector.db],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **COLLECTOR_ENV},
    )
    return done.stdout.strip()


def api(
    collector: Collector, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        collector.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def installed_daemon(tmp_path: Path) -> Iterator[Callable[[], StandIn]]:
    """A stand-in daemon whose program is its own file (a copy of `sleep`), so that deleting the
    file uninstalls it: afterwards the agent's probe finds the component missing, not stopped."""
    made: list[StandIn] = []
    folder = tmp_path / "installed"
    folder.mkdir()

    def make() -> StandIn:
        name = unique_name("avd")
        program = folder / name
        shutil.copy2(shutil.which("sleep") or "/bin/sleep", program)
        daemon = StandIn(name, program)
        daemon.process = subprocess.Popen([str(program), "600"], stdin=subprocess.DEVNULL)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def uninstaller(
    tmp_path: Path, daemon: StandIn, journal: Path, busy_while: Path | None = None
) -> list[str]:
    """An uninstall step that stops the stand-in daemon and deletes its program, like a package
    manager's purge; it appends to `journal` so the test can count how often it ran. While the
    file `busy_while` exists it fails instead, with exit status 3."""
    script = (
        "import os, signal, sys\n"
        f"open({str(journal)!r}, 'a').write('ran\\n')\n"
        f"if os.path.exists({str(busy_while or '')!r}): print('device busy'); sys.exit(3)\n"
        f"os.kill({daemon.process.pid if daemon.process else 0}, signal.SIGKILL)\n"
        f"os.unlink({str(daemon.path)!r})\n"
        "print('purged')\n"
    )
    path = tmp_path / f"uninstall-{daemon.name}.py"
    path.write_text(script)
    return [sys.executable, str(path)]


def reap_when_killed(daemon: StandIn) -> None:
    assert daemon.process is not None
    wait_for(lambda: daemon.process.poll() is not None, what="the daemon to stop")  # type: ignore[union-attr]


def command_state(collector: Collector, command_id: str) -> Callable[[], Any]:
    return lambda: collector.get(f"/v1/commands/{command_id}")["state"]


def test_offboard_requested_while_the_agent_is_down_runs_once_when_it_starts(
    own_collector: Collector,
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    tmp_path: Path,
) -> None:
    collector = own_collector
    pin = keys(collector, "generate")
    technician = str(collector.cli("token", "add", "tina", "--role", "technician")["token"])
    daemon = installed_daemon()
    journal = tmp_path / "uninstall.journal"
    removed = tmp_path / "self-removal.done"
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        command_keys=[pin],
        offboard_approvals=0,  # single-signature mode: these offboards carry no order
        self_remove=[sys.executable, "-c", f"open({str(removed)!r}, 'w').write('gone')"],
        components=[
            {
                "name": "antivirus",
                "processes": [daemon.name],
                "uninstall": [uninstaller(tmp_path, daemon, journal)],
            },
            {
                "name": "dns_protection",
                "processes": [unique_name("dnsd")],
                "uninstall": [["false"]],
            },
        ],
    )
    assert agent.command("enroll").returncode == 0
    machine_id = agent.credential()["machine_id"]

    status, accepted = api(
        collector,
        "POST",
        f"/v1/machines/{machine_id}/offboard",
        technician,
        {"reason": "laptop returned to the client", "ticket": "T-2231"},
    )
    assert status == 202 and accepted["state"] == "offboard_pending"
    time.sleep(1.5)  # the agent is down: the request waits
    pending = collector.get(f"/v1/commands/{accepted['command_id']}")
    assert pending["state"] == "offboard_pending" and pending["delivered_at"] is None

    agent.start()
    wait_for(
        lambda: command_state(collector, accepted["command_id"])() == "offboarded",
        timeout=30,
        what="the offboard to complete",
        on_timeout=agent.log,
    )
    assert agent.process is not None
    assert agent.process.wait(timeout=15) == 0
    reap_when_killed(daemon)

    assert journal.read_text() == "ran\n"  # every step ran exactly once
    machine = collector.machine(machine_id)
    assert machine["state"] == "offboarded" and machine["offboarded_at"]
    command = collector.get(f"/v1/commands/{accepted['command_id']}")
    steps = {s["component"]: s for s in command["result"]["steps"]}
    assert steps["antivirus"]["status"] == "ok" and "purged" in steps["antivirus"]["output_tail"]
    assert steps["dns_protection"]["status"] == "skipped"  # never installed: nothing to run

    story = [
        e["action"] for e in reversed(collector.get(f"/v1/audit?target={machine_id}")["entries"])
    ]
    assert story == [
        "machine.enrolled",
        "offboard.requested",
        "command.delivered",
        "offboard.completed",
    ]
    wait_for(removed.exists, what="the detached self-removal step")
    assert sorted(p.name for p in agent.state_dir.iterdir()) == ["offboarded.json"]
    assert "could not spool" not in agent.log() and "Traceback" not in agent.log()
    assert agent.status()["offboarded"]["command_id"] == accepted["command_id"]
    again = agent.command("run")
    assert again.returncode == 78 and "offboarded" in again.stderr


def test_an_online_agent_is_offboarded_within_seconds_with_a_rotated_key(
    own_collector: Collector,
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    tmp_path: Path,
) -> None:
    collector = own_collector
    old_pin = keys(collector, "generate")
    new_pin = keys(collector, "generate")
    keys(collector, "retire", old_pin.partition(":")[0])
    technician = str(collector.cli("token", "add", "tom", "--role", "technician")["token"])
    daemon = installed_daemon()
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        command_keys=[old_pin, new_pin],
        offboard_approvals=0,  # single-signature mode: these offboards carry no order
        components=[
            {
                "name": "antivirus",
                "processes": [daemon.name],
                "uninstall": [uninstaller(tmp_path, daemon, tmp_path / "journal")],
            }
        ],
    )
    agent.start()
    wait_for(
        lambda: agent.known().get("last_heartbeat_at"), what="a heartbeat", on_timeout=agent.log
    )
    machine_id = agent.credential()["machine_id"]
    started = time.monotonic()
    # The technician's own client, from their desk: by hostname, following it to the end.
    done = subprocess.run(
        [
            str(BIN / "rmm-collector"),
            "remote",
            "--url",
            collector.url,
            "offboard",
            agent.hostname,
            "--reason",
            "decommissioned",
            "--ticket",
            "T-7",
            "--wait",
            "--yes",
            "--poll",
            "0.2",
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RMM_API_TOKEN": technician},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr + agent.log()[-2000:]
    assert "offboard_pending" in done.stderr and "offboarded after" in done.stdout
    print(f"request to offboarded for an online agent: {elapsed:.2f} s (heartbeat every ~1 s)")
    assert elapsed < 10
    assert collector.machine(machine_id)["state"] == "offboarded"
    entries = collector.get(f"/v1/audit?action=offboard.requested&target={machine_id}")["entries"]
    assert entries[0]["actor"] == "tom" and entries[0]["detail"]["ticket"] == "T-7"
    assert f"signed by {new_pin.partition(':')[0]}" in agent.log()
    assert agent.process is not None and agent.process.wait(timeout=15) == 0


def test_a_failed_uninstall_is_reported_with_its_steps_and_a_retry_succeeds(
    own_collector: Collector,
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    tmp_path: Path,
) -> None:
    collector = own_collector
    pin = keys(collector, "generate")
    technician = str(collector.cli("token", "add", "tina", "--role", "technician")["token"])
    daemon = installed_daemon()
    switch = tmp_path / "busy"
    switch.write_text("yes")
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        command_keys=[pin],
        offboard_approvals=0,  # single-signature mode: these offboards carry no order
        components=[
            {
                "name": "antivirus",
                "processes": [daemon.name],
                "uninstall": [uninstaller(tmp_path, daemon, tmp_path / "journal", switch)],
            }
        ],
    )
    agent.start()
    wait_for(
        lambda: agent.known().get("last_heartbeat_at"), what="a heartbeat", on_timeout=agent.log
    )
    machine_id = agent.credential()["machine_id"]
    _, first = api(
        collector,
        "POST",
        f"/v1/machines/{machine_id}/offboard",
        technician,
        {"reason": "client left"},
    )
    wait_for(
        lambda: command_state(collector, first["command_id"])() == "offboard_failed",
        timeout=20,
        what="the offboard to fail",
        on_timeout=agent.log,
    )
    failed = collector.get(f"/v1/commands/{first['command_id']}")
    (bad,) = [s for s in failed["result"]["steps"] if s["status"] == "failed" and s["argv"]]
    assert bad["exit_code"] == 3 and "device busy" in bad["output_tail"]
    # The agent's own log says what failed: the step, its exit status and the end of its output.
    failure_lines = [line for line in agent.log().splitlines() if "antivirus failed" in line]
    assert failure_lines, agent.log()[-2000:]
    assert "exited with status 3" in failure_lines[0] and "device busy" in failure_lines[0]
    assert collector.machine(machine_id)["state"] == "offboard_failed"
    assert agent.process is not None and agent.process.poll() is None  # still managed

    switch.unlink()
    _, retry = api(
        collector,
        "POST",
        f"/v1/machines/{machine_id}/offboard",
        technician,
        {"reason": "client left, second try"},
    )
    assert retry["command_id"] != first["command_id"]
    wait_for(
        lambda: command_state(collector, retry["command_id"])() == "offboarded",
        timeout=20,
        what="the retried offboard",
        on_timeout=agent.log,
    )
    assert agent.process.wait(timeout=15) == 0
