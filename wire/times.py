"""Instants on the wire: ISO-8601 with an offset; the collector always writes UTC with `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# "30 days" is 720 hours between instants, whatever the calendar or daylight saving does.
EXPIRY = timedelta(hours=720)


class InstantError(ValueError):
    """A string that is not an ISO-8601 instant with an offset."""


def format_instant(moment: datetime) -> str:
    """`2026-11-25T02:28:33.123456Z`; the fraction is left out when it is zero."""
    if moment.tzinfo is None:
        raise InstantError("naive datetimes are never written on the wire")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant; an offset (or `Z`) is required, so the instant is unambiguous."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise InstantError(f"{text!r} is not an ISO-8601 date and time") from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InstantError(f"{text!r} has no UTC offset; add one, e.g. 'Z' or '+02:00'")
    return moment.astimezone(UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, the storage form of an instant (exact, portable)."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
