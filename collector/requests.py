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


PEOPLE_BODIES = (OffboardRequest, KindRequest, DismissRequest, RestoreRequest, ResolveCloneRequest)
