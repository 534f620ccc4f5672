"""`rmm-collector remote` against the real app on loopback: a table or a summary by default, the
API's JSON unchanged with `--json`, and a failed offboard told with its failed step, its exit
status and the end of its output."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from collector import operator_keys
from collector.cli import main
from tests.collector.conftest import Harness, StoreLocation
from tests.collector.test_offboarding import report

# Offboard without a prompt and follow it closely, as a test can.
OFFBOARD_AND_WAIT = ("--reason", "returned", "--yes", "--wait", "--poll", "0.05", "--timeout", "30")


@pytest.fixture
async def store_location(tmp_path: Path) -> StoreLocation:
    """The CLI only speaks HTTP: one engine is enough here (the store suite covers both)."""
    return StoreLocation("sqlite", str(tmp_path / "collector.sqlite3"))


ESCAPE = "\x1b]0;owned\x07"

APT_OUTPUT = "\n".join(
    [f"Reading package lists... {n}%" for n in range(0, 100, 8)]
    + [
        "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242",
        "E: Unable to acquire the dpkg frontend lock, is another process using it?",
        "",
    ]
)

FAILED_STEPS = [
    {"component": "antivirus", "argv": [], "status": "ok", "output_tail": "running"},
    {
        "component": "antivirus",
        "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
        "status": "failed",
        "exit_code": 100,
        "output_tail": APT_OUTPUT,
        "duration_s": 1.5,
    },
    {
        "component": "antivirus",
        "argv": [],
        "status": "failed",
        "output_tail": "still running after its uninstall steps",
    },
]


class Cli:
    def __init__(self, fleet: Harness, capsys: pytest.CaptureFixture[str], token: str) -> None:
        self._fleet = fleet
        self._capsys = capsys
        self._token = token

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        """`rmm-collector remote --url … ARGS` in a thread (it runs its own event loop), while
        this loop serves the API it calls."""
        url = str(self._fleet.client.make_url("/"))
        argv = ["remote", "--url", url, "--token", self._token, *args]
        self._capsys.readouterr()
        status = await asyncio.to_thread(main, argv)
        out, err = self._capsys.readouterr()
        return status, out, err


Setup = tuple[Cli, dict[str, Any], dict[str, str]]


@pytest.fixture
async def setup(fleet: Harness, capsys: pytest.CaptureFixture[str]) -> Setup:
    """A client and a machine whose names carry a terminal escape, a technician's token."""
    client_id, token = await fleet.add_client(f"Acme {ESCAPE}Dental")
    agent = await fleet.enroll(token, "hw-1", hostname=f"front-desk{ESCAPE}")
    await fleet.heartbeat(
        agent["agent_token"],
        [
            {"name": "rmm", "status": "running", "version": "0.1.0"},
            {"name": "antivirus", "status": "running", "version": None},
        ],
    )
    await fleet.flush()
    headers = await fleet.api_token("technician", name="tina")
    cli = Cli(fleet, capsys, headers["Authorization"].removeprefix("Bearer "))
    return cli, {**agent, "client_id": client_id}, headers


def not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


async def test_remote_machine_prints_a_summary_and_the_api_json_only_with_json(
    fleet: Harness, setup: Setup
) -> None:
    cli, agent, headers = setup
    machine_id = agent["machine_id"]
    status, out, _ = await cli("machine", machine_id)
    assert status == 0
    assert not_json(out)
    assert "\x1b" not in out and "\x07" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["machine", machine_id]
    assert "hostname    front-desk\ufffd]0;owned\ufffd" in lines
    assert f"client      Acme \ufffd]0;owned\ufffdDental ({agent['client_id']})" in lines
    assert any(line.split() == ["antivirus", "running", "-", "yes"] for line in lines)
    assert lines[lines.index("") + 1].split() == ["COMPONENT", "STATUS", "VERSION", "REQUIRED"]

    api = await fleet.get(f"/v1/machines/{machine_id}", headers)
    for args in (("--json", "machine", machine_id), ("machine", machine_id, "--json")):
        status, out, _ = await cli(*args)
        assert status == 0
        assert out == json.dumps(api) + "\n"  # the shape outside checks parse, unchanged


