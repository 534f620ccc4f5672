"""JSON shapes the collector answers with (people's side), built from store records."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import msgspec

from collector.buffer import HeartbeatBuffer
from collector.store.base import (
    AuditEntry,
    HeldEnrollmentInfo,
    MachineRecord,
    StateWindows,
    machine_state,
)
from wire.times import format_instant


class MachineView(msgspec.Struct, frozen=True, kw_only=True):
    """Instants stay datetimes: msgspec writes them as RFC 3339 with `Z`, exactly as
    `format_instant` does, and several times faster (it matters over a million rows)."""

    machine_id: str
    client_id: str
    hostname: str
    os: str
    kind: str
    first_seen: datetime
    last_seen: datetime
    state: str
    offboarded_at: datetime | None
    agent_id: str | None
    components: msgspec.Raw
    # The agent's clock minus the collector's at its last heartbeat, when the agent says.
    clock_offset_s: float | None = None
    # The kind the agent reports when it differs from the billed `kind` (an admin confirms).
    pending_kind: str | None = None
    # What the NOC should look at: `clock_skew` (over a minute either way) and more to come.
    flags: list[str] = []
    # As last reported: the agent's version, who is logged in, the machine's own IP addresses
    # (from its network section); null when never reported.
    agent_version: str | None = None
    users: list[str] | None = None
    addresses: list[str] | None = None


class AuditView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    at: str
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


# An agent whose clock is this far from the collector's refuses signed commands as not yet valid
# or expired at some point: the NOC sees it flagged long before that.
CLOCK_SKEW_MS = 60_000


def machine_flags(record: MachineRecord) -> list[str]:
    flags = []
    if record.clock_offset_ms is not None and abs(record.clock_offset_ms) > CLOCK_SKEW_MS:
        flags.append("clock_skew")
    if record.pending_kind is not None:
        flags.append("kind_change_pending")
    if record.clone_suspected:
        flags.append("clone_suspected")
    return flags


def with_buffered(record: MachineRecord, buffer: HeartbeatBuffer) -> MachineRecord:
    """The record with heartbeats acknowledged but not yet flushed: a stalled database never
    shows machines that are heartbeating as offline."""
    buffered = buffer.last_at(record.machine_id)
    if buffered is None or buffered <= record.last_seen:
        return record
    return replace(record, last_seen=buffered)


def machine_view(record: MachineRecord, windows: StateWindows) -> MachineView:
    return MachineView(
        machine_id=record.machine_id,
        client_id=record.client_id,
        hostname=record.hostname,
        os=record.os,
        kind=record.kind,
        first_seen=record.first_seen,
        last_seen=record.last_seen,
        state=machine_state(record, windows),
        offboarded_at=record.offboarded_at,
        agent_id=record.agent_id,
        components=msgspec.Raw(record.components_json.encode()),
        clock_offset_s=None if record.clock_offset_ms is None else record.clock_offset_ms / 1000,
        flags=machine_flags(record),
        pending_kind=record.pending_kind,
        agent_version=record.agent_version,
        users=None if record.users is None else list(record.users),
        addresses=None if record.addresses is None else list(record.addresses),
    )


def audit_view(entry_id: int, entry: AuditEntry) -> AuditView:
    return AuditView(
        id=entry_id,
        at=format_instant(entry.at),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        detail=entry.detail,
    )


def held_view(held: HeldEnrollmentInfo) -> dict[str, Any]:
    """An enrollment held for a technician's approval, as the API and the CLI show it."""
    return {
        "machine_id": held.machine_id,
        "client_id": held.client_id,
        "hostname": held.hostname,
        "address": held.address,
        "first_at": format_instant(held.first_at),
        "last_at": format_instant(held.last_at),
        "attempts": held.attempts,
    }
