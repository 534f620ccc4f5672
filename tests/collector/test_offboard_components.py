"""What a completed offboard leaves on the machine: the components it uninstalled are no longer
running, from the completion instant on; the heartbeats before it keep what they said."""

from __future__ import annotations

import json
from typing import Any

from collector.rules.commands import components_after_offboard
from collector.store.base import CommandRecord
from tests.collector.conftest import Harness
from tests.collector.test_offboarding import enrolled, offboard, report
from wire.times import parse_instant

DEPLOYED = [
    {"name": "antivirus", "status": "running", "version": "1.2", "required": True},
    {"name": "dns_protection", "status": "running", "version": "2.91", "required": True},
    {"name": "rmm", "status": "running", "version": "0.1.0", "required": True},
]
STEPS = [
    {
        "component": "antivirus",
        "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
        "status": "ok",
        "exit_code": 0,
        "output_tail": "Removing clamav-daemon",
    },
    {"component": "dns_protection", "argv": [], "status": "skipped", "output_tail": "gone"},
]


def _command(components: list[str]) -> CommandRecord:
    now = parse_instant("2026-03-02T09:00:00Z")
    return CommandRecord(
        command_id="c-1",
        type="offboard",
        machine_id="m-1",
        client_id="cl-1",
        agent_id="a-1",
        sequence=1,
        state="offboard_pending",
        issuer="tina",
        reason="returned",
        ticket=None,
        created_at=now,
        delivered_at=now,
        delivery_count=1,
        completed_at=None,
        result_status=None,
        result_reason=None,
        steps_json=None,
        rejections=0,
        components_json=json.dumps(components),
    )


def test_uninstalled_components_and_the_agent_itself_are_missing_after_the_offboard() -> None:
    late = {"name": "backup", "status": "running", "version": "9", "required": False}
    after = json.loads(
        components_after_offboard(
            json.dumps([*DEPLOYED, late]),
            _command(["antivirus", "dns_protection", "rmm"]),
            json.dumps(STEPS),
        )
    )
    assert [(c["name"], c["status"], c["version"]) for c in after] == [
        ("antivirus", "missing", None),
        ("dns_protection", "missing", None),
        ("rmm", "missing", None),
        # Reported only after the request: the order did not name it, the report is silent.
        ("backup", "running", "9"),
    ]
    assert [c["required"] for c in after] == [True, True, True, False]


async def _offboarded(fleet: Harness) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    agent, tech, admin = await enrolled(fleet)
    await fleet.heartbeat(agent["agent_token"], DEPLOYED)
    await fleet.flush()
    accepted = await offboard(fleet, agent["machine_id"], tech)
    fleet.clock.advance(minutes=1)
    await fleet.heartbeat(agent["agent_token"], DEPLOYED)  # delivers the command
    await fleet.flush()
    fleet.clock.advance(minutes=1)
    # A heartbeat acknowledged just before the final report, not flushed yet.
    await fleet.heartbeat(agent["agent_token"], DEPLOYED)
    fleet.clock.advance(seconds=1)
    done = await report(fleet, agent["agent_token"], accepted["command_id"], "succeeded", STEPS)
    assert done["state"] == "offboarded"
    await fleet.flush()  # the late heartbeat lands after the offboard
    return agent, tech, admin


def _statuses(machine: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in machine["components"]}


async def test_a_completed_offboard_records_its_components_as_missing_from_then_on(
    fleet: Harness,
) -> None:
    agent, tech, admin = await _offboarded(fleet)
    machine = await fleet.get(f"/v1/machines/{agent['machine_id']}", tech)
    assert machine["state"] == "offboarded"
    assert machine["offboarded_at"] == "2026-03-02T09:02:01Z"
    gone = {"antivirus": "missing", "dns_protection": "missing", "rmm": "missing"}
    assert _statuses(machine) == gone
    fleet.clock.advance(hours=1)
    (after,) = (await fleet.get("/v1/inventory?as_of=2026-03-02T09:02:01Z", admin))["machines"]
    assert _statuses(after) == gone
    assert after["offboarded_at"] == "2026-03-02T09:02:01Z"
    # History is not rewritten: as of a moment before the completion, the heartbeat then.
    (before,) = (await fleet.get("/v1/inventory?as_of=2026-03-02T09:02:00Z", admin))["machines"]
    assert set(_statuses(before).values()) == {"running"}
    assert before["offboarded_at"] is None
