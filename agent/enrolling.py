"""Enrolling this machine with the collector, and keeping the credential it answers with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent.client import CollectorClient, retrying
from agent.config import AgentConfig
from agent.identity import Identity
from agent.state import Credential, StateStore
from agent.version import agent_version
from wire.clock import Clock, SystemClock
from wire.messages import EnrollRequest

log = logging.getLogger("agent.service")

Sleep = Callable[[float], Awaitable[None]]


class AgentError(Exception):
    """A condition the agent cannot run through (not enrolled, enrollment refused)."""


async def enroll(
    config: AgentConfig,
    identity: Identity,
    client: CollectorClient,
    state: StateStore,
    *,
    retry_sleep: Sleep,
    attempts: int | None = None,
    clock: Clock | None = None,
    previous: Credential | None = None,
) -> Credential:
    """Enroll this machine with the config's `enrollment_token` and store the credential (0600).

    `previous` (the credential being replaced) proves to the collector that this is the same
    agent enrolling again. Without proof the collector may hold known hardware for a
    technician's approval: `AwaitingApproval`, and the previous credential stays as it was.
    """
    if not config.enrollment_token:
        raise AgentError(f"{config.source}: enrollment_token: is required to enroll this machine")
    request = EnrollRequest(
        enrollment_token=config.enrollment_token,
        hardware_id=identity.hardware_id,
        hostname=identity.hostname,
        os=identity.os,
        kind=identity.kind,
        agent_version=agent_version(),
        previous_agent_token=previous.agent_token if previous is not None else None,
    )
    policy = retrying(max_wait=config.retry_max_s, sleep=retry_sleep, attempts=attempts)
    response = None
    async for attempt in policy:
        with attempt:
            response = await client.enroll(request)
    assert response is not None
    credential = Credential(
        agent_id=response.agent_id,
        agent_token=response.agent_token,
        machine_id=response.machine_id,
        collector_url=config.collector_url,
        hardware_id=identity.hardware_id,
        enrolled_at=(clock or SystemClock()).now(),
        heartbeat_interval_s=max(1, response.heartbeat_interval_s),
    )
    await asyncio.to_thread(state.save_credential, credential)
    await asyncio.to_thread(state.clear_reenroll)
    log.info(
        "enrolled with %s as agent %s (machine %s, %s)",
        config.collector_url,
        credential.agent_id,
        credential.machine_id,
        identity.kind,
    )
    return credential
