"""Handing signed commands to agents in their heartbeat responses.

Which machines have open commands is kept in memory and refreshed from the database every few
seconds, so the heartbeat of a machine with nothing to do costs no database read at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from collector.keys import KeyRing
from collector.store.base import AgentIdentity, ApprovalRecord, CommandRecord, Store
from wire.messages import Approval, SignedCommand
from wire.signing import CommandPayload, sign_command
from wire.times import format_instant

log = logging.getLogger(__name__)


class OpenCommands:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._machines: set[str] = set()

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._machines

    def add(self, machine_id: str) -> None:
        self._machines.add(machine_id)

    def discard(self, machine_id: str) -> None:
        self._machines.discard(machine_id)

    async def refresh(self) -> None:
        self._machines = await self._store.machines_with_open_commands()


class CommandSigner:
    """Signs each delivery afresh: a short expiry, the newest key the agent pins."""

    def __init__(self, keyring: KeyRing, ttl: timedelta) -> None:
        self.keyring = keyring
        self.ttl = ttl

    def can_sign_for(self, pinned_ids: list[str] | None) -> bool:
        return self.keyring.signing_key(pinned_ids) is not None

    def sign(
        self,
        command: CommandRecord,
        pinned_ids: list[str] | None,
        now: datetime,
        approvals: Sequence[ApprovalRecord] = (),
        *,
        with_order: bool = True,
    ) -> SignedCommand:
        """The delivery signature; an offboard with an order carries it and its approvals,
        bound to this delivery by the order's SHA-256 in the signed payload. An agent that
        requires no approvals (`offboard_approvals = 0`, or one that predates orders) gets the
        command as before, without the order: it uninstalls its whole catalogue."""
        with_order = with_order and command.order_b64 is not None
        key = self.keyring.signing_key(pinned_ids)
        if key is None:
            raise LookupError("no active signing key is pinned by this agent")
        payload = CommandPayload(
            command_id=command.command_id,
            type=command.type,
            agent_id=command.agent_id,
            machine_id=command.machine_id,
            client_id=command.client_id,
            issuer=command.issuer,
            reason=command.reason,
            ticket=command.ticket,
            sequence=command.sequence,
            issued_at=format_instant(now),
            expires_at=format_instant(now + self.ttl),
            key_id=key.key_id,
            order_sha256=command.order_sha256 if with_order else None,
        )
        signed = sign_command(payload, key.private_key)
        if not with_order:
            return signed
        return msgspec.structs.replace(
            signed,
            order=command.order_b64,
            approvals=[Approval(key_id=a.key_id, signature=a.signature) for a in approvals],
        )


async def deliver(
    store: Store,
    open_commands: OpenCommands,
    signer: CommandSigner,
    identity: AgentIdentity,
    pinned_ids: list[str] | None,
    now: datetime,
    approvals_required: int | None = None,
) -> list[SignedCommand]:
    """`approvals_required`: what the agent said in this heartbeat (None: it did not say)."""
    if not signer.can_sign_for(pinned_ids):
        log.warning(
            "machine %s has a command waiting but its agent pins none of the active keys %s",
            identity.machine_id,
            [k.key_id for k in signer.keyring.active],
        )
        return []
    records = await store.commands_for_delivery(identity, now=now)
    if not records:
        open_commands.discard(identity.machine_id)
    with_order = bool(approvals_required)
    return [
        signer.sign(
            record,
            pinned_ids,
            now,
            await store.command_approvals(record.command_id) if with_order else (),
            with_order=with_order,
        )
        for record in records
    ]
