"""Two-person offboard orders, the collector's side: what an order says, when an approval is
taken, when an order may be delivered. The agent is the one that enforces; the collector only
waits until what it delivers can be obeyed, and shows who signed.

An agent reports how many distinct operator keys it requires (`offboard_approvals`) and which
it pins. An agent that never said predates orders and obeys the collector's signature alone, so
its requirement counts as 0. An approval counts towards delivery only if the agent pins its key;
others are kept and shown as refused by the agent.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.store.records import ApprovalRecord, AuditEntry, CommandRecord
from wire.messages import Approval
from wire.orders import OffboardOrder, count_approvals, encode_order
from wire.signing import parse_pin
from wire.times import format_instant

ORDER_LIFETIME = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """What a machine's agent last said it requires of an order."""

    required: int
    pinned: frozenset[str] | None  # None: the agent never said (any key counts)

    @classmethod
    def of(cls, approvals: int | None, key_ids_json: str | None) -> ApprovalPolicy:
        pinned = None if key_ids_json is None else frozenset(json.loads(key_ids_json))
        return cls(approvals or 0, pinned)

    def counted(self, approvals: Sequence[ApprovalRecord]) -> list[str]:
        """Distinct key ids among `approvals` that the agent would count."""
        seen: list[str] = []
        for approval in approvals:
            if approval.key_id in seen:
                continue
            if self.pinned is None or approval.key_id in self.pinned:
                seen.append(approval.key_id)
        return seen

    def ready(self, approvals: Sequence[ApprovalRecord]) -> bool:
        return len(self.counted(approvals)) >= self.required


def policy_text(approvals: int | None, key_ids: Sequence[str] | None) -> str:
    """The policy as one short string (how the agent-token cache keeps it); '' = never said."""
    if approvals is None:
        return ""
    return f"{approvals}:{','.join(sorted(set(key_ids or ())))}"


def make_order(
    command_id: str,
    *,
    agent_id: str,
    machine_id: str,
    client_id: str,
    hostname: str,
    requester: str,
    reason: str,
    ticket: str | None,
    components: Sequence[str],
    now: datetime,
    lifetime: timedelta = ORDER_LIFETIME,
) -> bytes:
    """The exact bytes operators sign, made once and stored as they are."""
    return encode_order(
        OffboardOrder(
            order_id=str(uuid.uuid4()),
            command_id=command_id,
            type="offboard",
            agent_id=agent_id,
            machine_id=machine_id,
            client_id=client_id,
            hostname=hostname,
            requester=requester,
            reason=reason,
            ticket=ticket,
            components=list(components),
            issued_at=format_instant(now),
            not_after=format_instant(now + lifetime),
        )
    )


class ApprovalRefused(Exception):
    """An approval the collector will not keep: `code` and a sentence for the operator."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


def check_approval(command: CommandRecord | None, approval: Approval, key_line: str | None) -> str:
    """The public key line the approval verified under; `ApprovalRefused` otherwise.

    The key comes from the request (`public_key`, the operator's `<key_id>:<base64>` line) or
    from the operators registered on the collector; either way the signature must verify over
    the stored order bytes, so no approval is kept that no agent could count.
    """
    if command is None:
        raise ApprovalRefused("command_not_found", "no command has that id", 404)
    if command.order_b64 is None:
        raise ApprovalRefused("no_order", "this command carries no order to approve", 409)
    if command.state not in ("awaiting_approval", "offboard_pending"):
        raise ApprovalRefused(
            "command_closed", f"the command is {command.state}: nothing to approve", 409
        )
    line = key_line
    if line is None:
        raise ApprovalRefused(
            "unknown_key",
            f"key {approval.key_id} is not registered (rmm-collector operator add); "
            "send its public line as public_key",
        )
    try:
        key_id, key = parse_pin(line)
    except ValueError as exc:
        raise ApprovalRefused("invalid_key", f"public_key: {exc}") from exc
    if key_id != approval.key_id:
        raise ApprovalRefused("invalid_key", "public_key is not the key that signed (key id)")
    tally = count_approvals(_order_bytes(command), [approval], {key_id: key})
    if not tally.counted:
        why = tally.not_counted[0][1] if tally.not_counted else "bad signature"
        raise ApprovalRefused("bad_signature", f"the approval does not verify: {why}")
    return line


def _order_bytes(command: CommandRecord) -> bytes:
    assert command.order_b64 is not None
    return base64.b64decode(command.order_b64)


def approved(
    command: CommandRecord, approval: Approval, actor: str, operator: str | None, now: datetime
) -> AuditEntry:
    return AuditEntry(
        now,
        actor,
        "offboard.approved",
        command.machine_id,
        {
            "command_id": command.command_id,
            "key_id": approval.key_id,
            "operator": operator,
        },
    )
