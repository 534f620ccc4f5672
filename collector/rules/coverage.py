"""A client's coverage statement for one month: was protection running on every machine?

Which machines: every machine of the client in inventory at some point of the month, that is
with a coverage period (enrolled, not yet offboarded or moved away) overlapping the month and
seen within the 30 days (720 hours) before some instant of it (an expired machine is no longer
in inventory). Months are calendar months in UTC; the current month runs until now.

What "share" means, exactly: the collector does not keep every heartbeat, it keeps runs of
presence (heartbeats no further apart than the online window) and the component statuses as
they changed (`facts` rows, each valid from the heartbeat that first reported it). Heartbeats
arrive at a fixed interval while a machine is present, so the share of a machine's heartbeats in
which a component was running is measured as a share of time: the time within the month in which
the machine was heard from (inside its runs of presence and its coverage periods) and its latest
report showed the component running, divided by all the time it was heard from. Time in which
the agent had not reported its components yet (right after enrolling) is not heard time. A
machine heard only at single instants (runs of no length) is measured by those instants instead.

A required component is one that a report during the month marked required; while a report does
not list it, it counts as `missing`. A gap is a stretch of heard time in which a required
component was not running (from, to, which component, its status). A silence is a stretch of a
coverage period longer than the online window in which the machine was not heard from at all
(switched off, or cut off): it is listed, but it is not counted against the share, as the
statement says what ran while the machine was on. A machine is protected 100% when it was heard
from and every required component ran in all of that time. History older than the collector's
retention (`history_retention_days`) is compacted, so a statement for a month that far back is
only as exact as what was kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from wire.times import EXPIRY

Interval = tuple[datetime, datetime]
NOT_REPORTED = "[]"


class MonthError(ValueError):
    """Text that is no month (`YYYY-MM`), or a month that has not begun."""


def month_bounds(text: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a `YYYY-MM` month in UTC; a month that has not begun is refused."""
    try:
        start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise MonthError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-03") from exc
    if len(text) != 7:
        raise MonthError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-03")
    if start > now:
        raise MonthError(f"{text} has not begun; a coverage statement covers the past")
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


@dataclass(frozen=True, slots=True)
class MachineHistory:
    """What the store keeps of one machine, read for a statement."""

    machine_id: str
    hostname: str
    kind: str
    # Coverage periods: enrolled at the first instant, record ended at the second (or still on).
    periods: Sequence[tuple[datetime, datetime | None]]
    # Runs of presence, the current one included.
    runs: Sequence[Interval]
    # Component reports as they changed: (valid from, components JSON), oldest first.
    facts: Sequence[tuple[datetime, str]]


@dataclass(frozen=True, slots=True)
class Gap:
    component: str
    start: datetime
    end: datetime
    status: str


@dataclass(frozen=True, slots=True)
class ComponentCoverage:
    name: str
    # Share of heard time in which it was running (see the module); None if never heard.
    share: float | None
    running_s: float
    gaps: tuple[Gap, ...]


@dataclass(frozen=True, slots=True)
class MachineCoverage:
    machine_id: str
    hostname: str
    kind: str
    heard_s: float
    components: tuple[ComponentCoverage, ...]
    silences: tuple[Interval, ...]

    @property
    def heard(self) -> bool:
        return self.heard_s > 0 or any(c.share is not None for c in self.components)

    @property
    def protected(self) -> bool:
        """Heard from, and every required component ran all of that time."""
        return self.heard and all(c.share == 1.0 for c in self.components)


@dataclass(frozen=True, slots=True)
class Statement:
    start: datetime
    end: datetime
    complete: bool
    machines: tuple[MachineCoverage, ...] = field(default_factory=tuple)

    @property
    def protected(self) -> int:
        return sum(1 for m in self.machines if m.protected)

    @property
    def summary(self) -> str:
        total = len(self.machines)
        noun = "machine" if total == 1 else "machines"
        tail = "of the month" if self.complete else "of the month so far"
        return f"{self.protected} of {total} {noun} protected 100% {tail}"


def _clip(intervals: Sequence[Interval], within: Sequence[Interval]) -> list[Interval]:
    """Intersections of two sets of intervals (each sorted, non-overlapping or not)."""
    out: list[Interval] = []
    for a_start, a_end in intervals:
        for b_start, b_end in within:
            start, end = max(a_start, b_start), min(a_end, b_end)
            if start <= end:
                out.append((start, end))
    return _union(out)


