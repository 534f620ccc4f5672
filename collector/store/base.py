"""The storage interface: everything the collector keeps, behind one protocol.

The records it speaks in live in `collector.store.records` and are importable from here too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol

from collector.rules.clones import Candidate, KnownMachine
from collector.rules.coverage import MachineHistory
from collector.rules.network import NetworkReport
from collector.rules.orders import ApprovalPolicy
from collector.store.coverage_records import *  # noqa: F403  (part of this interface too)
from collector.store.coverage_records import CloneSuspicion, DismissedDevice, UnmanagedDevice
from collector.store.records import *  # noqa: F403  (the records are part of this interface)
from collector.store.records import (
    AgentEvent,
    AgentIdentity,
    ApiTokenInfo,
    ApprovalRecord,
    AuditEntry,
    AuditFilter,
    Client,
    ClientOverview,
    CommandFilter,
    CommandRecord,
    CommandResultRecord,
    Compaction,
    EnrollmentTokenInfo,
    EnrollOutcome,
    EnrollRequestRecord,
    ExposureRow,
    HeartbeatRecord,
    HeldEnrollmentInfo,
    InventoryRecord,
    MachineFilter,
    MachineName,
    MachinePage,
    MachineQuery,
    MachineRecord,
    MachineState,
    OffboardAttention,
    OffboardRequestRecord,
    OperatorRecord,
    PresenceHistory,
    Role,
    StateWindows,
)
from collector.store.user_records import *  # noqa: F403
from collector.store.user_records import UserInfo, UserSecrets
from wire.messages import Approval


class Store(Protocol):
    """Everything the collector keeps. Writes are durable when the awaited call returns."""

    @property
    def engine_name(self) -> str:
        """`sqlite` or `postgresql`."""
        ...

    async def close(self) -> None: ...
    async def probe_write(self, now: datetime) -> None:
        """Commit one small write (proof the database takes writes); raises if it cannot."""
        ...

    # clients and enrollment tokens
    async def create_client(self, name: str, *, now: datetime, actor: str) -> Client: ...
    async def list_clients(self) -> list[Client]: ...
    async def find_client(self, name_or_id: str) -> Client | None: ...
    async def add_enrollment_token(
        self,
        client_id: str,
        token_hash: str,
        *,
        expires_at: datetime,
        now: datetime,
        actor: str,
        max_uses: int | None = None,
    ) -> EnrollmentTokenInfo: ...
    async def list_enrollment_tokens(self, client_id: str) -> list[EnrollmentTokenInfo]: ...
    async def revoke_enrollment_tokens(
        self, client_id: str, *, token_id: str | None, now: datetime, actor: str
    ) -> int: ...

    # API tokens for people and jobs
    async def add_api_token(
        self,
        name: str,
        role: Role,
        token_hash: str,
        *,
        now: datetime,
        actor: str,
        clients: Sequence[str] = (),
    ) -> ApiTokenInfo: ...
    async def list_api_tokens(self) -> list[ApiTokenInfo]: ...
    async def revoke_api_token(self, name: str, *, now: datetime, actor: str) -> bool: ...
    async def find_api_token(self, token_hash: str) -> ApiTokenInfo | None: ...

    # agents
    async def enroll(
        self, request: EnrollRequestRecord, *, now: datetime, gap_s: float
    ) -> EnrollOutcome: ...
    async def find_agent(self, token_hash: str) -> AgentIdentity | None: ...
    async def approve_reenroll(
        self, machine_id: str, *, now: datetime, actor: str
    ) -> HeldEnrollmentInfo | None:
        """Let the machine's hardware enroll again without its credential, once, within 24 h."""
        ...

    async def held_enrollments(self, machine_id: str | None = None) -> list[HeldEnrollmentInfo]: ...
    async def enrollments_by_token_since(self, token_hash: str, since: datetime) -> int: ...
    async def revocations_since(self, seq: int) -> tuple[list[str], int]:
        """Token digests revoked after `seq`, and the newest seq (-1: only the newest seq)."""
        ...

    async def apply_heartbeats(self, batch: Sequence[HeartbeatRecord], *, gap_s: float) -> None: ...
    async def record_events(
        self, identity: AgentIdentity, events: Sequence[AgentEvent], *, now: datetime
    ) -> int: ...
    async def list_events(self, machine_id: str, *, limit: int) -> list[AgentEvent]: ...
    async def events_received_since(self, machine_id: str, since: datetime) -> int: ...

    # machines and inventory
    async def get_machine(self, machine_id: str) -> MachineRecord | None: ...
    async def set_kind(
        self, machine_id: str, kind: str, *, now: datetime, actor: str
    ) -> MachineRecord:
        """Confirm a pending kind (or set one); billed as `kind` from `now` on."""
        ...

    async def list_machines(
        self, machine_filter: MachineFilter, windows: StateWindows
    ) -> list[MachineRecord]: ...
    async def count_machines_by_state(self, windows: StateWindows) -> dict[MachineState, int]: ...
    async def count_clock_skewed(self, threshold_ms: int) -> int: ...
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
    async def compact_history(self, *, horizon_start: datetime) -> Compaction:
        """Drop history no answer as of `horizon_start` or later reads (see
        `collector.rules.presence.retention_horizon`)."""
        ...

    # remote commands (offboarding)
    async def request_offboard(
        self, request: OffboardRequestRecord, *, now: datetime
    ) -> tuple[CommandRecord, bool]:
        """The pending offboard of the machine, created unless one is pending (then `False`)."""
        ...

    async def get_command(self, command_id: str) -> CommandRecord | None: ...
    async def list_commands(self, command_filter: CommandFilter) -> list[CommandRecord]: ...
    async def machines_with_open_commands(self) -> set[str]: ...
    async def request_bulk_offboard(
        self,
        client_id: str,
        *,
        issuer: str,
        reason: str,
        ticket: str | None,
        now: datetime,
        expected_count: int | None = None,
    ) -> tuple[str, list[CommandRecord]]: ...
    async def offboard_requests_since(self, since: datetime) -> int: ...
    # two-person orders (`collector.store.orders`)
    async def add_operator(
        self, name: str, key_line: str, *, now: datetime, actor: str
    ) -> OperatorRecord: ...
    async def list_operators(self) -> list[OperatorRecord]: ...
    async def command_approvals(self, command_id: str) -> list[ApprovalRecord]: ...
    async def approval_policy(self, machine_id: str) -> ApprovalPolicy: ...
    async def approve_command(
        self,
        command_id: str,
        approval: Approval,
        *,
        public_key: str | None,
        actor: str,
        now: datetime,
    ) -> CommandRecord: ...
    async def record_approval_policy(
        self, machine_id: str, approvals: int, key_ids: Sequence[str], *, now: datetime
    ) -> None: ...
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

    async def record_command_progress(
        self, identity: AgentIdentity, command_id: str, progress_json: str, *, now: datetime
    ) -> CommandRecord:
        """Keep an agent's progress report on its own running command (`NotOwner` otherwise)."""
        ...

    async def licence_exposure(
        self, windows: StateWindows, *, pending_before: datetime
    ) -> tuple[list[ExposureRow], list[ExposureRow]]:
        """Machines expired without a completed offboard, and offboards pending too long."""
        ...

    # audit
    async def add_audit(self, entry: AuditEntry) -> None: ...
    async def list_audit(self, audit_filter: AuditFilter) -> list[tuple[int, AuditEntry]]: ...
    async def machine_names(
        self, ids: frozenset[str]
    ) -> tuple[dict[str, MachineName], dict[str, MachineName]]:
        """Of `ids`, the machines and the agents (with their machine) they name."""
        ...

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

    # coverage: network sections, unmanaged devices (see `collector.rules.network`)
    async def apply_network(self, batch: Sequence[NetworkReport]) -> None: ...
    async def unmanaged_devices(
        self, client_id: str, *, as_of: datetime
    ) -> list[UnmanagedDevice]: ...
    async def unmanaged_as_of(self, as_of: datetime) -> list[UnmanagedDevice]: ...
    async def devices_in_month(
        self, client_id: str, start: datetime, end: datetime, *, now: datetime
    ) -> tuple[list[UnmanagedDevice], list[DismissedDevice]]: ...
    async def dismissed_devices(self, client_id: str) -> list[DismissedDevice]: ...
    async def compact_sightings(self, *, horizon_start: datetime) -> int: ...
    async def dismiss_device(
        self, client_id: str, mac: str, *, reason: str, now: datetime, actor: str
    ) -> DismissedDevice: ...
    async def restore_device(
        self, client_id: str, mac: str, *, reason: str | None, now: datetime, actor: str
    ) -> None: ...
    async def coverage_histories(
        self, client_id: str, start: datetime, end: datetime
    ) -> list[MachineHistory]:
        """The client's machines whose record overlaps [start, end), with their history."""
        ...

    # clones (see `collector.rules.clones`)
    async def suspect_clone(
        self, machine_id: str, kind: str, candidates: list[Candidate], *, now: datetime
    ) -> bool: ...
    async def detect_hostname_clones(self, now: datetime) -> list[str]: ...
    async def clone_suspicions(self, machine_id: str) -> list[CloneSuspicion]: ...
    async def open_clone_suspicions(self) -> list[CloneSuspicion]: ...
    async def resolve_clone(
        self, machine_id: str, keep: str, *, reason: str, now: datetime, actor: str
    ) -> CloneSuspicion: ...
    async def pending_splits(self) -> dict[str, str]: ...
    async def enrolling_machine(
        self, enrollment_token_hash: str, hardware_id: str, *, now: datetime
    ) -> tuple[KnownMachine | None, str | None]: ...
    async def record_split(
        self, machine_id: str, split_machine_id: str, *, hostname: str, now: datetime
    ) -> None: ...
    # people who sign in to the pages (`collector.store.users`)
    async def add_user(
        self,
        name: str,
        role: Role,
        password_hash: str,
        totp_secret: str,
        *,
        clients: Sequence[str] = (),
        now: datetime,
        actor: str,
    ) -> UserInfo: ...
    async def list_users(self) -> list[UserInfo]: ...
    async def find_user(self, name: str) -> UserInfo | None: ...
    async def get_user(self, user_id: str) -> UserInfo | None: ...
    async def user_secrets(self, name: str) -> UserSecrets | None: ...
    async def disable_user(self, name: str, *, now: datetime, actor: str) -> UserInfo: ...
    async def reset_user_mfa(
        self, name: str, totp_secret: str, *, now: datetime, actor: str
    ) -> UserInfo: ...
    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Accept the code of `step` once: False if it (or a later step) was used already."""
        ...

    async def confirm_mfa(
        self, user_id: str, step: int, recovery_digests: Sequence[str], *, now: datetime
    ) -> bool: ...
    async def use_recovery_code(self, user_id: str, digest: str, *, now: datetime) -> bool: ...
    async def recovery_codes_left(self, user_id: str) -> int: ...
    async def set_password(
        self, user_id: str, password_hash: str, *, now: datetime, actor: str
    ) -> UserInfo: ...
