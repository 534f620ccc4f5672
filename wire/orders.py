"""Two-person offboard orders: what operators sign with keys that never touch the collector.

The collector makes the order bytes once (`encode_order`) and stores them; operators sign those
exact bytes locally (`sign_order`); the agent verifies them (`verify_order`) inside the
collector's own delivery signature, whose payload names the order's SHA-256. Nobody re-serialises
an order to verify it. Only distinct pinned operator keys whose signature verifies over the exact
bytes count; unknown keys, repeats, malformed base64, wrong lengths and non-canonical signatures
do not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from wire.ed25519 import is_canonical_signature
from wire.messages import NO_NUL, Approval
from wire.signing import CommandRejected, key_id_for
from wire.times import InstantError, format_instant, parse_instant

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "CLOCK_SKEW",
    "MAX_ORDER_LIFETIME",
    "Approval",
    "ApprovalTally",
    "OffboardOrder",
    "OrderMalformed",
    "OrderRefused",
    "count_approvals",
    "decode_order",
    "encode_order",
    "order_digest",
    "sign_order",
    "verify_order",
]

CLOCK_SKEW = timedelta(minutes=5)
MAX_ORDER_LIFETIME = timedelta(days=31)

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=NO_NUL)]
_Instant = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
_Component = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class OffboardOrder(msgspec.Struct, frozen=True, kw_only=True):
    """What the operators approve; `components` name the uninstall steps that will run
    (`rmm` is the agent itself)."""

    order_id: _Id
    command_id: _Id
    type: Literal["offboard"]
    agent_id: _Id
    machine_id: _Id
    client_id: _Id
    hostname: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
    requester: _Id
    reason: _Text
    ticket: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)] | None
    components: Annotated[list[_Component], msgspec.Meta(max_length=65)]
    issued_at: _Instant
    not_after: _Instant


class OrderRefused(CommandRejected):
    """An order the agent must not act on; `code` is reported back as the reason.

    Codes: `order_missing`, `order_malformed`, `order_digest_mismatch`, `order_mismatch`,
    `order_expired`, `order_not_yet_valid`, `order_lifetime_too_long`, `insufficient_approvals`.
    """


class OrderMalformed(OrderRefused):
    """Order bytes that do not decode as an `OffboardOrder`."""

    def __init__(self, detail: str) -> None:
        super().__init__("order_malformed", detail)


def encode_order(order: OffboardOrder) -> bytes:
    """Compact JSON: the bytes that get signed, stored and delivered as they are."""
    return msgspec.json.encode(order)


_DECODER = msgspec.json.Decoder(OffboardOrder)


def decode_order(data: bytes) -> OffboardOrder:
    try:
        return _DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise OrderMalformed(f"the order does not parse: {exc}") from exc


def order_digest(data: bytes) -> str:
    """Hex SHA-256 of the exact order bytes, as the collector's payload names it."""
    return hashlib.sha256(data).hexdigest()


def sign_order(data: bytes, private_key: Ed25519PrivateKey) -> Approval:
    """One operator's approval of the exact order bytes."""
    return Approval(
        key_id=key_id_for(private_key.public_key()),
        signature=base64.b64encode(private_key.sign(data)).decode(),
    )


@dataclass(frozen=True, slots=True)
class ApprovalTally:
    """Which approvals counted (distinct pinned keys, good signatures) and why the rest did not."""

    counted: tuple[str, ...]
    not_counted: tuple[tuple[str, str], ...]  # (key id, why)

    def describe(self, required: int) -> str:
        text = (
            f"{len(self.counted)} of {required} required approvals from distinct pinned "
            f"operator keys"
        )
        if self.counted:
            text += f" ({', '.join(self.counted)})"
        if self.not_counted:
            text += "; not counted: " + ", ".join(f"{k} ({why})" for k, why in self.not_counted)
        return text


