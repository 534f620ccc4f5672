"""Remote commands on the agent: verify before anything runs; run each command at most once.

Order of checks, each refusal reported back as a `rejected` result with its reason (nothing runs):
signature under a pinned key; known type; aimed at this agent and machine; inside its time window
(5 minutes of clock skew allowed); a sequence above the last accepted one but not absurdly so; and
for an offboard, the operators' order (`wire/orders.py`): bound to this delivery by its digest and
ids, and approved by `offboard_approvals` distinct pinned operator keys.
A command id already accepted is a re-delivery, not a refusal: it is ignored (or, if a restart
interrupted it, finished). The id and sequence are written durably to `commands.json` before the
first step runs, and every step is recorded before and after it runs (`agent/ledger.py`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agent.config import CommandKey
from agent.ledger import AcceptedCommand, CommandLedger, LedgerDamaged
from agent.state import Credential
from wire.clock import Clock
from wire.messages import CommandResultRequest, SignedCommand
from wire.orders import OffboardOrder, verify_order
from wire.signing import COMMAND_TYPES, CommandPayload, CommandRejected, verify_command
from wire.text import printable
from wire.times import InstantError, format_instant, parse_instant

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(minutes=5)
MAX_LIFETIME = timedelta(hours=1)
MAX_SEQUENCE_JUMP = 1000
REPEAT_REPORT_INTERVAL = timedelta(minutes=15)
_DIGESTS_KEPT = 256


def pinned_keys(keys: Sequence[CommandKey]) -> dict[str, Ed25519PublicKey]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return {key.key_id: Ed25519PublicKey.from_public_bytes(key.public_key) for key in keys}


def describe_skew(what: str, text: str, moment: datetime, now: datetime) -> str:
    """Both clocks and their offset, so a refusal caused by clock skew says so."""
    offset = (now - moment).total_seconds()
    return f"{what} {text}; agent time {format_instant(now)} ({offset:+.0f} s from it)"


def check_payload(
    payload: CommandPayload, *, credential: Credential, last_sequence: int, now: datetime
) -> None:
    """Everything but the signature; raises `CommandRejected` saying why it must not run."""
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
        raise CommandRejected(
            "not_yet_valid", describe_skew("issued at", payload.issued_at, issued_at, now)
        )
    if expires_at < now - CLOCK_SKEW:
        raise CommandRejected(
            "expired", describe_skew("expired at", payload.expires_at, expires_at, now)
        )
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


@dataclass(frozen=True, slots=True)
class OrderPolicy:
    """How many distinct pinned operator keys an offboard needs, and which keys are pinned."""

    required: int = 2
    keys: tuple[CommandKey, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """An accepted command to execute: its verified payload, its order, and its ledger entry."""

    payload: CommandPayload
    order: OffboardOrder | None
    ledger: CommandLedger

    @property
    def command_id(self) -> str:
        return self.payload.command_id


Execute = Callable[[Job], Awaitable[CommandResultRequest]]
Report = Callable[[str, CommandResultRequest], Awaitable[None]]
Offboarded = Callable[[str], Awaitable[None]]


@dataclass
class _Repeats:
    last_reported: datetime
    suppressed: int = 0


@dataclass
class RefusalReports:
    """Which refusals reach the collector.

    Every delivery whose bytes differ from those already refused is reported when its signature
    did not verify (each distinct forgery is a tamper event). A genuinely signed command that
    keeps being refused (the collector re-signs each re-delivery, e.g. under clock skew), and an
    identical delivery seen again, are reported at most once per 15 minutes per command and
    reason; the report then says how many were `suppressed` since the previous one.
    """

    clock: Clock
    _seen: dict[str, list[str]] = field(default_factory=dict)
    _repeats: dict[tuple[str, str], _Repeats] = field(default_factory=dict)

    def decide(self, envelope: SignedCommand, code: str, *, genuine: bool) -> int | None:
        """None: do not report; otherwise report, carrying this many suppressed repeats."""
        digest = _delivery_digest(envelope)
        seen = self._seen.setdefault(envelope.command_id, [])
        new_bytes = digest not in seen
        if new_bytes:
            seen.append(digest)
            del seen[:-_DIGESTS_KEPT]
        now = self.clock.now()
        key = (envelope.command_id, code)
        repeats = self._repeats.get(key)
        if repeats is None:
            self._repeats[key] = _Repeats(now)
            return 0
        if new_bytes and not genuine:
            return 0
        if now - repeats.last_reported >= REPEAT_REPORT_INTERVAL:
            suppressed, repeats.suppressed, repeats.last_reported = repeats.suppressed, 0, now
            return suppressed
        repeats.suppressed += 1
        return None


def _delivery_digest(envelope: SignedCommand) -> str:
    parts = [envelope.key_id, envelope.payload, envelope.signature, envelope.order or ""]
    parts += [f"{a.key_id}:{a.signature}" for a in envelope.approvals or ()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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
        orders: OrderPolicy | None = None,
    ) -> None:
        self._ledger = ledger
        self._keys = tuple(keys)
        self._orders = orders or OrderPolicy(required=0)
        self._pinned: dict[str, Ed25519PublicKey] | None = None
        self._operators: dict[str, Ed25519PublicKey] | None = None
        self._credential = credential
        self._clock = clock
        self._execute = execute
        self._report = report
        self._on_offboarded = on_offboarded
        self._refusals = RefusalReports(clock)

    @property
    def ledger(self) -> CommandLedger:
        return self._ledger

    async def __call__(self, commands: Sequence[SignedCommand]) -> None:
        for envelope in commands:
            await self.handle(envelope)

    async def handle(self, envelope: SignedCommand) -> None:
        if self._ledger.damaged is not None:
            await self._refuse(
                envelope, CommandRejected("ledger_damaged", self._ledger.damaged), genuine=True
            )
            return
        known = self._ledger.get(envelope.command_id)
        if self._pinned is None:
            self._pinned = pinned_keys(self._keys)  # first command: load the crypto library
            self._operators = pinned_keys(self._orders.keys)
        try:
            payload, data = verify_command(envelope, self._pinned)
        except CommandRejected as refusal:
            await self._refuse(envelope, refusal, genuine=False)
            return
        now = self._clock.now()
        try:
            credential = self._credential()
            check_payload(
                payload,
                credential=credential,
                last_sequence=self._ledger.last_sequence_for(credential.agent_id),
                now=now,
            )
            order = self._check_order(envelope, payload, now)
        except CommandRejected as refusal:
            if known is not None and refusal.code == "stale_sequence":
                await self._redelivered(known)
                return
            await self._refuse(envelope, refusal, genuine=True)
            return
        log.warning(
            "accepted %s command %s (sequence %d, signed by %s) from %s: %s%s",
            payload.type,
            payload.command_id,
            payload.sequence,
            printable(payload.key_id),
            printable(payload.issuer),
            printable(payload.reason),
            printable(
                f" (order {order.order_id} for {order.hostname} by {order.requester}, "
                f"components {', '.join(order.components)})"
            )
            if order
            else "",
        )
        self._ledger.accept(
            payload,
            data,
            now,
            order=base64.b64decode(envelope.order) if order and envelope.order else None,
            components=list(order.components) if order else None,
        )
        await self.run(Job(payload, order, self._ledger))

    def _check_order(
        self, envelope: SignedCommand, payload: CommandPayload, now: datetime
    ) -> OffboardOrder | None:
        if payload.type != "offboard":
            return None
        required = self._orders.required
        if required == 0 and not envelope.order and payload.order_sha256 is None:
            return None  # the single-signature mode this agent's config chose explicitly
        return verify_order(
            envelope.order,
            envelope.approvals,
            order_sha256=payload.order_sha256,
            command_id=payload.command_id,
            agent_id=payload.agent_id,
            machine_id=payload.machine_id,
            pinned=self._operators or {},
            required=required,
            now=now,
        )

    async def _redelivered(self, known: AcceptedCommand) -> None:
        """A genuine re-delivery of a command accepted before: never run it again, but finish it
        if a restart interrupted it."""
        if known.state == "running":
            await self.run(self._job_of(known))
        else:
            log.debug("command %s delivered again; already done", known.command_id)

    def _job_of(self, record: AcceptedCommand) -> Job:
        from wire.orders import decode_order

        order = decode_order(base64.b64decode(record.order)) if record.order else None
        return Job(self._ledger.payload_of(record), order, self._ledger)

    async def resume(self) -> None:
        """After a restart: finish what was accepted but never finished, and a departure that a
        crash interrupted after a successful offboard."""
        if self._ledger.damaged is not None:
            return
        for record in self._ledger.unfinished():
            log.warning("resuming command %s interrupted by a restart", record.command_id)
            await self.run(self._job_of(record))
        await self.depart_if_offboarded()

    async def depart_if_offboarded(self) -> bool:
        """If an offboard succeeded here, the agent still owes its departure: do it now."""
        if self._ledger.damaged is not None or self._on_offboarded is None:
            return False
        done = self._ledger.succeeded_offboard(self._credential().agent_id)
        if done is None:
            return False
        log.warning("offboard %s succeeded; finishing the agent's departure", done.command_id)
        await self._on_offboarded(done.command_id)
        return True

    async def run(self, job: Job) -> None:
        try:
            result = await self._execute(job)
        except LedgerDamaged as exc:
            log.error("command %s stopped: %s", job.command_id, exc)
            return
        result = _stamped(result, self._clock.now())
        await self._report(job.command_id, result)  # durable in the spool first
        self._ledger.finish(job.command_id, result)
        if job.payload.type == "offboard" and result.status == "succeeded" and self._on_offboarded:
            await self._on_offboarded(job.command_id)

    async def _refuse(
        self, envelope: SignedCommand, refusal: CommandRejected, *, genuine: bool
    ) -> None:
        suppressed = self._refusals.decide(envelope, refusal.code, genuine=genuine)
        if suppressed is None:
            log.debug("REFUSED command %s again: %s", printable(envelope.command_id), refusal)
            return
        log.error("REFUSED command %s: %s", printable(envelope.command_id), printable(str(refusal)))
        await self._report(
            envelope.command_id,
            CommandResultRequest(
                status="rejected",
                reason=f"{refusal.code}: {refusal.detail}"[:2000],
                agent_time=format_instant(self._clock.now()),
                suppressed=suppressed or None,
            ),
        )


def _stamped(result: CommandResultRequest, now: datetime) -> CommandResultRequest:
    import msgspec

    return msgspec.structs.replace(result, agent_time=format_instant(now))


__all__ = [
    "CommandHandler",
    "CommandLedger",
    "Job",
    "OrderPolicy",
    "RefusalReports",
    "check_payload",
    "describe_skew",
    "pinned_keys",
]
