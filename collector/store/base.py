"""The storage interface and the records it speaks in.

Instants are timezone-aware UTC datetimes here; each engine chooses its own column types.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Role = Literal["admin", "technician", "billing", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "technician", "billing", "viewer")
OffboardState = Literal["offboard_pending", "offboarded", "offboard_failed"]
MachineState = Literal[
    "online", "offline", "expired", "offboard_pending", "offboarded", "offboard_failed"
]
MACHINE_STATES: tuple[MachineState, ...] = (
    "online",
    "offline",
    "expired",
    "offboard_pending",
    "offboarded",
    "offboard_failed",
)


class StoreError(Exception):
    """The store cannot do what was asked (the message says why)."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class InvalidText(StoreError):
    """Text the engine cannot store or search for: PostgreSQL holds no NUL character."""


class NotOwner(StoreError):
    """An agent spoke about a command that is not its own."""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EnrollmentTokenInfo:
    token_id: str
    client_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    token_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who an agent token belongs to; the machine is always the token's, never a request body's."""

    agent_id: str
    machine_id: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Facts:
    hostname: str
    os: str
    kind: str
    components_json: str


@dataclass(frozen=True, slots=True)
class EnrollRequestRecord:
    enrollment_token_hash: str
    hardware_id: str
    facts: Facts
    agent_id: str
    agent_token_hash: str
    agent_version: str | None


@dataclass(frozen=True, slots=True)
class EnrollOutcome:
    agent_id: str
    machine_id: str
    client_id: str
    reenrolled: bool


@dataclass(slots=True)
class HeartbeatRecord:
    """Heartbeats of one machine coalesced between two flushes."""

    machine_id: str
    first_at: datetime
    last_at: datetime
    hostname: str | None
    os: str | None
    kind: str | None
    components_json: str


@dataclass(frozen=True, slots=True)
class MachineRecord:
    machine_id: str
    client_id: str
    hardware_id: str
    hostname: str
    os: str
    kind: str
    first_seen: datetime
    last_seen: datetime
    components_json: str
    offboard_state: OffboardState | None
    offboarded_at: datetime | None
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class MachineFilter:
    client_id: str | None = None
    state: MachineState | None = None
    kind: str | None = None
    hostname_contains: str | None = None
    after_machine_id: str | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class InventoryRecord:
    machine_id: str
    client_id: str
    hostname: str
    kind: str
    first_seen: datetime
    last_seen: datetime
    offboarded_at: datetime | None
    components_json: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    before_id: int | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class AgentEvent:
    event_id: str
    at: datetime
    type: str
    detail_json: str


CommandState = Literal["offboard_pending", "offboarded", "offboard_failed"]
COMMAND_STATES: tuple[CommandState, ...] = ("offboard_pending", "offboarded", "offboard_failed")


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A remote command and where it stands; for offboarding its state mirrors the machine's."""

    command_id: str
    type: str
    machine_id: str
    client_id: str
    agent_id: str
    sequence: int
    state: CommandState
    issuer: str
    reason: str
    ticket: str | None
    created_at: datetime
    delivered_at: datetime | None
    delivery_count: int
    completed_at: datetime | None
    result_status: str | None
    result_reason: str | None
    steps_json: str | None
    rejections: int


@dataclass(frozen=True, slots=True)
class CommandFilter:
    state: CommandState | None = None
    machine_id: str | None = None
    after_command_id: str | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class OffboardRequestRecord:
    machine_id: str
    issuer: str
    reason: str
    ticket: str | None


@dataclass(frozen=True, slots=True)
class CommandResultRecord:
    command_id: str
    status: Literal["succeeded", "failed", "rejected"]
    reason: str | None
    steps_json: str


@dataclass(frozen=True, slots=True)
class ExposureRow:
    machine_id: str
    client_id: str
    hostname: str
    kind: str
    last_seen: datetime
    offboard_state: OffboardState | None
    command_id: str | None
    requested_at: datetime | None


