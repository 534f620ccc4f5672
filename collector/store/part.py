"""What every part of the store shares: its engine, and the audit log every write may add to."""

from __future__ import annotations

import json
from typing import Any

from collector.store.records import AuditEntry
from collector.store.sql import Dialect, Engine, Tx

AUDIT_INSERT = "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)"


def detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def audit_row(entry: AuditEntry) -> tuple[Any, ...]:
    return (entry.at, entry.actor, entry.action, entry.target, detail_json(entry.detail))


class StorePart:
    """Base of the store's parts (one per concern); `SQLStore` combines them over one engine."""

    _engine: Engine

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    @staticmethod
    async def _audit(tx: Tx, entry: AuditEntry) -> None:
        """Audit entries are written in the transaction whose change they record."""
        await tx.execute(AUDIT_INSERT, *audit_row(entry))
