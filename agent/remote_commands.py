"""Wires remote commands into the running agent: ledger, verification, offboarding, departure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from agent.client import CollectorClient
from agent.commands import CommandHandler, CommandLedger
from agent.config import AgentConfig
from agent.departure import Departure
from agent.offboard import Offboarder
from agent.probes import Prober, Sample
from agent.spool import Spool
from agent.state import Credential
from wire.clock import Clock, SystemClock
from wire.messages import CommandResultRequest, SignedCommand

if TYPE_CHECKING:
    from agent.service import Agent


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
        self.handler = CommandHandler(
            ledger=CommandLedger(config.state_dir),
            keys=config.command_keys,
            credential=self._credential,
            clock=self._clock,
            execute=Offboarder(
                config.components, self._probe, step_timeout_s=config.uninstall_timeout_s
            ),
            report=self._report,
            on_offboarded=self._depart,
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

    async def _depart(self, command_id: str) -> None:
        await Departure(
            client=self._client,
            spool=self._spool,
            state_dir=self._config.state_dir,
            self_remove=self._config.self_remove,
            clock=self._clock,
            machine_id=self._credential().machine_id,
            stop=self._stop,
        )(command_id)

    async def __call__(self, commands: Sequence[SignedCommand]) -> None:
        await self.handler(commands)

    async def resume(self) -> None:
        await self.handler.resume()
