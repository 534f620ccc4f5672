"""JSON shapes the collector answers with (people's side), built from store records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from collector.store.base import (
    AuditEntry,
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


class AuditView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    at: str
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


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
