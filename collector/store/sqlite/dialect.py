"""SQLite's side of the query layer: instants are INTEGER microseconds, JSON through json1."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.store.sql import Dialect
from wire.times import from_micros


class SQLiteDialect(Dialect):
    name = "sqlite"
    # One writer thread runs every write transaction (`BEGIN IMMEDIATE`): rows need no locks.
    for_update = ""

    def instant(self, value: Any) -> datetime:
        return from_micros(value)

    def greatest(self, first: str, second: str) -> str:
        return f"MAX({first}, {second})"

    def contains_ci(self, column: str) -> str:
        return f"instr(lower({column}), lower(?)) > 0"

    def order_nocase(self, column: str) -> str:
        return f"{column} COLLATE NOCASE"

    def plus_interval(self, column: str) -> str:
        return f"{column} + ?"

    def component_exists(self, where: str) -> str:
        return f"EXISTS (SELECT 1 FROM json_each(components) j WHERE {where})"

    def component_field(self, name: str) -> str:
        return f"json_extract(j.value, '$.{name}')"

    def component_required(self) -> str:
        return "IFNULL(json_extract(j.value, '$.required'), 1)"

    def text_position(self, text: str, needle: str) -> str:
        return f"instr({text}, '{needle}')"


SQLITE = SQLiteDialect()
