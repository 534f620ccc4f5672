"""PostgreSQL's side of the query layer: `timestamptz` instants, JSON through jsonb."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from collector.store.sql import Dialect


class PostgresDialect(Dialect):
    name = "postgresql"
    # Several instances write one database: rows a rule decides on are locked until commit.
    for_update = " FOR UPDATE"

    def instant(self, value: Any) -> datetime:
        return cast(datetime, value)

    def greatest(self, first: str, second: str) -> str:
        return f"GREATEST({first}, {second})"

    def contains_ci(self, column: str) -> str:
        return f"strpos(lower({column}), lower(?)) > 0"

    def order_nocase(self, column: str) -> str:
        # Case folded on ASCII letters only, then bytewise: SQLite's NOCASE order.
        return f'lower({column} COLLATE "C")'

    def plus_interval(self, column: str) -> str:
        return f"{column} + CAST(? AS interval)"

    def component_exists(self, where: str) -> str:
        return f"EXISTS (SELECT 1 FROM jsonb_array_elements(components::jsonb) j WHERE {where})"

    def component_field(self, name: str) -> str:
        return f"(j->>'{name}')"

    def component_required(self) -> str:
        return "COALESCE((j->>'required')::boolean, true)"

    def text_position(self, text: str, needle: str) -> str:
        return f"strpos({text}, '{needle}')"


POSTGRES = PostgresDialect()
