"""Enrolling virtual agents: over HTTP like real agents, or in bulk into the collector's state."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import aiohttp

from collector.settings import Settings
from collector.store import open_store
from collector.store.base import EnrollOutcome, EnrollRequestRecord, Facts, Store
from collector.tokens import hash_token, new_token
from fleetsim.fleet import FleetError, VirtualAgent, hardware_id, kind_of


@dataclass(frozen=True, slots=True)
class EnrollReport:
    agents: list[VirtualAgent]
    seconds: float
    client_id: str | None = None

    @property
    def rate(self) -> float:
        return len(self.agents) / self.seconds if self.seconds > 0 else 0.0


async def enroll_over_http(
    collector: str,
    enrollment_token: str,
    count: int,
    *,
    prefix: str = "sim",
    start: int = 0,
    concurrency: int = 64,
    timeout_s: float = 30.0,
) -> EnrollReport:
    """Enroll `count` agents through `POST /v1/enroll`, `concurrency` at a time."""
    agents: list[VirtualAgent | None] = [None] * count
    next_index = 0
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async with aiohttp.ClientSession(
        base_url=collector, connector=connector, timeout=timeout
    ) as session:

        async def worker() -> None:
            nonlocal next_index
            while next_index < count:
                slot = next_index
                next_index += 1
                index = start + slot
                hostname = f"{prefix}-host-{index:07d}"
                body = {
                    "enrollment_token": enrollment_token,
                    "hardware_id": hardware_id(prefix, index),
                    "hostname": hostname,
                    "os": "Windows 11 Pro 23H2",
                    "kind": kind_of(index),
                    "agent_version": "fleetsim",
                }
                async with session.post("/v1/enroll", json=body) as response:
                    reply = await response.json(content_type=None)
                    if response.status != 201:
                        raise FleetError(
                            f"enrollment {index} refused: {response.status} "
                            f"{reply.get('error')}: {reply.get('detail')}"
                        )
                agents[slot] = VirtualAgent(
                    hardware_id=hardware_id(prefix, index),
                    hostname=hostname,
                    kind=kind_of(index),
                    agent_id=reply["agent_id"],
                    machine_id=reply["machine_id"],
                    token=reply["agent_token"],
                )

        try:
            await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
        except aiohttp.ClientError as exc:
            raise FleetError(f"the collector at {collector} does not answer: {exc}") from exc
    done = [a for a in agents if a is not None]
    return EnrollReport(done, time.perf_counter() - started)


@runtime_checkable
class BulkEnrollingStore(Protocol):
    async def enroll_new_machines_in_bulk(
        self, requests: Sequence[EnrollRequestRecord], *, now: datetime
    ) -> list[EnrollOutcome]: ...


async def enroll_into_store(
    store: Store,
    client_name: str,
    count: int,
    *,
    prefix: str = "sim",
    start: int = 0,
    now: datetime | None = None,
    chunk: int = 5000,
) -> EnrollReport:
    """Enroll `count` new machines for `client_name` (created if needed) straight into the state.

    Each is recorded as an enrollment through the API would record it (machine, coverage, facts,
    agent token, audit entry); only the HTTP round trip is skipped, so a large fleet is set up in
    seconds rather than minutes.
    """
    moment = now or datetime.now(UTC)
    client = await store.find_client(client_name)
    if client is None:
        client = await store.create_client(client_name, now=moment, actor="fleetsim")
    enrollment = new_token("enrollment")
    await store.add_enrollment_token(
        client.client_id,
        hash_token(enrollment),
        expires_at=moment + timedelta(days=1),
        now=moment,
        actor="fleetsim",
    )
    started = time.perf_counter()
    agents: list[VirtualAgent] = []
    for first in range(start, start + count, chunk):
        indexes = range(first, min(first + chunk, start + count))
        tokens = [new_token("agent") for _ in indexes]
        requests = [
            EnrollRequestRecord(
                enrollment_token_hash=hash_token(enrollment),
                hardware_id=hardware_id(prefix, index),
                facts=Facts(
                    f"{prefix}-host-{index:07d}", "Windows 11 Pro 23H2", kind_of(index), "[]"
                ),
                agent_id=str(uuid.uuid4()),
                agent_token_hash=hash_token(token),
                agent_version="fleetsim",
            )
            for index, token in zip(indexes, tokens, strict=True)
        ]
        if isinstance(store, BulkEnrollingStore):
            outcomes = await store.enroll_new_machines_in_bulk(requests, now=moment)
        else:
            gap_s = Settings().online_window_s
            outcomes = [await store.enroll(r, now=moment, gap_s=gap_s) for r in requests]
        agents.extend(
            VirtualAgent(
                hardware_id=r.hardware_id,
                hostname=r.facts.hostname,
                kind=kind_of(index),
                agent_id=o.agent_id,
                machine_id=o.machine_id,
                token=token,
            )
            for index, r, o, token in zip(indexes, requests, outcomes, tokens, strict=True)
        )
    return EnrollReport(agents, time.perf_counter() - started, client.client_id)


async def enroll_into_database(
    db: str, client_name: str, count: int, *, prefix: str = "sim", start: int = 0
) -> EnrollReport:
    store = await open_store(db)
    try:
        return await enroll_into_store(store, client_name, count, prefix=prefix, start=start)
    finally:
        await store.close()
