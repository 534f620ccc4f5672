"""Heartbeats at a set rate from a fleet of virtual agents, answering the commands they get.

The schedule is open-loop: heartbeat `i` is due at `start + i / rate`, whoever is free sends it,
so a slow collector shows up as latency and lag rather than as a quietly lower rate. Agent `i %
len(agents)` sends heartbeat `i`: every agent beats once per `len(agents) / rate` seconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetsim.fleet import FleetError, HeartbeatBodies, VirtualAgent
from wire.messages import CommandResultRequest, HeartbeatResponse, SignedCommand
from wire.signing import CommandRejected, verify_command


@dataclass(frozen=True, slots=True)
class LoadPlan:
    collectors: Sequence[str]
    rate: float
    duration_s: float
    connections: int = 64
    new_connection: bool = False
    # share of heartbeats reporting a component stopped (a change of facts)
    change_share: float = 0.0
    timeout_s: float = 10.0
    seed: int = 1


@dataclass(slots=True)
class Acknowledged:
    """The last heartbeat the collector acknowledged for one agent (wall-clock seconds)."""

    sent: float
    received: float


@dataclass(slots=True)
class CommandStats:
    received: int = 0
    verified: int = 0
    refused: int = 0
    results_sent: int = 0
    offboarded_agents: set[str] = field(default_factory=set)


@dataclass(slots=True)
class LoadReport:
    planned: int
    sent: int
    ok: int
    errors: Counter[str]
    seconds: float
    latencies_ms: array  # type: ignore[type-arg]
    max_lag_ms: float
    acknowledged: dict[str, Acknowledged]
    commands: CommandStats

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, share: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


_decode_reply = msgspec.json.Decoder(HeartbeatResponse).decode
_encode = msgspec.json.Encoder().encode


class CommandAnswerer:
    """Verifies each signed command as the agent would, and reports the outcome once."""

    def __init__(self, pinned: dict[str, Ed25519PublicKey], stats: CommandStats) -> None:
        self._pinned = pinned
        self._stats = stats
        self._answered: set[str] = set()

    async def answer(
        self,
        session: aiohttp.ClientSession,
        base: str,
        agent: VirtualAgent,
        command: SignedCommand,
        limits: aiohttp.ClientTimeout,
    ) -> None:
        self._stats.received += 1
        if command.command_id in self._answered:
            return  # a re-delivery of a command already carried out
        try:
            payload, _ = verify_command(command, self._pinned)
            if payload.agent_id != agent.agent_id or payload.machine_id != agent.machine_id:
                raise CommandRejected("wrong_target", "the command is for another agent")
            result = CommandResultRequest(status="succeeded", steps=[])
            self._stats.verified += 1
        except CommandRejected as exc:
            result = CommandResultRequest(status="rejected", reason=f"{exc.code}: {exc.detail}")
            self._stats.refused += 1
        async with session.post(
            f"{base}/v1/commands/{command.command_id}/result",
            data=_encode(result),
            headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
            timeout=limits,
        ) as response:
            await response.read()
            if 200 <= response.status < 300:
                self._stats.results_sent += 1
                if result.status == "succeeded":
                    self._answered.add(command.command_id)
                    self._stats.offboarded_agents.add(agent.agent_id)


async def run_load(
    plan: LoadPlan,
    agents: Sequence[VirtualAgent],
    *,
    pinned: dict[str, Ed25519PublicKey] | None = None,
) -> LoadReport:
    if plan.rate <= 0 or plan.duration_s <= 0:
        raise FleetError("rate and duration must be positive")
    pinned = pinned or {}
    bodies = HeartbeatBodies(agents, sorted(pinned) or None)
    planned = int(plan.rate * plan.duration_s)
    rng = random.Random(plan.seed)
    stats = CommandStats()
    answerer = CommandAnswerer(pinned, stats)
    latencies: array = array("d")  # type: ignore[type-arg]
    errors: Counter[str] = Counter()
    acknowledged: dict[str, Acknowledged] = {}
    counters = {"next": 0, "sent": 0, "ok": 0}
    max_lag = 0.0
    timeout = aiohttp.ClientTimeout(total=plan.timeout_s)
    connector = aiohttp.TCPConnector(
        limit=plan.connections, force_close=plan.new_connection, limit_per_host=0
    )
    started = time.perf_counter()
    wall_offset = time.time() - started

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal max_lag
            while counters["next"] < planned:
                i = counters["next"]
                counters["next"] += 1
                due = started + i / plan.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    max_lag = max(max_lag, -delay)
                slot = i % len(agents)
                agent = agents[slot]
                if agent.agent_id in stats.offboarded_agents:
                    continue  # offboarded: its token is revoked and it no longer runs
                base = plan.collectors[i % len(plan.collectors)]
                body = (
                    bodies.changed(agent, slot, rng, 0.5)
                    if plan.change_share and rng.random() < plan.change_share
                    else bodies.steady(slot)
                )
                sent = time.perf_counter()
                counters["sent"] += 1
                try:
                    async with session.post(
                        f"{base}/v1/heartbeat",
                        data=body,
                        headers={
                            "Authorization": f"Bearer {agent.token}",
                            "Content-Type": "application/json",
                        },
                    ) as response:
                        raw = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                received = time.perf_counter()
                if status != 200:
                    errors[f"http_{status}"] += 1
                    continue
                counters["ok"] += 1
                latencies.append((received - sent) * 1000)
                acknowledged[agent.machine_id] = Acknowledged(
                    sent + wall_offset, received + wall_offset
                )
                reply = _decode_reply(raw)
                for command in reply.commands:
                    try:
                        await answerer.answer(session, base, agent, command, timeout)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        errors[f"result_{type(exc).__name__}"] += 1

        await asyncio.gather(*(worker() for _ in range(plan.connections)))
    return LoadReport(
        planned=planned,
        sent=counters["sent"],
        ok=counters["ok"],
        errors=errors,
        seconds=time.perf_counter() - started,
        latencies_ms=latencies,
        max_lag_ms=max_lag * 1000,
        acknowledged=acknowledged,
        commands=stats,
    )