def _union(intervals: Sequence[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _minus(whole: Sequence[Interval], parts: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in whole:
        cursor = start
        for p_start, p_end in parts:
            if p_end <= cursor or p_start >= end:
                continue
            if p_start > cursor:
                out.append((cursor, p_start))
            cursor = max(cursor, p_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def _statuses(components_json: str) -> dict[str, tuple[str, bool]]:
    """name -> (status, required) of one report."""
    return {
        c["name"]: (c["status"], bool(c.get("required", True))) for c in json.loads(components_json)
    }


def _segments(
    facts: Sequence[tuple[datetime, str]], heard: Sequence[Interval]
) -> list[tuple[datetime, datetime, dict[str, tuple[str, bool]]]]:
    """The heard intervals cut where the report in force changes, each with that report; time
    before any report, or under an empty one (not reported yet), is left out."""
    out = []
    ordered = sorted(facts)
    for h_start, h_end in heard:
        for index, (valid_from, components) in enumerate(ordered):
            valid_to = ordered[index + 1][0] if index + 1 < len(ordered) else None
            start = max(h_start, valid_from)
            end = h_end if valid_to is None else min(h_end, valid_to)
            # Reports hold from `valid_from` until the next one takes over (half-open).
            if start > end or (valid_to is not None and start >= valid_to):
                continue
            if components == NOT_REPORTED:
                continue
            out.append((start, end, _statuses(components)))
    return out


def machine_coverage(
    history: MachineHistory, start: datetime, end: datetime, *, grace: timedelta = timedelta(0)
) -> MachineCoverage:
    window = [(start, end)]
    periods = _clip([(s, e if e is not None else end) for s, e in history.periods], window)
    heard_runs = _clip(list(history.runs), periods)
    segments = _segments(history.facts, heard_runs)
    if any(e > s for s, e, _ in segments):
        segments = [(s, e, report) for s, e, report in segments if e > s]
    heard = [(s, e) for s, e, _ in segments]
    heard_s = sum((e - s).total_seconds() for s, e in heard)
    by_instant = heard_s == 0
    required = sorted(
        {name for _, _, report in segments for name, (_, req) in report.items() if req}
    )
    components = []
    for name in required:
        running = 0.0
        weight = 0.0
        gaps: list[Gap] = []
        for seg_start, seg_end, report in segments:
            status, req = report.get(name, ("missing", True))
            length = 1.0 if by_instant else (seg_end - seg_start).total_seconds()
            weight += length
            if status == "running" or not req:
                running += length
                continue
            last = gaps[-1] if gaps else None
            if last is not None and last.end == seg_start and last.status == status:
                gaps[-1] = Gap(name, last.start, seg_end, status)
            else:
                gaps.append(Gap(name, seg_start, seg_end, status))
        share = None if weight == 0 else running / weight
        components.append(
            ComponentCoverage(
                name=name,
                share=share,
                running_s=0.0 if by_instant else running,
                gaps=tuple(gaps),
            )
        )
    # A machine is not late until the online window after its last heartbeat has passed.
    silences = tuple(
        (a, b) for a, b in _minus(periods, _union(list(history.runs))) if b - a > grace
    )
    return MachineCoverage(
        machine_id=history.machine_id,
        hostname=history.hostname,
        kind=history.kind,
        heard_s=heard_s,
        components=tuple(components),
        silences=silences,
    )


def in_inventory(history: MachineHistory, start: datetime, end: datetime) -> bool:
    """Whether the machine was in inventory at some instant of [start, end): inside a coverage
    period, and seen within the 720 hours before that instant."""
    periods = _clip([(s, e if e is not None else end) for s, e in history.periods], [(start, end)])
    # Each sighting keeps the machine in inventory for the 720 hours after it.
    alive = _union([(s, e + EXPIRY) for s, e in history.runs])
    return any(s < end for s, _ in _clip(periods, alive))


def coverage_statement(
    histories: Sequence[MachineHistory],
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    grace: timedelta = timedelta(0),
) -> Statement:
    """The statement of [start, end), cut at `now` for the month under way; silences no
    longer than `grace` (the online window) are none."""
    until = min(end, now)
    machines = tuple(
        machine_coverage(h, start, until, grace=grace)
        for h in sorted(histories, key=lambda h: (h.hostname.lower(), h.machine_id))
        if in_inventory(h, start, until)
    )
    return Statement(start=start, end=until, complete=now >= end, machines=machines)
