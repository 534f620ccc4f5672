"""The inventory as JSON text written by the database itself.

Over a million machines, building a Python object per row and per field, then encoding it again,
costs more than the query. So both stores have their SQL write each row's JSON object (the shape
of `GET /v1/inventory`'s `machines` items) and hand over batches of it as bytes; the handler only
copies them out. `records_from_json` turns the same text back into records, so the stores' own
tests check that one SQL path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime

import msgspec

from collector.store.base import InventoryRecord


class _Row(msgspec.Struct, frozen=True):
    machine_id: str
    client_id: str
    hostname: str
    kind: str
    first_seen: datetime
    last_seen: datetime
    offboarded_at: datetime | None
    moved_at: datetime | None
    moved_to_client_id: str | None
    pending_kind: str | None
    components: msgspec.Raw


_decode_rows = msgspec.json.Decoder(list[_Row]).decode


def decode_batch(chunk: bytes) -> list[InventoryRecord]:
    return [
        InventoryRecord(
            r.machine_id,
            r.client_id,
            r.hostname,
            r.kind,
            r.first_seen,
            r.last_seen,
            r.offboarded_at,
            bytes(r.components).decode(),
            r.moved_at,
            r.moved_to_client_id,
            r.pending_kind,
        )
        for r in _decode_rows(b"[" + chunk + b"]")
    ]


async def records_from_json(
    chunks: AsyncGenerator[bytes, None],
) -> AsyncIterator[list[InventoryRecord]]:
    """The batches of `iter_inventory_json` as records; closing this closes the stream too."""
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            yield decode_batch(chunk)