async def test_remote_machines_and_exposure_are_tables(fleet: Harness, setup: Setup) -> None:
    cli, agent, headers = setup
    status, out, _ = await cli("machines")
    assert status == 0 and not_json(out)
    header, row = out.splitlines()
    assert header.split() == [
        "MACHINE",
        "ID",
        "HOSTNAME",
        "CLIENT",
        "KIND",
        "STATE",
        "LAST",
        "SEEN",
    ]
    assert row.startswith(agent["machine_id"]) and "front-desk\ufffd]0;owned\ufffd" in row
    assert "Acme \ufffd]0;owned\ufffdDental" in row and "\x1b" not in row
    assert (await cli("--json", "machines"))[1] == json.dumps(
        await fleet.get("/v1/machines", headers)
    ) + "\n"

    status, out, _ = await cli("exposure")
    assert status == 0 and not_json(out)
    assert out.startswith("licence exposure as of ")
    assert "expired without offboard: 0" in out and "offboards pending over 7 days: 0" in out
    report_json = json.loads((await cli("exposure", "--json"))[1])
    assert set(report_json) == {
        "as_of",
        "expired_without_offboard",
        "offboards_pending_over_7_days",
    }


async def test_remote_offboard_prints_the_command_and_its_json_only_with_json(
    fleet: Harness, setup: Setup
) -> None:
    cli, agent, _ = setup
    status, out, err = await cli("offboard", agent["machine_id"], "--reason", "returned", "--yes")
    assert status == 0 and not_json(out)
    command_id = err.split("command ")[1].split()[0]
    assert out.splitlines()[0].split() == ["command", command_id]
    assert out.splitlines()[2].split() == ["state", "offboard_pending"]
    # A second request while one is pending answers the same command: here as the API's JSON.
    status, out, _ = await cli(
        "offboard", agent["machine_id"], "--reason", "returned", "--yes", "--json"
    )
    assert status == 0
    answered = json.loads(out)
    assert (answered["command_id"], answered["state"]) == (command_id, "offboard_pending")


class Terminal:
    def isatty(self) -> bool:
        return True


