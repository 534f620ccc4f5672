"""Messages exchanged between agent and collector, validated at the edge.

Agent endpoints ignore fields they do not know, so a newer agent works with an older collector:
these structs therefore do not forbid unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Kind = Literal["pc", "server"]
ComponentStatus = Literal["running", "stopped", "missing"]
ResultStatus = Literal["succeeded", "failed", "rejected"]

# Text the collector stores as text has no NUL character: PostgreSQL cannot hold one, so such a
# value is refused here (400) rather than failing the write, or failing the buffered last-seen
# flush of every other machine with it.
NO_NUL = "^[^\x00]*$"

HardwareId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]
Hostname = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
OsName = Annotated[str, msgspec.Meta(max_length=255, pattern=NO_NUL)]
# The agent config's own rule for component names; the collector holds no other kind of name.
COMPONENT_NAME = "^[A-Za-z0-9_.-]{1,64}$"
ComponentName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=COMPONENT_NAME)]
Version = Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)]
StoredText = Annotated[str, msgspec.Meta(max_length=8192, pattern=NO_NUL)]
Argument = Annotated[str, msgspec.Meta(max_length=4096, pattern=NO_NUL)]
AgentVersion = Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
KeyId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Instant = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]
# Network identifiers are checked loosely here (a malformed one must not cost the whole
# heartbeat); the agent sends MACs lower-case with colons and the collector normalises again.
NetworkText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
MAX_NEIGHBORS = 512


class Component(msgspec.Struct, frozen=True, kw_only=True):
    name: ComponentName
    status: ComponentStatus
    version: Version | None = None
    required: bool = True


class EnrollRequest(msgspec.Struct, frozen=True, kw_only=True):
    enrollment_token: Token
    hardware_id: HardwareId
    hostname: Hostname
    os: OsName
    kind: Kind
    agent_version: AgentVersion | None = None
    # Proof of the previous credential when known hardware enrolls again (`enroll --force`, a
    # re-install that kept its state); without it the collector holds the enrollment.
    previous_agent_token: Token | None = None


class EnrollPending(msgspec.Struct, frozen=True, kw_only=True):
    """202 from `POST /v1/enroll`: known hardware without proof waits for a technician."""

    state: Literal["awaiting_approval"]
    detail: str = ""


class EnrollResponse(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    agent_token: str
    machine_id: str
    heartbeat_interval_s: int


class HeartbeatRequest(msgspec.Struct, frozen=True, kw_only=True):
    components: Annotated[list[Component], msgspec.Meta(max_length=256)]
    hostname: Hostname | None = None
    os: OsName | None = None
    kind: Kind | None = None
    key_ids: Annotated[list[KeyId], msgspec.Meta(max_length=16)] | None = None
    agent_time: Instant | None = None  # the agent's own clock, so the NOC can see skew
    agent_version: AgentVersion | None = None
    users: Annotated[list[UserName], msgspec.Meta(max_length=64)] | None = None
    offboard_approvals: Annotated[int, msgspec.Meta(ge=0, le=16)] | None = None
    operator_key_ids: Annotated[list[KeyId], msgspec.Meta(max_length=16)] | None = None
    network: NetworkInfo | None = None


class NetworkNeighbor(msgspec.Struct, frozen=True, kw_only=True):
    ip: NetworkText
    mac: NetworkText


class NetworkInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The machine's own interfaces and the LAN neighbours it has seen (coverage)."""

    macs: Annotated[list[NetworkText], msgspec.Meta(max_length=64)] = []
    addresses: Annotated[list[NetworkText], msgspec.Meta(max_length=128)] = []
    neighbors: Annotated[list[NetworkNeighbor], msgspec.Meta(max_length=MAX_NEIGHBORS)] = []


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """One operator's Ed25519 signature (base64) over the exact bytes of an offboard order."""

    key_id: Annotated[str, msgspec.Meta(max_length=128)]
    signature: Annotated[str, msgspec.Meta(max_length=256)]


class SignedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """`payload` is base64 of the exact JSON bytes signed; verify those bytes, then parse.

    An offboard also carries the operators' `order` (base64 of its exact bytes) and their
    `approvals`; the payload names the order's SHA-256, binding this delivery to it.
    """

    command_id: str
    key_id: str
    payload: str
    signature: str
    order: Annotated[str, msgspec.Meta(max_length=65536)] | None = None
    approvals: Annotated[list[Approval], msgspec.Meta(max_length=16)] | None = None


class HeartbeatResponse(msgspec.Struct, frozen=True, kw_only=True):
    next_heartbeat_s: int
    commands: list[SignedCommand] = []


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    error: str
    detail: str


EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]


class AgentEventMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Something the agent noticed between heartbeats, stamped with the agent's own clock."""

    event_id: EventId
    at: str
    type: EventType
    detail: dict[str, Any] = {}


class EventsRequest(msgspec.Struct, frozen=True, kw_only=True):
    events: Annotated[list[AgentEventMessage], msgspec.Meta(max_length=500)]


class EventsResponse(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int


StepStatus = Literal["ok", "failed", "timeout", "skipped"]


class StepResult(msgspec.Struct, frozen=True, kw_only=True):
    """One uninstall step the agent ran (or skipped because the component was already gone)."""

    component: ComponentName
    argv: Annotated[list[Argument], msgspec.Meta(max_length=64)]
    status: StepStatus
    exit_code: int | None = None
    output_tail: StoredText = ""
    duration_s: float = 0.0


class CommandResultRequest(msgspec.Struct, frozen=True, kw_only=True):
    status: ResultStatus
    reason: Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)] | None = None
    steps: Annotated[list[StepResult], msgspec.Meta(max_length=256)] = []
    agent_time: Instant | None = None
    # Identical refusals of this command (same reason) not reported since the previous report.
    suppressed: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None


class RunningStep(msgspec.Struct, frozen=True, kw_only=True):
    component: ComponentName
    argv: Annotated[list[Argument], msgspec.Meta(max_length=64)]
    started_at: Instant


class CommandProgressRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/commands/{command_id}/progress`: the steps so far and the one running now."""

    steps: Annotated[list[StepResult], msgspec.Meta(max_length=256)] = []
    running: RunningStep | None = None


class CommandResultResponse(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    state: str
