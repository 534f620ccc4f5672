"""Inventory as of any instant: every machine enrolled before it, each field as it stood then.

The query is each engine's own (the billing job reads a million machines through it): see
`collector.store.sqlite.inventory` and `collector.store.postgres.inventory`. Both answer from one
consistent snapshot and write each machine's JSON object in the database.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime

from collector.store.inventory_json import records_from_json
from collector.store.part import StorePart
from collector.store.records import InventoryRecord


class Inventory(StorePart):
    def iter_inventory_json(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncGenerator[bytes, None]:
        return self._engine.iter_inventory_json(as_of, batch_size=batch_size)

    def iter_inventory(
        self, as_of: datetime, *, batch_size: int = 5000
    ) -> AsyncIterator[list[InventoryRecord]]:
        return records_from_json(self.iter_inventory_json(as_of, batch_size=batch_size))
