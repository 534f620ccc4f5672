from __future__ import annotations

import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing.currencies import MINOR_UNITS, minor_unit
from billing.months import Month, MonthError
from tests.billing.factories import at


def test_month_parses_yyyy_mm_and_steps_across_years() -> None:
    assert Month.parse("2026-01").previous() == Month(2025, 12)
    assert Month.parse("2025-12").next() == Month(2026, 1)
    assert str(Month(2026, 3)) == "2026-03"


@pytest.mark.parametrize("text", ["2026-13", "2026-3", "March", "2026-03-01", ""])
def test_month_must_be_written_yyyy_mm(text: str) -> None:
    with pytest.raises(MonthError):
        Month.parse(text)


@pytest.mark.parametrize(
    ("zone", "cutoff"),
    [
        ("UTC", "2026-03-01T00:00:00Z"),
        ("America/New_York", "2026-03-01T05:00:00Z"),
        ("Pacific/Auckland", "2026-02-28T11:00:00Z"),
        ("Asia/Kolkata", "2026-02-28T18:30:00Z"),
    ],
)
def test_cutoff_is_midnight_on_the_first_in_the_clients_zone(zone: str, cutoff: str) -> None:
    assert Month(2026, 3).cutoff(ZoneInfo(zone)) == at(cutoff)


def test_minor_units_follow_iso_4217() -> None:
    assert minor_unit("USD") == Decimal("0.01")
    assert minor_unit("JPY") == Decimal("1")
    assert minor_unit("KWD") == Decimal("0.001")
    assert minor_unit("CLF") == Decimal("0.0001")
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in MINOR_UNITS)
    assert "XAU" not in MINOR_UNITS  # gold has no minor unit and is never invoiced
