"""Runs of continuous presence, and how far back the history must reach.

A machine is present from one heartbeat to the next while they are no further apart than the
online window (three heartbeat intervals). A longer gap closes the current run; the next
heartbeat starts a new one. Inventory as of any instant T reads the run that started at or before
T: `last_seen` as of T is that run's end, or T itself inside it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from wire.times import EXPIRY


def closes_run(last_seen: datetime, seen_at: datetime, gap: timedelta) -> bool:
    """Whether a heartbeat (or an enrollment) at `seen_at` ends the run that reached
    `last_seen`. The last-seen flush applies this same rule set-based, in each engine's SQL."""
    return seen_at - last_seen > gap


def retention_horizon(now: datetime, keep: timedelta) -> datetime:
    """Answers as of instants at or after this stay exact when history is compacted.

    Every answer as of an instant T reads, per machine, the latest history row (run of presence,
    facts, coverage period) that started at or before T. For any T at or after the horizon that is
    the latest row started before the horizon, or a later one: older rows can never be read again,
    and compaction drops them (`Store.compact_history`). The horizon must lie further back than
    the 30-day expiry window, so that whether a machine expired is still known inside it."""
    assert keep > EXPIRY, "history must reach further back than the expiry window"
    return now - keep
