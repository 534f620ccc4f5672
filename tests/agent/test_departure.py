"""The agent departs once: after a restart the resumed offboard and the 401 a heartbeat meets
once the collector has the final report can ask for the departure at the same moment (seen as
the state folder removed under a departure still writing its tombstone)."""

from __future__ import annotations

import asyncio

from agent.departure import OnlyOnce


async def test_two_callers_at_once_get_one_departure_and_both_wait_for_it() -> None:
    started: list[str] = []
    running, release = asyncio.Event(), asyncio.Event()

    async def depart(command_id: str) -> None:
        started.append(command_id)
        running.set()
        await release.wait()

    once = OnlyOnce(depart)
    resumed = asyncio.create_task(once("cmd-1"))
    refused_heartbeat = asyncio.create_task(once("cmd-1"))
    await asyncio.wait_for(running.wait(), 5)
    await asyncio.sleep(0.05)  # the second caller had every chance to start its own
    assert started == ["cmd-1"]
    assert not resumed.done() and not refused_heartbeat.done()
    release.set()
    await asyncio.gather(resumed, refused_heartbeat)
    await once("cmd-1")  # asked again later: done already, nothing runs twice
    assert started == ["cmd-1"]
