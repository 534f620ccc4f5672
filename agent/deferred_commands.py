"""The `on_commands` hooks, with the command machinery imported only once it is needed.

Verification, the ledger, offboarding and departure cost the agent about a megabyte of resident
memory. Most agents never receive a command, so they are loaded at the first delivery, or at
start when the ledger shows earlier work (an interrupted command, an owed departure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from wire.messages import SignedCommand

if TYPE_CHECKING:
    from agent.client import CollectorClient
    from agent.probes import Prober
    from agent.remote_commands import AgentCommands
    from agent.service import Agent
    from agent.spool import Spool

LEDGER_FILE = "commands.json"  # agent.ledger.LEDGER_FILE, without importing it


class DeferredCommands:
    def __init__(
        self,
        config: AgentConfig,
        client: CollectorClient,
        spool: Spool,
        prober: Prober,
        stop: asyncio.Event,
    ) -> None:
        self._args = (config, client, spool, prober, stop)
        self._config = config
        self._agent: Agent | None = None
        self._loaded: AgentCommands | None = None
        self._lock = asyncio.Lock()

    def attach(self, agent: Agent) -> None:
        self._agent = agent
        if self._loaded is not None:
            self._loaded.attach(agent)

    async def _commands(self) -> AgentCommands:
        async with self._lock:
            if self._loaded is None:
                from agent.remote_commands import AgentCommands

                self._loaded = await asyncio.to_thread(AgentCommands, *self._args)
                if self._agent is not None:
                    self._loaded.attach(self._agent)
            return self._loaded

    def _ledger_exists(self) -> bool:
        return (self._config.state_dir / LEDGER_FILE).exists()

    async def __call__(self, commands: Sequence[SignedCommand]) -> None:
        await (await self._commands())(commands)

    async def resume(self) -> None:
        if self._loaded is not None or await asyncio.to_thread(self._ledger_exists):
            await (await self._commands()).resume()

    async def unauthorized(self) -> bool:
        if self._loaded is None and not await asyncio.to_thread(self._ledger_exists):
            return False
        return await (await self._commands()).unauthorized()
