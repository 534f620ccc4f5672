"""Plain-text tables and summaries for the command line.

Every cell goes through `wire.text.printable` here, once: host names, client names and the
agents' texts come from elsewhere and must not drive the terminal. Columns are as wide as their
widest cell; nothing is cut, so a copied id is always whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from wire.text import printable

GAP = "  "


def cell(value: object) -> str:
    """How one value reads in a table: nothing is `-`, a flag is yes/no, a list is joined."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return printable(str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str) -> str:
    """A header line and one line per row, columns aligned; `empty` when there is no row."""
    cells = [[cell(v) for v in row] for row in rows]
    if not cells:
        return empty
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = [headers, *cells]
    return "\n".join(
        GAP.join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    """A summary of one thing: a `label  value` line per field, the values aligned."""
    rows = [(label, cell(value)) for label, value in pairs]
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{label.ljust(width)}{GAP}{value}".rstrip() for label, value in rows)
