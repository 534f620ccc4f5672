"""Records of coverage: devices seen on clients' networks, and suspected clones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from collector.store.records import NotFound


@dataclass(frozen=True, slots=True)
class UnmanagedDevice:
    """A device a client's agents saw whose MAC no enrolled machine owns (see
    `collector.rules.network`); `seen_by` is empty in inventories."""

    client_id: str
    mac: str
    ip: str
    first_seen: datetime
    last_seen: datetime
    seen_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DismissedDevice:
    client_id: str
    mac: str
    ip: str | None
    reason: str
    actor: str
    at: datetime
    last_seen: datetime | None = None


class DeviceNotFound(NotFound):
    """No agent of the client has seen a device with that MAC."""


@dataclass(frozen=True, slots=True)
class CloneSuspicion:
    """Two copies suspected behind one machine (see `collector.rules.clones`), and how a
    technician resolved it."""

    id: int
    machine_id: str
    kind: Literal["heartbeats", "enrollment"]
    detected_at: datetime
    # The two identities seen: [{"id", "hostname", "macs", "held", "address"}, ...].
    candidates: list[dict[str, Any]]
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    reason: str | None = None
    kept_hostname: str | None = None
    split_hostname: str | None = None
    split_machine_id: str | None = None