def count_approvals(
    data: bytes, approvals: Sequence[Approval], pinned: Mapping[str, Ed25519PublicKey]
) -> ApprovalTally:
    from cryptography.exceptions import InvalidSignature

    counted: list[str] = []
    not_counted: list[tuple[str, str]] = []
    for approval in approvals:
        key_id = approval.key_id[:128] or "(no key id)"
        key = pinned.get(approval.key_id)
        if key is None:
            not_counted.append((key_id, "unknown: not pinned on this agent"))
            continue
        if approval.key_id in counted:
            not_counted.append((key_id, "repeated"))
            continue
        try:
            signature = base64.b64decode(approval.signature, validate=True)
        except (binascii.Error, ValueError):
            not_counted.append((key_id, "malformed: the signature is not base64"))
            continue
        if len(signature) != 64:
            not_counted.append((key_id, f"malformed: {len(signature)} bytes, not 64"))
            continue
        if not is_canonical_signature(signature):
            not_counted.append((key_id, "bad signature: not canonical (S >= L)"))
            continue
        try:
            key.verify(signature, data)
        except InvalidSignature:
            not_counted.append((key_id, "bad signature"))
            continue
        counted.append(approval.key_id)
    return ApprovalTally(tuple(counted), tuple(not_counted))


def verify_order(
    order_b64: str | None,
    approvals: Sequence[Approval] | None,
    *,
    order_sha256: str | None,
    command_id: str,
    agent_id: str,
    machine_id: str,
    pinned: Mapping[str, Ed25519PublicKey],
    required: int,
    now: datetime,
) -> OffboardOrder:
    """The order, once it is bound to this delivery and carries `required` approvals.

    `order_sha256`, `command_id`, `agent_id` and `machine_id` come from the collector's verified
    payload. Raises `OrderRefused` saying why nothing may run.
    """
    if not order_b64:
        raise OrderRefused("order_missing", "an offboard needs an order signed by operators")
    try:
        data = base64.b64decode(order_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OrderMalformed("the order is not base64") from exc
    digest = order_digest(data)
    if not order_sha256 or not hmac.compare_digest(digest, order_sha256.lower()):
        raise OrderRefused(
            "order_digest_mismatch",
            f"the order's SHA-256 is {digest}, the signed delivery names {order_sha256}",
        )
    order = decode_order(data)
    for name, want, got in (
        ("command", command_id, order.command_id),
        ("agent", agent_id, order.agent_id),
        ("machine", machine_id, order.machine_id),
    ):
        if want != got:
            raise OrderRefused("order_mismatch", f"the order names {name} {got!r}, not {want!r}")
    tally = count_approvals(data, approvals or (), pinned)
    if len(tally.counted) < required:
        if not pinned:
            detail = f"no operator keys are pinned on this agent; {required} approvals required"
        else:
            detail = tally.describe(required)
        raise OrderRefused("insufficient_approvals", detail)
    try:
        issued_at = parse_instant(order.issued_at)
        not_after = parse_instant(order.not_after)
    except InstantError as exc:
        raise OrderMalformed(str(exc)) from exc
    if not_after - issued_at > MAX_ORDER_LIFETIME:
        raise OrderRefused(
            "order_lifetime_too_long",
            f"issued at {order.issued_at}, valid until {order.not_after}: more than 31 days",
        )
    if now > not_after + CLOCK_SKEW:
        raise OrderRefused("order_expired", _times("expired at", order.not_after, not_after, now))
    if issued_at > now + CLOCK_SKEW:
        raise OrderRefused(
            "order_not_yet_valid", _times("issued at", order.issued_at, issued_at, now)
        )
    return order


def _times(what: str, text: str, moment: datetime, now: datetime) -> str:
    """Both clocks and the offset, so clock skew is visible in the refusal itself."""
    offset = (now - moment).total_seconds()
    return f"{what} {text}; agent time {format_instant(now)} ({offset:+.0f} s from it)"
