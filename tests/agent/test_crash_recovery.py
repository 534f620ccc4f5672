"""An offboard survives `kill -9` of the agent: real collector, real agent processes, real
uninstall steps. A step that outlives the agent is waited for, never started a second time; a
succeeded offboard whose departure a crash interrupted is finished on the next start; damaged
state files never crash `run` or `status`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.conftest import Agent, Collector, StandIn, wait_for
from tests.agent.test_offboarding_end_to_end import (
    api,
    command_state,
    installed_daemon,
    keys,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

__all__ = ["installed_daemon"]

MakeAgent = Callable[..., Agent]


def slow_uninstaller(tmp_path: Path, daemon: StandIn, journal: Path, seconds: float) -> list[str]:
    """An uninstall step that takes `seconds`, then stops the daemon and deletes its program; it
    notes its start and end (pid, time) in `journal`, so overlapping copies would show."""
    assert daemon.process is not None
    script = (
        "import os, signal, time\n"
        f"journal = {str(journal)!r}\n"
        "open(journal, 'a').write(f'start {os.getpid()} {time.time()}\\n')\n"
        "print('stopping the daemon', flush=True)\n"
        f"time.sleep({seconds})\n"
        f"os.kill({daemon.process.pid}, signal.SIGKILL)\n"
        f"os.unlink({str(daemon.path)!r})\n"
        "open(journal, 'a').write(f'end {os.getpid()} {time.time()}\\n')\n"
        "print('purged', flush=True)\n"
    )
    path = tmp_path / f"slow-uninstall-{daemon.name}.py"
    path.write_text(script)
    return [sys.executable, str(path)]


def journal_lines(journal: Path) -> list[list[str]]:
    return [line.split() for line in journal.read_text().splitlines()] if journal.exists() else []


def offboard_agent(
    collector: Collector,
    make_agent: MakeAgent,
    daemon: StandIn,
    step: list[str],
    **settings: object,
) -> tuple[Agent, str]:
    pin = keys(collector, "generate")
    technician = str(collector.cli("token", "add", "tina", "--role", "technician")["token"])
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        command_keys=[pin],
        offboard_approvals=0,  # today's collector delivers single-signature offboards
        components=[{"name": "antivirus", "processes": [daemon.name], "uninstall": [step]}],
        **settings,
    )
    agent.start()
    wait_for(
        lambda: agent.known().get("last_heartbeat_at"), what="a heartbeat", on_timeout=agent.log
    )
    machine_id = agent.credential()["machine_id"]
    status, accepted = api(
        collector,
        "POST",
        f"/v1/machines/{machine_id}/offboard",
        technician,
        {"reason": "contract ended"},
    )
    assert status == 202
    return agent, str(accepted["command_id"])


@pytest.mark.parametrize("step_ends_before_restart", [False, True], ids=["alive", "ended"])
def test_an_uninstall_step_that_outlives_a_kill_9_runs_once_and_is_reported(
    own_collector: Collector,
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    tmp_path: Path,
    step_ends_before_restart: bool,
) -> None:
    collector = own_collector
    daemon = installed_daemon()
    journal = tmp_path / "journal"
    step = slow_uninstaller(tmp_path, daemon, journal, seconds=4)
    agent, command_id = offboard_agent(collector, make_agent, daemon, step)
    wait_for(
        lambda: journal_lines(journal), timeout=20, what="the step to start", on_timeout=agent.log
    )
    agent.kill()  # kill -9 mid-step: the step runs on in its own session
    if step_ends_before_restart:
        wait_for(lambda: len(journal_lines(journal)) == 2, timeout=20, what="the step to end")
    agent.start()
    wait_for(
        lambda: command_state(collector, command_id)() == "offboarded",
        timeout=40,
        what="the resumed offboard to complete",
        on_timeout=agent.log,
    )
    assert agent.process is not None and agent.process.wait(timeout=15) == 0
    lines = journal_lines(journal)
    assert [line[0] for line in lines] == ["start", "end"]  # one copy, start to end
    (step_result,) = collector.get(f"/v1/commands/{command_id}")["result"]["steps"]
    assert step_result["status"] == "ok" and step_result["exit_code"] == 0
    assert "purged" in step_result["output_tail"]
    if not step_ends_before_restart:
        assert "outlived the agent's restart; waiting for it" in agent.log()


def test_a_crash_between_the_saved_result_and_departure_still_departs(
    own_collector: Collector,
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    tmp_path: Path,
) -> None:
    collector = own_collector
    daemon = installed_daemon()
    journal = tmp_path / "journal"
    removed = tmp_path / "self-removal.done"
    step = slow_uninstaller(tmp_path, daemon, journal, seconds=2)
    agent, command_id = offboard_agent(
        collector,
        make_agent,
        daemon,
        step,
        self_remove=[sys.executable, "-c", f"open({str(removed)!r}, 'w').write('gone')"],
    )
    wait_for(lambda: journal_lines(journal), timeout=20, what="the step to start")
    collector.stop()  # the final report cannot be delivered: the agent keeps it and retries
    ledger = agent.state_dir / "commands.json"
    wait_for(
        lambda: json.loads(ledger.read_text())["commands"][command_id]["state"] == "succeeded",
        timeout=20,
        what="the result to be saved",
        on_timeout=agent.log,
    )
    agent.kill()  # the result is saved (ledger and spool); the departure never happened
    assert not (agent.state_dir / "offboarded.json").exists()
    collector.start()
    agent.start()
    wait_for(
        lambda: (agent.state_dir / "offboarded.json").exists(),
        timeout=30,
        what="the departure",
        on_timeout=agent.log,
    )
    assert agent.process is not None
    assert agent.process.wait(timeout=15) == 0, agent.log()
    assert command_state(collector, command_id)() == "offboarded"
    assert [line[0] for line in journal_lines(journal)] == ["start", "end"]
    wait_for(removed.exists, what="the detached self-removal step")
    left = sorted(p.name for p in agent.state_dir.iterdir())
    assert left == ["offboarded.json"]  # no status.json, agent.lock, spool or ledger beside it
    assert "could not spool" not in agent.log()


def test_a_damaged_ledger_keeps_heartbeating_refuses_commands_and_says_what_to_do(
    own_collector: Collector,
    make_agent: MakeAgent,
    installed_daemon: Callable[[], StandIn],
    tmp_path: Path,
) -> None:
    collector = own_collector
    daemon = installed_daemon()
    journal = tmp_path / "journal"
    pin = keys(collector, "generate")
    technician = str(collector.cli("token", "add", "tina", "--role", "technician")["token"])
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        command_keys=[pin],
        offboard_approvals=0,
        components=[
            {
                "name": "antivirus",
                "processes": [daemon.name],
                "uninstall": [slow_uninstaller(tmp_path, daemon, journal, 0)],
            }
        ],
    )
    assert agent.command("enroll").returncode == 0
    (agent.state_dir / "commands.json").write_text('{"last_sequence": 3, "commands": {')
    agent.start()
    wait_for(
        lambda: agent.known().get("last_heartbeat_at"), what="a heartbeat", on_timeout=agent.log
    )
    machine_id = agent.credential()["machine_id"]
    _, accepted = api(
        collector, "POST", f"/v1/machines/{machine_id}/offboard", technician, {"reason": "x"}
    )
    wait_for(
        lambda: "ledger_damaged" in agent.log(),
        timeout=20,
        what="the refusal",
        on_timeout=agent.log,
    )
    assert agent.process is not None and agent.process.poll() is None  # still running
    assert not journal.exists()  # nothing ran
    assert f"{agent.state_dir / 'commands.json'}" in agent.log()
    status = agent.command("status")
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "ledger" in status.stdout and "commands.json" in status.stdout
    wait_for(
        lambda: "ledger_damaged" in json.dumps(collector.get("/v1/audit")["entries"]),
        what="the refusal in the collector's audit log",
    )
    assert command_state(collector, accepted["command_id"])() == "offboard_pending"


def test_an_unreadable_tombstone_means_offboarded_for_run_and_status(
    make_agent: MakeAgent, tmp_path: Path
) -> None:
    agent = make_agent("http://127.0.0.1:9", enrollment_token="rmmen_x")
    agent.state_dir.mkdir()
    (agent.state_dir / "offboarded.json").write_text("{not json")
    run = agent.command("run")
    assert run.returncode == 78 and "Traceback" not in run.stderr
    assert "offboarded" in run.stderr and "offboarded.json" in run.stderr
    status = agent.command("status", "--json")
    assert "Traceback" not in status.stderr
    report = json.loads(status.stdout)
    assert report["offboarded"]["damaged"] and "cannot be read" in report["offboarded"]["damaged"]
