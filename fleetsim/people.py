"""What the simulator asks through the people's API: offboards, and the collector's view."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp

from fleetsim.fleet import FleetError, VirtualAgent
from fleetsim.load import Acknowledged
from wire.times import parse_instant


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _json(response: aiohttp.ClientResponse, expected: int) -> dict[str, object]:
    body = await response.json(content_type=None)
    if response.status != expected:
        raise FleetError(
            f"{response.method} {response.url.path}: {response.status} "
            f"{body.get('error')}: {body.get('detail')}"
        )
    return body  # type: ignore[no-any-return]


async def request_offboards(
    collector: str,
    technician_token: str,
    agents: Sequence[VirtualAgent],
    count: int,
    *,
    seed: int = 1,
) -> dict[str, str]:
    """Ask for `count` random agents to be offboarded; their command ids by machine id."""
    chosen = random.Random(seed).sample(list(agents), min(count, len(agents)))
    commands: dict[str, str] = {}
    async with aiohttp.ClientSession(base_url=collector) as session:
        for agent in chosen:
            async with session.post(
                f"/v1/machines/{agent.machine_id}/offboard",
                json={"reason": "fleet simulation", "ticket": "SIM"},
                headers=_headers(technician_token),
            ) as response:
                body = await _json(response, 202)
            commands[agent.machine_id] = str(body["command_id"])
    return commands


async def command_states(collector: str, token: str, command_ids: Sequence[str]) -> dict[str, str]:
    async with aiohttp.ClientSession(base_url=collector) as session:

        async def state(command_id: str) -> tuple[str, str]:
            async with session.get(f"/v1/commands/{command_id}", headers=_headers(token)) as r:
                return command_id, str((await _json(r, 200))["state"])

        return dict(await asyncio.gather(*(state(c) for c in command_ids)))


async def last_seen_by_machine(collector: str, token: str) -> dict[str, datetime]:
    """Every machine's last-seen as the collector reports it (all pages)."""
    seen: dict[str, datetime] = {}
    cursor: str | None = None
    async with aiohttp.ClientSession(base_url=collector) as session:
        while True:
            params = {"limit": "10000", **({"cursor": cursor} if cursor else {})}
            async with session.get("/v1/machines", params=params, headers=_headers(token)) as r:
                page = await _json(r, 200)
            for machine in page["machines"]:  # type: ignore[attr-defined]
                seen[machine["machine_id"]] = parse_instant(machine["last_seen"])
            cursor = page.get("next_cursor")  # type: ignore[assignment]
            if not cursor:
                return seen


@dataclass(frozen=True, slots=True)
class LossReport:
    checked: int
    lost: list[str]  # machine ids whose last acknowledged heartbeat the collector does not show


def find_lost(
    acknowledged: Mapping[str, Acknowledged],
    seen: Mapping[str, datetime],
    *,
    clock_skew_s: float = 0.0,
) -> LossReport:
    """An acknowledged heartbeat is lost when the collector's last-seen is older than its send.

    The collector stamps a heartbeat with its own clock when it receives it, so its last-seen is
    at or after the moment the simulator sent it (give `clock_skew_s` for another host's clock).
    """
    lost = []
    for machine_id, ack in acknowledged.items():
        last_seen = seen.get(machine_id)
        if last_seen is None or last_seen.timestamp() < ack.sent - clock_skew_s:
            lost.append(machine_id)
    return LossReport(len(acknowledged), sorted(lost))
