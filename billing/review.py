"""Review before issue: a client whose machine count swings far from its previous invoice is held
as a draft, so a wrong inventory (a collector restored from an old backup, a client id typo) is
caught before a client receives the invoice."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class ReviewBounds:
    """Held when the count changes by more than `percent` and by at least `machines`."""

    percent: Decimal = Decimal(25)
    machines: int = 5


def swing_reason(previous: int, now: int, previous_number: str, bounds: ReviewBounds) -> str | None:
    """Why an invoice of `now` machines needs review against one of `previous`, or None."""
    change = now - previous
    if abs(change) < bounds.machines:
        return None
    if previous > 0 and Decimal(abs(change)) * 100 <= bounds.percent * previous:
        return None
    share = "from none" if previous == 0 else f"{Decimal(change) * 100 / previous:+.0f}%"
    return (
        f"{now:,} machines against {previous:,} on the previous invoice {previous_number} "
        f"({change:+,}, {share}); the bound is more than {bounds.percent}% and at least "
        f"{bounds.machines} machines"
    )
