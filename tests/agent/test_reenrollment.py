"""Enrolling known hardware again (issue 16): the agent proves its previous credential, and an
enrollment the collector holds for a technician is said so clearly, keeps the old credential and
is asked again by `run` until it is approved. The collector is a stand-in here
(`fake_collector.py`): it answers the 202 the real collector gives to an unproven re-enrollment."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.agent.conftest import Agent, until
from tests.agent.fake_collector import FakeCollector, Reply

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

MakeAgent = Callable[..., Agent]
HELD = Reply(
    202,
    {
        "state": "awaiting_approval",
        "detail": "known hardware; approve with machine approve-reenroll",
    },
)


def enrolled_as(agent_id: str, token: str) -> Reply:
    return Reply(
        201,
        {
            "agent_id": agent_id,
            "agent_token": token,
            "machine_id": "machine-1",
            "heartbeat_interval_s": 1,
        },
    )


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeCollector, str]:
    collector = FakeCollector()
    collector.defaults["/v1/heartbeat"] = Reply(200, {"next_heartbeat_s": 1, "commands": []})
    server = await aiohttp_server(collector.app())
    return collector, str(server.make_url("")).rstrip("/")


async def command(agent: Agent, *args: str) -> Any:
    return await asyncio.to_thread(agent.command, *args)


async def test_enroll_force_proves_the_previous_credential(
    fake: tuple[FakeCollector, str], make_agent: MakeAgent
) -> None:
    collector, url = fake
    collector.script("/v1/enroll", enrolled_as("agent-1", "rmmag_first-token-0001"))
    collector.script("/v1/enroll", enrolled_as("agent-2", "rmmag_second-token-002"))
    agent = make_agent(url, enrollment_token="rmmen_token")
    assert (await command(agent, "enroll")).returncode == 0
    assert (await command(agent, "enroll", "--force")).returncode == 0
    first, second = (r.json() for r in collector.to("/v1/enroll"))
    assert first.get("previous_agent_token") is None
    assert second["previous_agent_token"] == "rmmag_first-token-0001"
    assert agent.credential()["agent_id"] == "agent-2"


async def test_a_held_enrollment_says_so_keeps_the_old_credential_and_run_asks_again(
    fake: tuple[FakeCollector, str], make_agent: MakeAgent
) -> None:
    collector, url = fake
    collector.script("/v1/enroll", enrolled_as("agent-1", "rmmag_first-token-0001"), HELD, HELD)
    agent = make_agent(url, enrollment_token="rmmen_token", enroll_retry_s=1)
    assert (await command(agent, "enroll")).returncode == 0
    before = agent.credential()

    held = await command(agent, "enroll", "--force")
    assert held.returncode == 3
    assert "rmm-collector machine approve-reenroll" in held.stderr
    assert "held" in held.stderr and "keeps its current credential" in held.stderr
    assert agent.credential() == before
    status = json.loads((await command(agent, "status", "--json")).stdout)
    assert status["reenroll_pending"] is True

    # `run` heartbeats with the old credential while it asks again (held once more, then 201).
    collector.script("/v1/enroll", enrolled_as("agent-2", "rmmag_second-token-002"))
    agent.start()

    def tokens() -> list[str | None]:
        return [r.headers.get("Authorization") for r in collector.to("/v1/heartbeat")]

    await until(
        lambda: "Bearer rmmag_second-token-002" in tokens(),
        within=30,
        what="heartbeats with the new credential",
        on_timeout=agent.log,
    )
    assert tokens()[0] == "Bearer rmmag_first-token-0001"
    assert len(collector.to("/v1/enroll")) == 4  # enroll, held, held again, approved
    assert all(
        r.json()["previous_agent_token"] == "rmmag_first-token-0001"
        for r in collector.to("/v1/enroll")[1:]
    )
    assert agent.credential()["agent_id"] == "agent-2"
    assert not (agent.state_dir / "reenroll-pending.json").exists()


async def test_a_first_enrollment_that_is_held_is_retried_by_run_until_approved(
    fake: tuple[FakeCollector, str], make_agent: MakeAgent
) -> None:
    collector, url = fake
    collector.script("/v1/enroll", HELD, enrolled_as("agent-1", "rmmag_first-token-0001"))
    agent = make_agent(url, enrollment_token="rmmen_token", enroll_retry_s=1)
    agent.start()
    await until(
        lambda: collector.to("/v1/heartbeat"), within=30, what="a heartbeat", on_timeout=agent.log
    )
    assert len(collector.to("/v1/enroll")) == 2
    assert "approve-reenroll" in agent.log()


async def test_control_characters_in_a_host_name_never_reach_the_terminal(
    fake: tuple[FakeCollector, str], make_agent: MakeAgent
) -> None:
    collector, url = fake
    agent = make_agent(url, enrollment_token="rmmen_token")
    agent.hostname = "evil\x1b[2J\x07host"
    assert (await command(agent, "enroll")).returncode == 0
    status = await command(agent, "status")
    assert "\x1b" not in status.stdout and "\x07" not in status.stdout
    assert "evil\ufffd[2J\ufffdhost" in status.stdout
    assert collector.to("/v1/enroll")[0].json()["hostname"] == "evil\x1b[2J\x07host"
