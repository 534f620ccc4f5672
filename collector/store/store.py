"""The store: one class made of one part per concern, over either engine."""

from __future__ import annotations

from collector.store.audit import Audit
from collector.store.clients import ClientsAndTokens
from collector.store.clones import Clones
from collector.store.commands import Commands
from collector.store.coverage import CoverageHistory
from collector.store.enrollment import Enrollment
from collector.store.heartbeats import Heartbeats
from collector.store.held import HeldEnrollments
from collector.store.inventory import Inventory
from collector.store.lifecycle import Lifecycle
from collector.store.machines import Machines
from collector.store.network import Network
from collector.store.orders import Orders
from collector.store.sql import Engine
from collector.store.users import Users
from collector.store.views import Views


class SQLStore(
    ClientsAndTokens,
    Enrollment,
    HeldEnrollments,
    Heartbeats,
    Commands,
    Orders,
    Audit,
    Views,
    Inventory,
    Lifecycle,
    Machines,
    Network,
    CoverageHistory,
    Clones,
    Users,
):
    """Everything the collector keeps, on the engine given (`collector.store.open_store`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine_name(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.dialect.name

    @property
    def location(self) -> str:
        """Where the state lives: a file path, or a URL without its password."""
        return self._engine.location

    async def close(self) -> None:
        await self._engine.close()
