"""Billing months and their cutoffs: 00:00 on the 1st in the client's time zone, stored in UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

_MONTH = re.compile(r"(\d{4})-(\d{2})")


class MonthError(ValueError):
    """Text that is not a month written as YYYY-MM."""


@dataclass(frozen=True, order=True, slots=True)
class Month:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1 <= self.year <= 9998:
            raise MonthError(f"{self.year:04d}-{self.month:02d} is not a month")

    @classmethod
    def parse(cls, text: str) -> Month:
        match = _MONTH.fullmatch(text.strip())
        if match is None:
            raise MonthError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-03")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def containing(cls, moment: datetime, zone: ZoneInfo) -> Month:
        local = moment.astimezone(zone)
        return cls(local.year, local.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def compact(self) -> str:
        return f"{self.year:04d}{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def cutoff(self, zone: ZoneInfo) -> datetime:
        """00:00 on the 1st in `zone`, as a UTC instant.

        Where a daylight-saving change skips local midnight, the cutoff is the instant the day
        starts; where midnight happens twice, it is the first one.
        """
        local_midnight = datetime(self.year, self.month, 1, tzinfo=zone)
        return local_midnight.astimezone(UTC)
