"""The real agent, as a subprocess, against a real collector on loopback."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.identity import Host, detect_kind
from agent.version import agent_version
from tests.agent.conftest import Agent, Collector, StandIn, free_port, unique_name, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and modes")

MakeAgent = Callable[..., Agent]
MakeStandIn = Callable[[str], StandIn]


def enrolled(agent: Agent) -> str:
    """Wait for the running agent to enroll and heartbeat; return its machine id."""
    wait_for(
        lambda: agent.known().get("last_heartbeat_at"),
        what="a first heartbeat",
        on_timeout=agent.log,
    )
    return str(agent.credential()["machine_id"])


def component_status(collector: Collector, machine_id: str, name: str) -> Callable[[], Any]:
    return lambda: collector.components(machine_id).get(name, {}).get("status")


def test_agent_enrolls_and_reports_running_stopped_and_missing_components(
    collector: Collector, make_agent: MakeAgent, stand_in: MakeStandIn
) -> None:
    running = stand_in(unique_name("avd")).start()
    doomed = stand_in(unique_name("dnsd")).start()
    absent = unique_name("bkpd")
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        components=[
            {"name": "antivirus", "processes": [running.name]},
            {"name": "dns_protection", "processes": ["no-such-daemon", doomed.name]},
            {"name": "backup", "required": False, "processes": [absent]},
        ],
    )
    agent.start()
    machine_id = enrolled(agent)

    machine = collector.machine(machine_id)
    assert machine["hostname"] == agent.hostname
    components = wait_for(
        lambda: (c := collector.components(machine_id)) and "antivirus" in c and c,
        what="components on the collector",
    )
    assert components["rmm"] == {
        "name": "rmm",
        "status": "running",
        "version": agent_version(),
        "required": True,
    }
    assert components["antivirus"]["status"] == "running"
    assert components["dns_protection"]["status"] == "running"
    assert components["backup"]["status"] == "missing"
    assert components["backup"]["required"] is False

    doomed.kill()
    wait_for(
        lambda: component_status(collector, machine_id, "dns_protection")() == "stopped",
        what="the killed stand-in to be reported stopped",
    )
    assert component_status(collector, machine_id, "antivirus")() == "running"

    changes = wait_for(
        lambda: [
            e
            for e in collector.events(machine_id)
            if e["type"] == "component.changed" and e["detail"]["name"] == "dns_protection"
        ],
        what="component.changed events",
    )
    transitions = sorted((e["at"], e["detail"]["from"], e["detail"]["to"]) for e in changes)
    assert [(before, after) for _, before, after in transitions] == [
        (None, "running"),
        ("running", "stopped"),
    ]
    types = {e["type"] for e in collector.events(machine_id)}
    assert "agent.started" in types

    assert agent.terminate() < 5
    assert agent.process is not None and agent.process.returncode == 0


def test_a_zombie_process_does_not_count_as_running(
    collector: Collector, make_agent: MakeAgent, stand_in: MakeStandIn
) -> None:
    ghost = stand_in(unique_name("zomb")).start()
    agent = make_agent(
        collector.url,
        enrollment_token=collector.enrollment_token(),
        components=[{"name": "antivirus", "processes": [ghost.name]}],
    )
    agent.start()
    machine_id = enrolled(agent)
    wait_for(lambda: component_status(collector, machine_id, "antivirus")() == "running")
    ghost.kill(reap=False)  # killed but not waited for: a zombie until this test reaps it
    wait_for(
        lambda: component_status(collector, machine_id, "antivirus")() == "stopped",
        what="the zombie to count as stopped",
    )


def test_kind_in_the_config_overrides_detection(
    collector: Collector, make_agent: MakeAgent
) -> None:
    detected = detect_kind(Host())
    override = "pc" if detected == "server" else "server"
    agent = make_agent(collector.url, enrollment_token=collector.enrollment_token(), kind=override)
    done = agent.command("enroll")
    assert done.returncode == 0, done.stderr
    machine_id = agent.credential()["machine_id"]
    assert collector.machine(machine_id)["kind"] == override
    agent.start()
    enrolled(agent)
    assert collector.machine(machine_id)["kind"] == override


def test_outage_spools_events_and_recovery_delivers_all_of_them(
    own_collector: Collector, make_agent: MakeAgent, stand_in: MakeStandIn
) -> None:
    daemon = stand_in(unique_name("avd")).start()
    agent = make_agent(
        own_collector.url,
        enrollment_token=own_collector.enrollment_token(),
        components=[{"name": "antivirus", "processes": [daemon.name]}],
    )
    agent.start()
    machine_id = enrolled(agent)
    wait_for(lambda: agent.spooled_events() == 0, what="the startup events to go out")

    own_collector.stop()
    daemon.kill()
    pending = wait_for(
        lambda: (ids := agent.spooled_event_ids()) and ids,
        what="the transition to be spooled during the outage",
    )
    status = agent.status()
    assert status["spool"]["events"] >= 1
    assert status["last_error"]
    assert agent.process is not None and agent.process.poll() is None

    own_collector.start()
    wait_for(
        lambda: agent.spooled_events() == 0,
        timeout=15,
        what="the spool to drain",
        on_timeout=agent.log,
    )
    delivered = {e["event_id"] for e in own_collector.events(machine_id)}
    assert pending <= delivered
    wait_for(lambda: component_status(own_collector, machine_id, "antivirus")() == "stopped")
    stopped = [
        e
        for e in own_collector.events(machine_id)
        if e["type"] == "component.changed" and e["detail"]["to"] == "stopped"
    ]
    assert len(stopped) == 1
    wait_for(lambda: agent.known().get("last_heartbeat_at") and not agent.known()["last_error"])


def test_spooled_items_survive_a_restart_and_a_kill_9(
    own_collector: Collector, make_agent: MakeAgent, stand_in: MakeStandIn
) -> None:
    first = stand_in(unique_name("avd")).start()
    second = stand_in(unique_name("dnsd")).start()
    agent = make_agent(
        own_collector.url,
        enrollment_token=own_collector.enrollment_token(),
        components=[
            {"name": "antivirus", "processes": [first.name]},
            {"name": "dns_protection", "processes": [second.name]},
        ],
    )
    agent.start()
    machine_id = enrolled(agent)
    wait_for(lambda: agent.spooled_events() == 0, what="the startup events to go out")

    own_collector.stop()
    first.kill()
    wait_for(lambda: agent.spooled_event_ids(), what="a spooled transition")
    assert agent.terminate() < 5  # clean stop during the outage adds agent.stopped to the spool
    after_stop = agent.spooled_event_ids()
    assert len(after_stop) >= 2

    agent.start()
    wait_for(lambda: "started" in agent.log().split("received SIGTERM")[-1], what="restart")
    second.kill()
    wait_for(
        lambda: len(agent.spooled_event_ids()) >= len(after_stop) + 2,
        what="more spooled events after the restart",
    )
    agent.kill()  # kill -9: nothing gets a chance to flush
    owed = agent.spooled_event_ids()
    assert after_stop <= owed
    for path in (agent.state_dir / "spool").iterdir():
        assert not path.name.endswith(".tmp")

    own_collector.start()
    agent.start()
    wait_for(
        lambda: agent.spooled_events() == 0,
        timeout=15,
        what="the spool to drain after the restart",
        on_timeout=agent.log,
    )
    delivered = {e["event_id"] for e in own_collector.events(machine_id)}
    assert owed <= delivered
    wait_for(lambda: component_status(own_collector, machine_id, "antivirus")() == "stopped")
    wait_for(lambda: component_status(own_collector, machine_id, "dns_protection")() == "stopped")


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield int(listener.getsockname()[1])
    listener.close()


def test_sigterm_stops_the_agent_within_seconds_even_mid_request(
    collector: Collector, make_agent: MakeAgent, black_hole: int
) -> None:
    agent = make_agent(collector.url, enrollment_token=collector.enrollment_token())
    assert agent.command("enroll").returncode == 0
    # Point the enrolled agent at a collector that never answers: the heartbeat hangs.
    agent.config_path.write_text(
        agent.config_path.read_text().replace(collector.url, f"http://127.0.0.1:{black_hole}")
    )
    agent.start()
    wait_for(lambda: "started" in agent.log(), what="the agent to start")
    time.sleep(0.5)
    took = agent.terminate()
    assert took < 5
    assert agent.process is not None and agent.process.returncode == 0
    assert "shutting down" in agent.log()


def test_a_revoked_token_is_reported_loudly_and_never_re_enrolls(
    collector: Collector, make_agent: MakeAgent
) -> None:
    token = collector.enrollment_token("acme")
    original = make_agent(collector.url, enrollment_token=token, name="original")
    original.start()
    enrolled(original)
    first_credential = original.credential()

    # The same hardware enrolled again without the earlier credential is held until a
    # technician approves it (a re-image from scratch); then the earlier token is revoked.
    twin = make_agent(
        collector.url, enrollment_token=token, name="twin", hardware_id=original.hardware_id
    )
    assert twin.command("enroll").returncode == 3
    collector.cli("machine", "approve-reenroll", first_credential["machine_id"])
    assert twin.command("enroll").returncode == 0

    wait_for(
        lambda: "REFUSED THIS AGENT'S TOKEN" in original.log(),
        what="the 401 to be logged",
    )
    assert original.process is not None and original.process.poll() is None
    assert original.credential() == first_credential
    status = original.status()
    assert "401" in status["last_error"]
    assert first_credential["agent_token"] not in original.log()
    assert original.terminate() < 5


def test_state_files_are_private_whatever_the_umask(
    collector: Collector, make_agent: MakeAgent
) -> None:
    agent = make_agent(collector.url, enrollment_token=collector.enrollment_token())
    agent.umask = 0
    agent.start()
    enrolled(agent)
    agent.terminate()
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((agent.state_dir / "spool").stat().st_mode) == 0o700
    files = [p for p in agent.state_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"credential.json", "status.json", "agent.lock"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_status_reports_identity_collector_heartbeat_and_spool(
    collector: Collector, make_agent: MakeAgent
) -> None:
    agent = make_agent(collector.url, enrollment_token=collector.enrollment_token())
    before = agent.command("status")
    assert before.returncode == 3
    assert "not enrolled" in before.stdout

    agent.start()
    machine_id = enrolled(agent)
    agent.terminate()
    done = agent.command("status")
    assert done.returncode == 0
    credential = agent.credential()
    assert credential["agent_id"] in done.stdout
    assert machine_id in done.stdout
    assert collector.url in done.stdout
    assert "last heartbeat: 20" in done.stdout
    assert "spooled:" in done.stdout
    assert credential["agent_token"] not in done.stdout


def test_enroll_refuses_to_enroll_twice_without_force(
    collector: Collector, make_agent: MakeAgent
) -> None:
    agent = make_agent(collector.url, enrollment_token=collector.enrollment_token())
    assert agent.command("enroll").returncode == 0
    first = agent.credential()
    again = agent.command("enroll")
    assert again.returncode == 1
    assert "--force" in again.stderr
    forced = agent.command("enroll", "--force")
    assert forced.returncode == 0, forced.stderr
    second = agent.credential()
    assert second["machine_id"] == first["machine_id"]
    assert second["agent_token"] != first["agent_token"]


def test_a_bad_enrollment_token_is_refused_with_a_clear_message(
    collector: Collector, make_agent: MakeAgent
) -> None:
    agent = make_agent(collector.url, enrollment_token="rmmen_not-a-real-token")
    done = agent.command("enroll")
    assert done.returncode == 1
    assert "401" in done.stderr
    assert "rmmen_not-a-real-token" not in done.stderr
    assert not (agent.state_dir / "credential.json").exists()
    agent.start()
    assert agent.process is not None
    assert agent.process.wait(timeout=10) == 78
    assert "enrollment refused" in agent.log()


def test_run_without_credential_or_enrollment_token_exits_with_a_config_error(
    make_agent: MakeAgent,
) -> None:
    agent = make_agent(f"http://127.0.0.1:{free_port()}")
    agent.start()
    assert agent.process is not None
    assert agent.process.wait(timeout=10) == 78
    assert "enrollment_token" in agent.log()


@pytest.mark.parametrize(
    ("config", "key", "problem"),
    [
        ('collector_url = "http://noc.example.net"\n', "collector_url", "plain http://"),
        ('collector_url = "ftp://127.0.0.1"\n', "collector_url", "https://"),
        ("enrollment_token = 'x'\n", "collector_url", "required"),
        ('collector_url = "https://noc.example.net"\nkind = "laptop"\n', "kind", "'pc'"),
        ('collector_url = "https://noc.example.net"\nheartbeat = 5\n', "heartbeat", "unknown"),
        (
            'collector_url = "https://noc.example.net"\n[[component]]\nprocesses = ["x"]\n',
            "component[0].name",
            "required",
        ),
        (
            'collector_url = "https://noc.example.net"\n[[component]]\nname = "av"\n'
            'processes = "clamd"\n',
            "component[0].processes",
            "list of strings",
        ),
        (
            'collector_url = "https://noc.example.net"\ncommand_keys = ["k1:abc"]\n',
            "command_keys[0]",
            "base64",
        ),
        ("collector_url = \n", "(file)", "TOML"),
    ],
)
def test_bad_configs_name_the_key_and_the_problem(
    tmp_path: Path, config: str, key: str, problem: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(config)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 78
    assert f": {key}: " in done.stderr
    assert problem in done.stderr


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78
    assert "nope.toml" in done.stderr
    assert "no such file" in done.stderr


def test_console_script_and_module_entry_point_agree() -> None:
    script = Path(sys.executable).parent / "rmm-agent"
    for argv in ([str(script), "--help"], [sys.executable, "-m", "agent", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0
        for command in ("enroll", "run", "status"):
            assert command in done.stdout
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert agent_version() in version.stdout


def test_environment_overrides_identity(collector: Collector, make_agent: MakeAgent) -> None:
    agent = make_agent(collector.url, enrollment_token=collector.enrollment_token())
    assert agent.command("enroll").returncode == 0
    machine = collector.machine(agent.credential()["machine_id"])
    assert machine["hostname"] == agent.hostname
    assert agent.credential()["hardware_id"] == agent.hardware_id