@dataclass(frozen=True, slots=True)
class StateWindows:
    """Clock-derived state boundaries, computed once per query from the collector's clock."""

    now: datetime
    online_since: datetime  # seen at or after this: online
    expired_before: datetime  # last seen at or before this: expired (30 days = 720 hours)


class Store(Protocol):
    """Everything the collector keeps. Writes are durable when the awaited call returns."""

    async def close(self) -> None: ...

    # clients and enrollment tokens
    async def create_client(self, name: str, *, now: datetime, actor: str) -> Client: ...
    async def list_clients(self) -> list[Client]: ...
    async def find_client(self, name_or_id: str) -> Client | None: ...
    async def add_enrollment_token(
        self, client_id: str, token_hash: str, *, expires_at: datetime, now: datetime, actor: str
    ) -> EnrollmentTokenInfo: ...
    async def list_enrollment_tokens(self, client_id: str) -> list[EnrollmentTokenInfo]: ...
    async def revoke_enrollment_tokens(
        self, client_id: str, *, token_id: str | None, now: datetime, actor: str
    ) -> int: ...

    # API tokens for people and jobs
    async def add_api_token(
        self, name: str, role: Role, token_hash: str, *, now: datetime, actor: str
    ) -> ApiTokenInfo: ...
    async def list_api_tokens(self) -> list[ApiTokenInfo]: ...
    async def revoke_api_token(self, name: str, *, now: datetime, actor: str) -> bool: ...
    async def find_api_token(self, token_hash: str) -> ApiTokenInfo | None: ...

    # agents
    async def enroll(
        self, request: EnrollRequestRecord, *, now: datetime, gap_s: float
    ) -> EnrollOutcome: ...
    async def find_agent(self, token_hash: str) -> AgentIdentity | None: ...
    async def revocations_since(self, seq: int) -> tuple[list[str], int]:
        """Token digests revoked after `seq`, and the newest seq (-1: only the newest seq)."""
        ...

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None: ...
    async def record_events(
        self, identity: AgentIdentity, events: Sequence[AgentEvent], *, now: datetime
    ) -> int: ...
    async def list_events(self, machine_id: str, *, limit: int) -> list[AgentEvent]: ...

    # machines and inventory
    async def get_machine(self, machine_id: str) -> MachineRecord | None: ...
    async def list_machines(
        self, machine_filter: MachineFilter, windows: StateWindows
    ) -> list[MachineRecord]: ...
    async def count_machines_by_state(self, windows: StateWindows) -> dict[MachineState, int]: ...
    def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncGenerator[bytes, None]:
        """Every machine enrolled before `as_of`, each field as it stood then, as batches of
        JSON objects joined by commas (see `collector.store.inventory_json`)."""
        ...

    def iter_inventory(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncIterator[list[InventoryRecord]]:
        """The same batches as records."""
        ...

    async def expire_machines(self, windows: StateWindows) -> list[str]: ...

    # remote commands (offboarding)
    async def request_offboard(
        self, request: OffboardRequestRecord, *, now: datetime
    ) -> tuple[CommandRecord, bool]:
        """The pending offboard of the machine, created unless one is pending (then `False`)."""
        ...

    async def get_command(self, command_id: str) -> CommandRecord | None: ...
    async def list_commands(self, command_filter: CommandFilter) -> list[CommandRecord]: ...
    async def machines_with_open_commands(self) -> set[str]: ...
    async def commands_for_delivery(
        self, identity: AgentIdentity, *, now: datetime
    ) -> list[CommandRecord]:
        """Open commands for the machine, bound to its current agent, counted as delivered."""
        ...

    async def record_command_result(
        self, identity: AgentIdentity, result: CommandResultRecord, *, now: datetime
    ) -> CommandRecord:
        """Apply an agent's report; `rejected` is audited and never ends the command."""
        ...

    async def licence_exposure(
        self, windows: StateWindows, *, pending_before: datetime
    ) -> tuple[list[ExposureRow], list[ExposureRow]]:
        """Machines expired without a completed offboard, and offboards pending too long."""
        ...

    # audit
    async def add_audit(self, entry: AuditEntry) -> None: ...
    async def list_audit(self, audit_filter: AuditFilter) -> list[tuple[int, AuditEntry]]: ...

    # aggregates and pages for the NOC's web pages (server-side, so they stay fast on big fleets)
    async def client_overview(
        self, windows: StateWindows, *, stale_before: datetime, pending_before: datetime
    ) -> list[ClientOverview]:
        """Every client (those without machines too) with its machines counted by state."""
        ...

    async def machine_page(self, query: MachineQuery, windows: StateWindows) -> MachinePage:
        """One page of machines matching `query`, and how many match in all."""
        ...

    async def presence_history(self, machine_id: str, *, since: datetime) -> PresenceHistory:
        """Runs of presence ending at or after `since`, and every coverage period."""
        ...

    async def offboards_needing_attention(
        self, *, pending_before: datetime, limit: int
    ) -> tuple[list[OffboardAttention], list[OffboardAttention]]:
        """Offboards pending since `pending_before` or earlier (oldest first), and failed
        offboards not asked again since (newest first); at most `limit` of each."""
        ...


def machine_state(record: MachineRecord, windows: StateWindows) -> MachineState:
    """The state a person sees, derived from the collector's clock and any offboarding."""
    if record.offboard_state is not None:
        return record.offboard_state
    if record.last_seen <= windows.expired_before:
        return "expired"
    if record.last_seen >= windows.online_since:
        return "online"
    return "offline"


ComponentStatusFilter = Literal["running", "stopped", "missing", "gap", "covered"]
COMPONENT_STATUS_FILTERS: tuple[ComponentStatusFilter, ...] = (
    "running",
    "stopped",
    "missing",
    "gap",
    "covered",
)
MachineSort = Literal["hostname", "last_seen"]


@dataclass(frozen=True, slots=True)
class ClientOverview:
    """One client's machines counted by state, with what a person should look at.

    `in_inventory` counts machines billed if the cutoff were now (not offboarded, not expired);
    `covered` those of them reporting components with every required one running. `stale` counts
    machines offline (no offboard asked) since `stale_before` or earlier yet still in inventory,
    `exposed` machines expired without a completed offboard, `pending_overdue` offboards pending
    since `pending_before` or earlier.
    """

    client_id: str
    name: str
    by_state: dict[MachineState, int]
    in_inventory: int
    covered: int
    stale: int
    exposed: int
    pending_overdue: int

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


@dataclass(frozen=True, slots=True)
class MachineQuery:
    """Filters of the machines list.

    Without `component`, `component_status` running/stopped/missing keeps machines with any
    component in that status; `gap` keeps machines not covered (no components reported, or a
    required one not running) and `covered` the others. With `component`, it is about that
    component: `missing` also matches machines not reporting it at all, `gap` machines where it is
    not running (or absent), `covered` machines where it runs. `seen_before` keeps machines last
    seen at or before it; `exposed` keeps machines expired without a completed offboard.
    """

    client_id: str | None = None
    state: MachineState | None = None
    kind: str | None = None
    hostname_contains: str | None = None
    component: str | None = None
    component_status: ComponentStatusFilter | None = None
    seen_before: datetime | None = None
    exposed: bool = False
    sort: MachineSort = "hostname"
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class MachinePage:
    machines: list[MachineRecord]
    total: int


@dataclass(frozen=True, slots=True)
class PresenceRun:
    """Seen continuously (no gap longer than the online window) from `start` to `end`."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class CoveragePeriod:
    first_seen: datetime
    offboarded_at: datetime | None


@dataclass(frozen=True, slots=True)
class PresenceHistory:
    runs: list[PresenceRun]
    coverage: list[CoveragePeriod]


@dataclass(frozen=True, slots=True)
class OffboardAttention:
    command: CommandRecord
    hostname: str
