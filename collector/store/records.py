"""The records the store speaks in, and the errors it raises.

Instants are timezone-aware UTC datetimes here; each engine chooses its own column types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["admin", "technician", "billing", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "technician", "billing", "viewer")
# What the machine row's `offboard_state` may hold: an offboard under way or done, or the end of
# this client's record because the same hardware enrolled under another client (`moved`).
OffboardState = Literal[
    "awaiting_approval", "offboard_pending", "offboarded", "offboard_failed", "moved"
]
MachineState = Literal[
    "online",
    "offline",
    "expired",
    "awaiting_approval",
    "offboard_pending",
    "offboarded",
    "offboard_failed",
    "moved",
]
MACHINE_STATES: tuple[MachineState, ...] = (
    "online",
    "offline",
    "expired",
    "awaiting_approval",
    "offboard_pending",
    "offboarded",
    "offboard_failed",
    "moved",
)
# States in which the machine's record is closed: neither in inventory nor licence exposure.
ENDED_STATES: tuple[OffboardState, ...] = ("offboarded", "moved")


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
    max_uses: int | None = None  # None: as many machines as the client has
    uses: int = 0


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    token_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    # The clients whose machines the token may see and act on; None = every client.
    clients: frozenset[str] | None = None

    def sees(self, client_id: str) -> bool:
        return self.clients is None or client_id in self.clients


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who an agent token belongs to; the machine is always the token's, never a request body's."""

    agent_id: str
    machine_id: str
    client_id: str
    # What the agent last said it requires of an offboard order (`rules.orders.policy_text`).
    approval_policy: str = ""


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
    # Digest of the agent token the request says it had before (proof for known hardware).
    previous_agent_token_hash: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class EnrollOutcome:
    agent_id: str
    machine_id: str
    client_id: str
    reenrolled: bool
    # Enrolled, or held until a technician approves (`machine_id` is then the known machine's).
    held: bool = False
    # Another client's record this enrollment ended (a move), if any.
    moved_from: str | None = None


class TokenUsedUp(StoreError):
    """The enrollment token has enrolled as many machines as it may."""


@dataclass(frozen=True, slots=True)
class HeldEnrollmentInfo:
    machine_id: str
    client_id: str
    hardware_id: str
    hostname: str
    address: str | None
    first_at: datetime
    last_at: datetime
    attempts: int


@dataclass(slots=True)
class HeartbeatRecord:
    """Heartbeats of one machine coalesced between two flushes (None: the agent did not say)."""

    machine_id: str
    first_at: datetime
    last_at: datetime
    hostname: str | None
    os: str | None
    kind: str | None
    components_json: str
    # At the last of them: the agent's clock minus the collector's, its version, who is logged in.
    clock_offset_ms: int | None = None
    agent_version: str | None = None
    users: list[str] | None = None


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
    clock_offset_ms: int | None = None
    # A kind the agent reported that differs from the billed `kind`, until an admin confirms.
    pending_kind: str | None = None
    # Two live copies are suspected behind this record (see `collector.rules.clones`).
    clone_suspected: bool = False
    # As last reported (addresses: by the network section); None: never reported.
    agent_version: str | None = None
    users: tuple[str, ...] | None = None
    addresses: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class MachineFilter:
    client_id: str | None = None
    client_ids: frozenset[str] | None = None  # a scoped token's clients
    state: MachineState | None = None
    kind: str | None = None
    hostname_contains: str | None = None
    search: str | None = None  # part of the hostname, an address, a user or the OS
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
    # The instant the same hardware enrolled under another client, ending this record.
    moved_at: datetime | None = None
    moved_to_client_id: str | None = None
    # A kind the agent reports that an admin has not confirmed yet: as it stands now, not as of
    # the instant asked (for the change report; the row's `kind` is what is billed).
    pending_kind: str | None = None


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
class MachineName:
    """How a person knows a machine the audit log names by id (or through one of its agents)."""

    machine_id: str
    hostname: str
    client_id: str
    client_name: str | None


@dataclass(frozen=True, slots=True)
class AgentEvent:
    event_id: str
    at: datetime
    type: str
    detail_json: str


CommandState = Literal[
    "awaiting_approval", "offboard_pending", "offboarded", "offboard_failed", "cancelled"
]
COMMAND_STATES: tuple[CommandState, ...] = (
    "awaiting_approval",
    "offboard_pending",
    "offboarded",
    "offboard_failed",
    "cancelled",
)
# Commands that still wait to run: a new request for the machine answers with them.
OPEN_COMMAND_STATES: tuple[CommandState, ...] = ("awaiting_approval", "offboard_pending")


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
    # What the agent last said while running it (JSON), and its latest refusal's reason.
    progress_json: str | None = None
    progress_at: datetime | None = None
    # JSON list of the component names the offboard uninstalls (as the machine reported them).
    components_json: str | None = None
    last_rejection: str | None = None
    last_rejected_at: datetime | None = None
    # A two-person order: base64 of its exact bytes, its SHA-256, the bulk batch it belongs to.
    order_b64: str | None = None
    order_sha256: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One operator's signature over a command's order."""

    key_id: str
    signature: str
    actor: str
    approved_at: datetime
    operator: str | None = None  # the name the key is registered under, if it is


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    key_id: str
    name: str
    public_key: str  # `<key_id>:<base64>`
    added_at: datetime
    added_by: str


@dataclass(frozen=True, slots=True)
class CommandFilter:
    state: CommandState | None = None
    machine_id: str | None = None
    batch_id: str | None = None
    client_ids: frozenset[str] | None = None  # a scoped token's clients
    after_command_id: str | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class OffboardRequestRecord:
    machine_id: str
    issuer: str
    reason: str
    ticket: str | None
    batch_id: str | None = None  # one of the orders of a bulk offboard


@dataclass(frozen=True, slots=True)
class CommandResultRecord:
    command_id: str
    status: Literal["succeeded", "failed", "rejected"]
    reason: str | None
    steps_json: str
    # The agent's clock when it reported, and identical refusals it did not report since the last.
    agent_time: str | None = None
    suppressed: int = 0


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
    search: str | None = None  # part of the hostname, an address, a user or the OS
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


@dataclass(frozen=True, slots=True)
class Compaction:
    """Rows of history removed, per table."""

    presence: int = 0
    facts: int = 0
    coverage: int = 0
    events: int = 0  # agents' events older than the horizon

    @property
    def total(self) -> int:
        return self.presence + self.facts + self.coverage + self.events