async def test_the_offboard_prompt_shows_a_printable_hostname_and_no_requests_nothing(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, agent, _ = setup
    asked: list[str] = []

    def answer(prompt: str) -> str:
        asked.append(prompt)
        return "n"

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", answer)
    status, out, err = await cli("offboard", agent["machine_id"], "--reason", "returned")
    assert status == 1 and out == "" and "nothing requested" in err
    (prompt,) = asked
    assert prompt.startswith("Offboard front-desk\ufffd]0;owned\ufffd (") and "\x1b" not in prompt


async def test_offboard_wait_says_which_step_failed_its_exit_status_and_how_its_output_ended(
    fleet: Harness, setup: Setup
) -> None:
    cli, agent, headers = setup
    waiting = asyncio.create_task(cli("offboard", agent["machine_id"], *OFFBOARD_AND_WAIT))
    command_id = await requested(fleet, agent["machine_id"], headers)
    await fleet.heartbeat(agent["agent_token"])  # delivered
    await report(
        fleet,
        agent["agent_token"],
        command_id,
        "failed",
        FAILED_STEPS,
        reason="not removed: antivirus",
    )
    status, out, err = await waiting
    assert status == 3
    lines = out.splitlines()
    assert lines[0].startswith("offboard_failed after ")
    assert "offboard failed: not removed: antivirus" in lines
    assert (
        "  failed step   antivirus: `apt-get -y purge clamav-daemon` exited with status 100"
    ) in lines
    at = lines.index("    output ends:")
    assert lines[at + 9 : at + 11] == [
        "    | E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242",
        "    | E: Unable to acquire the dpkg frontend lock, is another process using it?",
    ]
    assert "Reading package lists... 0%" not in out  # the end of the output, not its start
    assert "  failed check  antivirus: still running after its uninstall steps" in lines
    # The follow output on stderr names each step as the agent reported it.
    assert "  step antivirus: `apt-get -y purge clamav-daemon` exited with status 100" in err
    assert "  check antivirus: still running after its uninstall steps (failed)" in err

    # `remote command` tells the same; `--json` keeps stdout the API's command.
    status, out, _ = await cli("command", command_id)
    assert status == 0 and not_json(out)
    assert "    | E: Unable to acquire the dpkg frontend lock, is another process using it?" in out
    assert any(
        line.split()[:5] == ["antivirus", "apt-get", "-y", "purge", "clamav-daemon"]
        and line.split()[5:8] == ["failed", "100", "1.5"]
        for line in out.splitlines()
    )
    status, out, err = await cli("--json", "command", command_id, "--wait", "--poll", "0.05")
    assert status == 3
    assert json.loads(out) == await fleet.get(f"/v1/commands/{command_id}", headers)
    assert "exited with status 100" in err and "is another process using it?" in err


async def test_offboard_wait_exits_0_once_offboarded(fleet: Harness, setup: Setup) -> None:
    cli, agent, headers = setup
    waiting = asyncio.create_task(cli("offboard", agent["machine_id"], *OFFBOARD_AND_WAIT))
    command_id = await requested(fleet, agent["machine_id"], headers)
    await fleet.heartbeat(agent["agent_token"])
    steps = [
        {"component": c, "argv": [], "status": "skipped", "output_tail": "not installed"}
        for c in ("rmm", "antivirus")
    ]
    await report(fleet, agent["agent_token"], command_id, "succeeded", steps)
    status, out, _ = await waiting
    assert status == 0
    assert out.startswith("offboarded after ") and "failed" not in out


async def test_approve_wait_follows_the_approved_offboard_to_its_failure(
    fleet: Harness, setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, agent, headers = setup
    monkeypatch.setenv(operator_keys.PASSPHRASE_ENV, "a long passphrase")
    lines = {who: operator_keys.generate(tmp_path / f"{who}.key") for who in ("alice", "bob")}
    await fleet.heartbeat(
        agent["agent_token"],
        offboard_approvals=2,
        operator_key_ids=[line.partition(":")[0] for line in lines.values()],
    )
    status, out, err = await cli(
        "offboard",
        agent["machine_id"],
        "--reason",
        "returned",
        "--yes",
        "--key",
        str(tmp_path / "alice.key"),
    )
    assert status == 0, err
    command_id = err.split("command ")[1].split()[0]
    assert out.splitlines()[2].split() == ["state", "awaiting_approval"]
    assert out.splitlines()[3].startswith("approvals  1 of 2 approval(s): tina (")

    status, _, err = await cli(
        "approve", "--batch", "b-1", "--key", str(tmp_path / "bob.key"), "--wait"
    )
    assert status == 2 and "--wait follows one command" in err

    waiting = asyncio.create_task(
        cli(
            "approve",
            command_id,
            "--key",
            str(tmp_path / "bob.key"),
            "--yes",
            "--wait",
            "--poll",
            "0.05",
            "--timeout",
            "30",
        )
    )
    for _ in range(400):
        if (await fleet.get(f"/v1/commands/{command_id}", headers))["state"] != (
            "awaiting_approval"
        ):
            break
        await asyncio.sleep(0.05)
    await fleet.heartbeat(agent["agent_token"])  # delivered
    await report(
        fleet,
        agent["agent_token"],
        command_id,
        "failed",
        FAILED_STEPS,
        reason="not removed: antivirus",
    )
    status, out, err = await waiting
    assert status == 3, err
    assert "signed: offboard_pending; 2 of 2 approval(s)" in err
    assert out.splitlines()[0].startswith("offboard_failed after ")  # and nothing before it
    assert (
        "  failed step   antivirus: `apt-get -y purge clamav-daemon` exited with status 100"
    ) in out.splitlines()


def test_remote_help_tells_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["remote", "offboard", "--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out and "3  the offboard failed" in out


async def requested(fleet: Harness, machine_id: str, headers: dict[str, str]) -> str:
    for _ in range(400):
        commands = (await fleet.get(f"/v1/commands?machine={machine_id}", headers))["commands"]
        if commands:
            return str(commands[0]["command_id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the CLI never requested the offboard")
