"""Wires remote commands into the running agent: ledger, verification, offboarding, departure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from agent.client import CollectorClient, Rejected
from agent.commands import CommandHandler, OrderPolicy
from agent.config import AgentConfig
from agent.departure import Departure, OnlyOnce
from agent.ledger import CommandLedger
from agent.offboard import Offboarder
from agent.probes import Prober, Sample
from agent.spool import Spool
from agent.state import Credential
from wire.clock import Clock, SystemClock
from wire.messages import (
    CommandProgressRequest,
    CommandResultRequest,
    RunningStep,
    SignedCommand,
    StepResult,
)

if TYPE_CHECKING:
    from agent.service import Agent

log = logging.getLogger(__name__)

PROGRESS_TIMEOUT_S = 5.0


class AgentCommands:
    """The agent's `on_commands` hook; `attach` the agent once it exists."""

    def __init__(
        self,
        config: AgentConfig,
        client: CollectorClient,
        spool: Spool,
        prober: Prober,
        stop: asyncio.Event,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._spool = spool
        self._prober = prober
        self._stop = stop
        self._clock = clock or SystemClock()
        self._agent: Agent | None = None
        self._no_progress: set[str] = set()
        self.handler = CommandHandler(
            ledger=CommandLedger(config.state_dir),
            keys=config.command_keys,
            credential=self._credential,
            clock=self._clock,
            execute=Offboarder(
                config.components,
                self._probe,
                state_dir=config.state_dir,
                clock=self._clock,
                step_timeout_s=config.uninstall_timeout_s,
                progress=self._progress,
            ),
            report=self._report,
            on_offboarded=OnlyOnce(self._depart),
            orders=OrderPolicy(required=config.offboard_approvals, keys=config.operator_keys),
        )

    def attach(self, agent: Agent) -> None:
        self._agent = agent

    def _running_agent(self) -> Agent:
        if self._agent is None:
            raise RuntimeError("commands arrived before the agent was attached")
        return self._agent

    def _credential(self) -> Credential:
        credential = self._running_agent().credential
        if credential is None:
            raise RuntimeError("commands arrived before enrollment")
        return credential

    def _probe(self) -> Sample:
        return self._prober.sample(executables=self._running_agent().known_executables)

    async def _report(self, command_id: str, result: CommandResultRequest) -> None:
        """Durable in the spool first, then sent (with whatever was spooled before it)."""
        await asyncio.to_thread(self._spool.put_result, command_id, msgspec.json.encode(result))
        with contextlib.suppress(Exception):
            await self._running_agent().flush()

    async def _progress(
        self, command_id: str, steps: Sequence[StepResult], running: RunningStep | None
    ) -> None:
        """Best effort, once per change: an older collector (404) or any failure is ignored."""
        if command_id in self._no_progress:
            return
        body = msgspec.json.encode(CommandProgressRequest(steps=list(steps), running=running))
        try:
            async with asyncio.timeout(PROGRESS_TIMEOUT_S):
                await self._client.send_progress(command_id, body)
        except Rejected as exc:
            if exc.status == 404:
                self._no_progress.add(command_id)
            log.debug("progress of %s not accepted: %s", command_id, exc)
        except Exception as exc:
            log.debug("progress of %s not sent: %s", command_id, exc)

    async def _depart(self, command_id: str) -> None:
        agent = self._running_agent()
        await Departure(
            client=self._client,
            spool=self._spool,
            state_dir=self._config.state_dir,
            self_remove=self._config.self_remove,
            clock=self._clock,
            machine_id=self._credential().machine_id,
            stop=self._stop,
            on_departed=agent.departed,
        )(command_id)

    async def __call__(self, commands: Sequence[SignedCommand]) -> None:
        await self.handler(commands)

    async def resume(self) -> None:
        await self.handler.resume()

    async def unauthorized(self) -> bool:
        """A 401 after a recorded successful offboard means the collector has the result: leave."""
        return await self.handler.depart_if_offboarded()
