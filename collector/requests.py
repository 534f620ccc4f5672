"""Bodies and query strings people's endpoints accept. They refuse fields and parameters they do
not know (agent messages, in `wire.messages`, ignore unknown fields), and the OpenAPI document is
generated from these same structs, so the description and the checks cannot disagree."""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from collector.store.records import CommandState, MachineState
from wire.messages import NO_NUL, Kind

# Said in words: blank is no reason (no NUL either, as everywhere).
NOT_BLANK = "^\\s*[^\\x00\\s][^\\x00]*$"
Reason = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=1000,
        pattern=NOT_BLANK,
        description="why, in words (not blank)",
        examples=["laptop returned to the client"],
    ),
]
Ticket = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]


class OffboardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason
    ticket: Ticket | None = None


class KindRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["pc", "server"]


KeyId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]
Signature = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]
KeyLine = Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_NUL)]
Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=NOT_BLANK,
        description="a person's name (not blank)",
        examples=["Alice Martin"],
    ),
]
CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]


class ApprovalRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An operator's signature over a command's order, made on the operator's own machine;
    `public_key` is the operator's `<key_id>:<base64>` line (needed unless registered)."""

    key_id: KeyId
    signature: Signature
    public_key: KeyLine | None = None


class BatchApproval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    command_id: CommandId
    key_id: KeyId
    signature: Signature
    public_key: KeyLine | None = None


class BatchApprovalRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    approvals: Annotated[list[BatchApproval], msgspec.Meta(min_length=1, max_length=5000)]


class OperatorRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    public_key: KeyLine


class BulkOffboardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One order per live machine of the client, reviewed and signed as one batch."""

    reason: Reason
    ticket: Ticket | None = None
    expected_count: Annotated[int, msgspec.Meta(ge=0)] | None = None


class DismissRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Why the device needs no agent (a printer, a phone); kept in the audit log."""

    reason: Reason


class RestoreRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason | None = None


class ResolveCloneRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which copy keeps the machine record ("1" or "2" of the suspicion's candidates); the other
    gets its own record at its next enrollment. "both": not a clone, nothing is split."""

    keep: Literal["1", "2", "both"]
    reason: Reason


PEOPLE_BODIES = (
    OffboardRequest,
    KindRequest,
    ApprovalRequest,
    BatchApprovalRequest,
    BatchApproval,
    OperatorRequest,
    BulkOffboardRequest,
    DismissRequest,
    RestoreRequest,
    ResolveCloneRequest,
)


# Query strings. Each endpoint's parameters are one struct: `collector.bodies.read_query` decodes
# the query string with it (text converted to the field's type) and `collector.openapi` lists its
# fields as the operation's parameters, with the same schemas.


class Query(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every parameter is optional. Those named in `blank_is_absent` given empty (`?before=`)
    count as not given."""

    blank_is_absent: ClassVar[frozenset[str]] = frozenset()


def _text(description: str) -> msgspec.Meta:
    return msgspec.Meta(pattern=NO_NUL, description=description)


def _instant(description: str) -> msgspec.Meta:
    return msgspec.Meta(
        pattern=NO_NUL,
        description=f"{description}; an ISO-8601 (RFC 3339) instant with an offset",
        extra_json_schema={"format": "date-time"},
    )


def _page_size(high: int) -> msgspec.Meta:
    return msgspec.Meta(ge=1, le=high, description=f"page size, 1 to {high}")


MachineParam = Annotated[str, _text("machine id")]
CursorParam = Annotated[str, _text("next_cursor of the previous page")]
Limit5000 = Annotated[int, _page_size(5000)]
Month = Annotated[
    str,
    msgspec.Meta(
        pattern="^[0-9]{4}-(0[1-9]|1[0-2])$",
        description="YYYY-MM (UTC); default the current month; a month that has not begun "
        "is refused",
        examples=["2026-03"],
    ),
]


Search = Annotated[
    str, _text("case-insensitive part of the hostname, an IP address, a user or the OS")
]


class MachinesQuery(Query, frozen=True):
    client: Annotated[str, _text("client id")] | None = None
    state: Annotated[MachineState, msgspec.Meta(description="the machine's state")] | None = None
    kind: Annotated[Kind, msgspec.Meta(description="pc or server")] | None = None
    hostname: Annotated[str, _text("case-insensitive part of the hostname")] | None = None
    q: Search | None = None
    limit: Annotated[int, _page_size(10_000)] = 1000
    cursor: CursorParam | None = None


class EventsQuery(Query, frozen=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000, description="at most this many")] = 200


class InventoryQuery(Query, frozen=True):
    as_of: Annotated[str, _instant("default now; not in the future")] | None = None


class AuditQuery(Query, frozen=True):
    blank_is_absent = frozenset({"before"})

    actor: Annotated[str, _text("exact actor")] | None = None
    action: Annotated[str, _text("exact action")] | None = None
    target: Annotated[str, _text("exact target")] | None = None
    since: Annotated[str, _instant("entries at or after it")] | None = None
    before: (
        Annotated[int, msgspec.Meta(ge=1, le=2**62, description="next_before of the previous page")]
        | None
    ) = None
    limit: Limit5000 = 500


class CommandsQuery(Query, frozen=True):
    state: Annotated[CommandState, msgspec.Meta(description="the command's state")] | None = None
    machine: MachineParam | None = None
    limit: Limit5000 = 500
    cursor: CursorParam | None = None


class HeldQuery(Query, frozen=True):
    blank_is_absent = frozenset({"machine"})

    machine: MachineParam | None = None


class UnmanagedQuery(Query, frozen=True):
    dismissed: (
        Annotated[Literal["0", "1"], msgspec.Meta(description="1 adds the dismissed devices")]
        | None
    ) = None


class CoverageQuery(Query, frozen=True):
    blank_is_absent = frozenset({"month"})

    month: Month | None = None


@functools.cache
def parameter_schemas(query: type[Query]) -> dict[str, dict[str, Any]]:
    """The JSON schema of each parameter of `query`, for a value given: never null, since a
    parameter not given takes its default."""
    _, components = msgspec.json.schema_components((query,))
    found: dict[str, dict[str, Any]] = {}
    for name, field in components[query.__name__]["properties"].items():
        schema = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
        for alternative in field.get("anyOf", ()):
            if alternative != {"type": "null"}:
                schema.update(alternative)
        found[name] = schema
    return found
