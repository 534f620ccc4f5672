"""Remote commands on the agent: verify before anything runs; run each command at most once.

Order of checks, each refusal reported back as a `rejected` result with its reason (nothing runs):
signature under a pinned key; known type; aimed at this agent and machine; inside its time window
(5 minutes of clock skew allowed); a sequence above the last accepted one but not absurdly so.
A command id already accepted is a re-delivery, not a refusal: it is ignored. The id and sequence
are written durably to `commands.json` before the first step runs, so a restart never runs a
command twice; one interrupted mid-way resumes by checking what is still installed.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from agent.config import CommandKey
from agent.state import Credential, write_private_file
from wire.clock import Clock
from wire.messages import CommandResultRequest, SignedCommand
from wire.signing import COMMAND_TYPES, CommandPayload, CommandRejected, verify_command
from wire.times import InstantError, format_instant, parse_instant

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

LEDGER_FILE = "commands.json"
CLOCK_SKEW = timedelta(minutes=5)
MAX_LIFETIME = timedelta(hours=1)
MAX_SEQUENCE_JUMP = 1000


class AcceptedCommand(msgspec.Struct, kw_only=True):
    command_id: str
    sequence: int
    type: str
    accepted_at: str
    payload: str  # base64 of the verified bytes, kept as evidence of what was run
    state: str = "running"  # running -> succeeded | failed
    result: CommandResultRequest | None = None


class LedgerFile(msgspec.Struct, kw_only=True):
    last_sequence: int = 0
    commands: dict[str, AcceptedCommand] = msgspec.field(default_factory=dict)


class CommandLedger:
    """What this agent accepted, durable across restarts and `kill -9` (file mode 0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LEDGER_FILE
        self._data = self._load()

    def _load(self) -> LedgerFile:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedgerFile()
        return msgspec.json.decode(raw, type=LedgerFile)

    def _save(self) -> None:
        write_private_file(self.path, msgspec.json.encode(self._data), durable=True)

    @property
    def last_sequence(self) -> int:
        return self._data.last_sequence

    def get(self, command_id: str) -> AcceptedCommand | None:
        return self._data.commands.get(command_id)

    def unfinished(self) -> list[AcceptedCommand]:
        return [c for c in self._data.commands.values() if c.state == "running"]

    def accept(self, payload: CommandPayload, data: bytes, now: datetime) -> AcceptedCommand:
        record = AcceptedCommand(
            command_id=payload.command_id,
            sequence=payload.sequence,
            type=payload.type,
            accepted_at=format_instant(now),
            payload=base64.b64encode(data).decode(),
        )
        self._data.commands[payload.command_id] = record
        self._data.last_sequence = max(self._data.last_sequence, payload.sequence)
        self._save()
        return record

    def finish(self, command_id: str, result: CommandResultRequest) -> None:
        record = self._data.commands[command_id]
        record.state = result.status
        record.result = result
        self._save()

    def payload_of(self, record: AcceptedCommand) -> CommandPayload:
        return msgspec.json.decode(base64.b64decode(record.payload), type=CommandPayload)


def pinned_keys(keys: Sequence[CommandKey]) -> dict[str, Ed25519PublicKey]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return {key.key_id: Ed25519PublicKey.from_public_bytes(key.public_key) for key in keys}


def check_command(
    envelope: SignedCommand,
    *,
    pinned: dict[str, Ed25519PublicKey],
    credential: Credential,
    last_sequence: int,
    now: datetime,
) -> tuple[CommandPayload, bytes]:
    """The verified payload and its bytes, or `CommandRejected` saying why it must not run."""
    payload, data = verify_command(envelope, pinned)
    if payload.type not in COMMAND_TYPES:
        raise CommandRejected("unknown_type", f"commands of type {payload.type!r} are not known")
    if payload.agent_id != credential.agent_id:
        raise CommandRejected("wrong_agent", "the command is for another agent")
    if payload.machine_id != credential.machine_id:
        raise CommandRejected("wrong_machine", "the command is for another machine")
    try:
        issued_at = parse_instant(payload.issued_at)
        expires_at = parse_instant(payload.expires_at)
    except InstantError as exc:
        raise CommandRejected("malformed", str(exc)) from exc
    if issued_at > now + CLOCK_SKEW:
        raise CommandRejected("not_yet_valid", f"issued at {payload.issued_at}, in the future")
    if expires_at < now - CLOCK_SKEW:
        raise CommandRejected("expired", f"expired at {payload.expires_at}")
    if expires_at - issued_at > MAX_LIFETIME:
        raise CommandRejected("lifetime_too_long", "a command may live minutes, not days")
    if payload.sequence <= last_sequence:
        raise CommandRejected(
            "stale_sequence", f"sequence {payload.sequence} is not above {last_sequence}"
        )
    if payload.sequence > last_sequence + MAX_SEQUENCE_JUMP:
        raise CommandRejected(
            "implausible_sequence",
            f"sequence {payload.sequence} jumps too far beyond {last_sequence}",
        )
    return payload, data


Execute = Callable[[CommandPayload], Awaitable[CommandResultRequest]]
Report = Callable[[str, CommandResultRequest], Awaitable[None]]
Offboarded = Callable[[str], Awaitable[None]]


class CommandHandler:
    """The agent's `on_commands` hook: verify, record, execute, report."""

    def __init__(
        self,
        *,
        ledger: CommandLedger,
        keys: Sequence[CommandKey],
        credential: Callable[[], Credential],
        clock: Clock,
        execute: Execute,
        report: Report,
        on_offboarded: Offboarded | None = None,
    ) -> None:
        self._ledger = ledger
        self._keys = tuple(keys)
        self._pinned: dict[str, Ed25519PublicKey] | None = None
        self._credential = credential
        self._clock = clock
        self._execute = execute
        self._report = report
        self._on_offboarded = on_offboarded
        self._reported_refusals: set[tuple[str, str]] = set()

    async def __call__(self, commands: Sequence[SignedCommand]) -> None:
        for envelope in commands:
            await self.handle(envelope)

    async def handle(self, envelope: SignedCommand) -> None:
        known = self._ledger.get(envelope.command_id)
        try:
            if self._pinned is None:
                self._pinned = pinned_keys(self._keys)  # first command: load the crypto library
            payload, data = check_command(
                envelope,
                pinned=self._pinned,
                credential=self._credential(),
                last_sequence=self._ledger.last_sequence,
                now=self._clock.now(),
            )
        except CommandRejected as refusal:
            if known is not None and refusal.code == "stale_sequence":
                # A genuine re-delivery of a command accepted before: never run it again, but
                # finish it if a restart interrupted it.
                if known.state == "running":
                    await self.run(self._ledger.payload_of(known))
                else:
                    log.debug("command %s delivered again; already done", envelope.command_id)
                return
            await self._refuse(envelope.command_id, refusal)
            return
        log.warning(
            "accepted %s command %s (sequence %d, signed by %s) from %s: %s",
            payload.type,
            payload.command_id,
            payload.sequence,
            payload.key_id,
            payload.issuer,
            payload.reason,
        )
        self._ledger.accept(payload, data, self._clock.now())
        await self.run(payload)

    async def resume(self) -> None:
        """After a restart: finish what was accepted but never reported as done."""
        for record in self._ledger.unfinished():
            log.warning("resuming command %s interrupted by a restart", record.command_id)
            await self.run(self._ledger.payload_of(record))

    async def run(self, payload: CommandPayload) -> None:
        result = await self._execute(payload)
        await self._report(payload.command_id, result)  # durable in the spool first
        self._ledger.finish(payload.command_id, result)
        if payload.type == "offboard" and result.status == "succeeded" and self._on_offboarded:
            await self._on_offboarded(payload.command_id)

    async def _refuse(self, command_id: str, refusal: CommandRejected) -> None:
        log.error("REFUSED command %s: %s", command_id, refusal)
        if (command_id, refusal.code) in self._reported_refusals:
            return
        self._reported_refusals.add((command_id, refusal.code))
        await self._report(
            command_id,
            CommandResultRequest(status="rejected", reason=f"{refusal.code}: {refusal.detail}"),
        )
