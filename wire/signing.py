"""Signed commands: Ed25519 over the exact payload bytes, carried as base64 in the envelope.

The collector signs `encode_payload(payload)`; the agent verifies the bytes it received and only
then parses them, so nothing is ever re-serialised between signing and verifying.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from wire.ed25519 import is_canonical_signature, key_id_for_raw, pin_problem
from wire.messages import SignedCommand

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported where it is used: the agent loads it only once a command arrives,
# which keeps its resident memory low between heartbeats.

CommandType = Literal["offboard"]
COMMAND_TYPES: tuple[str, ...] = ("offboard",)


class CommandPayload(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the agent checks before it runs anything; all of it is signed."""

    command_id: str
    type: str
    agent_id: str
    machine_id: str
    client_id: str
    issuer: str
    reason: str
    ticket: str | None = None
    sequence: Annotated[int, msgspec.Meta(ge=1)]
    issued_at: str
    expires_at: str
    key_id: str
    # An offboard carrying operators' order: SHA-256 (hex) of the exact order bytes.
    order_sha256: str | None = None


class CommandRejected(Exception):
    """A command the agent must not run; `code` is what it reports back as the reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(key: Ed25519PublicKey) -> str:
    """A short, stable id derived from the public key itself."""
    return key_id_for_raw(raw_public_key(key))


def pin_line(key: Ed25519PublicKey) -> str:
    """`<key_id>:<base64 raw public key>`, what `keys show` prints and an agent pins."""
    return f"{key_id_for(key)}:{base64.b64encode(raw_public_key(key)).decode()}"


def parse_pin(line: str) -> tuple[str, Ed25519PublicKey]:
    """Read one pinned key; the key id must match the key, so a typo cannot pin the wrong key.

    Small-order and non-canonically encoded keys are refused: forgeries verify under them.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key_id, sep, encoded = line.strip().partition(":")
    if not sep or not key_id or not encoded:
        raise ValueError("a pinned key is '<key_id>:<base64 raw public key>'")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"pinned key {key_id!r} is not base64") from exc
    problem = pin_problem(key_id, raw)
    if problem is not None:
        raise ValueError(f"pinned key {key_id!r}: {problem}")
    return key_id, Ed25519PublicKey.from_public_bytes(raw)


def encode_payload(payload: CommandPayload) -> bytes:
    return msgspec.json.encode(payload)


def sign_command(payload: CommandPayload, private_key: Ed25519PrivateKey) -> SignedCommand:
    if payload.key_id != key_id_for(private_key.public_key()):
        raise ValueError("the payload names another signing key")
    data = encode_payload(payload)
    return SignedCommand(
        command_id=payload.command_id,
        key_id=payload.key_id,
        payload=base64.b64encode(data).decode(),
        signature=base64.b64encode(private_key.sign(data)).decode(),
    )


def verify_command(
    envelope: SignedCommand, pinned: dict[str, Ed25519PublicKey]
) -> tuple[CommandPayload, bytes]:
    """The payload, once its signature checks out under a pinned key; raises CommandRejected.

    Returns the verified bytes too, so the caller can keep exactly what was signed.
    """
    from cryptography.exceptions import InvalidSignature

    key = pinned.get(envelope.key_id)
    if key is None:
        raise CommandRejected("unknown_key", f"key {envelope.key_id!r} is not pinned")
    try:
        data = base64.b64decode(envelope.payload, validate=True)
        signature = base64.b64decode(envelope.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandRejected("malformed", "payload or signature is not base64") from exc
    if len(signature) != 64:
        raise CommandRejected("bad_signature", "an Ed25519 signature is 64 bytes")
    if not is_canonical_signature(signature):
        raise CommandRejected("bad_signature", "the signature is not canonical (S >= L)")
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise CommandRejected("bad_signature", "the signature does not match the payload") from exc
    try:
        payload = msgspec.json.decode(data, type=CommandPayload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise CommandRejected("malformed", f"signed payload does not parse: {exc}") from exc
    if payload.key_id != envelope.key_id:
        raise CommandRejected("key_mismatch", "the payload names another key than the envelope")
    if payload.command_id != envelope.command_id:
        raise CommandRejected("id_mismatch", "the payload names another command than the envelope")
    return payload, data
