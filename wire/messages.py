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
ComponentName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Version = Annotated[str, msgspec.Meta(max_length=128)]  # inside components' JSON, escaped
AgentVersion = Annotated[str, msgspec.Meta(max_length=128, pattern=NO_NUL)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
KeyId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


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


class SignedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """`payload` is base64 of the exact JSON bytes signed; verify those bytes, then parse."""

    command_id: str
    key_id: str
    payload: str
    signature: str


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

    component: Annotated[str, msgspec.Meta(max_length=64)]
    argv: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=4096)]], msgspec.Meta(max_length=64)
    ]
    status: StepStatus
    exit_code: int | None = None
    output_tail: Annotated[str, msgspec.Meta(max_length=8192)] = ""
    duration_s: float = 0.0


class CommandResultRequest(msgspec.Struct, frozen=True, kw_only=True):
    status: ResultStatus
    reason: Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)] | None = None
    steps: Annotated[list[StepResult], msgspec.Meta(max_length=256)] = []


class CommandResultResponse(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    state: str
