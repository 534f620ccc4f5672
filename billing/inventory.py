"""The inventory as the collector's `GET /v1/inventory` returns it, read with little memory.

A saved response of a million machines is several hundred megabytes. The envelope is decoded with
each row kept as a zero-copy `msgspec.Raw` slice of the buffer; rows are then decoded one at a time,
so only the rows billing keeps stay in memory. Unknown keys are ignored: the collector may add some.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Kind = Literal["pc", "server"]
ComponentStatus = Literal["running", "stopped", "missing"]
Instant = Annotated[datetime, msgspec.Meta(tz=True)]


class InventoryError(ValueError):
    """An inventory that cannot be read; the message names where it came from."""


class Component(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    name: str
    status: ComponentStatus
    version: str | None = None
    required: bool = True


class Machine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One inventory row: the machine as it stood at the inventory's `as_of`."""

    machine_id: str
    client_id: str
    hostname: str
    kind: Kind
    first_seen: Instant
    last_seen: Instant
    offboarded_at: Instant | None = None
    components: tuple[Component, ...] = ()
    # The same hardware enrolled under another client: this row's record ends at `moved_at`.
    moved_at: Instant | None = None
    moved_to_client_id: str | None = None
    pending_kind: Kind | None = None  # reported by the agent, waiting for an admin; not billed


class Unmanaged(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A device on a client's network without an agent, as of the inventory's `as_of`."""

    client_id: str
    mac: str
    ip: str | None = None
    first_seen: Instant | None = None
    last_seen: Instant | None = None


class _Envelope(msgspec.Struct, gc=False):
    as_of: Instant
    machines: list[msgspec.Raw]
    unmanaged: list[Unmanaged] = []


class _AsOfOnly(msgspec.Struct):
    as_of: Instant


_ROW_DECODER = msgspec.json.Decoder(Machine)


@dataclass(slots=True)
class InventoryDocument:
    """A decoded envelope whose rows are decoded on demand (and validated then)."""

    source: str
    as_of: datetime
    rows: list[msgspec.Raw]
    unmanaged: list[Unmanaged] = field(default_factory=list)  # absent in older responses

    def __len__(self) -> int:
        return len(self.rows)

    def machines(self) -> Iterator[Machine]:
        decode = _ROW_DECODER.decode
        for index, raw in enumerate(self.rows):
            try:
                yield decode(raw)
            except msgspec.DecodeError as exc:
                detail = str(exc).replace("`$", f"`$.machines[{index}]")
                if "`$.machines[" not in detail:
                    detail = f"{detail} - at `$.machines[{index}]`"
                raise InventoryError(f"{self.source}: malformed row: {detail}") from exc


def decode_inventory(buffer: bytes | bytearray, source: str) -> InventoryDocument:
    try:
        envelope = msgspec.json.decode(buffer, type=_Envelope)
    except msgspec.DecodeError as exc:
        raise InventoryError(f"{source}: not an inventory response ({exc})") from exc
    return InventoryDocument(source, envelope.as_of, envelope.machines, envelope.unmanaged)


def peek_as_of(buffer: bytes | bytearray, source: str) -> datetime:
    """The `as_of` of a response; the rest is checked for valid JSON but not kept."""
    try:
        return msgspec.json.decode(buffer, type=_AsOfOnly).as_of
    except msgspec.DecodeError as exc:
        raise InventoryError(f"{source}: not an inventory response ({exc})") from exc


def read_inventory_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise InventoryError(f"inventory file {path}: cannot be read ({reason})") from exc
