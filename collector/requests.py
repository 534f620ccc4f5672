"""Bodies people's endpoints accept. They refuse fields they do not know (agent messages, in
`wire.messages`, ignore them), and the OpenAPI document is generated from these same structs, so
the description and the checks cannot disagree."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from wire.messages import NO_NUL

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=NO_NUL)]
Ticket = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]


class OffboardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason
    ticket: Ticket | None = None


class KindRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["pc", "server"]


KeyId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]
Signature = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]
KeyLine = Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_NUL)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
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
