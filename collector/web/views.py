"""What the pages show, computed from store records: labels, ages, paging, the presence timeline.

Nothing here reads the store; the routes fetch, these functions shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from collector.store.base import CoveragePeriod, PresenceHistory, PresenceRun
from wire.times import EXPIRY

STATE_LABELS: dict[str, str] = {
    "online": "Online",
    "offline": "Offline",
    "expired": "Expired",
    "offboard_pending": "Offboard pending",
    "offboarded": "Offboarded",
    "offboard_failed": "Offboard failed",
    "awaiting_approval": "Awaiting approval",
    "moved": "Moved to another client",
    "cancelled": "Cancelled",
}

COMPONENT_STATUS_LABELS: dict[str, str] = {
    "running": "running",
    "stopped": "stopped",
    "missing": "missing",
    "gap": "not covered (a required component not running)",
    "covered": "covered (every required component running)",
}

# Components the deployment is made of; other names reported by agents are shown as they come.
KNOWN_COMPONENTS: tuple[str, ...] = ("rmm", "antivirus", "dns_protection", "backup")

# Audit actions whose target is a machine id (the page links them to the machine).
MACHINE_ACTIONS: frozenset[str] = frozenset(
    {
        "machine.enrolled",
        "machine.reenrolled",
        "machine.expired",
        "offboard.requested",
        "offboard.completed",
        "offboard.failed",
        "command.delivered",
        "command.rejected",
    }
)

KNOWN_ACTIONS: tuple[str, ...] = (
    "api_token.created",
    "api_token.revoked",
    "client.created",
    "command.delivered",
    "command.rejected",
    "command.result_refused",
    "enrollment_token.created",
    "enrollment_token.revoked",
    "key.generated",
    "key.retired",
    "machine.enrolled",
    "machine.expired",
    "machine.reenrolled",
    "offboard.completed",
    "offboard.failed",
    "offboard.requested",
    "user.created",
    "user.disabled",
    "user.mfa_enrolled",
    "user.mfa_reset",
    "user.password_changed",
    "web.reauth_failed",
    "web.reauthenticated",
    "web.sign_in_failed",
    "web.sign_in_throttled",
    "web.signed_in",
    "web.signed_out",
    "web.token_signin_enabled",
)


def instant(moment: datetime | None) -> str:
    """`2026-03-02 09:00 UTC`: minutes are enough for a person; the exact value is in `title`."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def span(delta: timedelta) -> str:
    """A duration in the largest unit that fits: `45 s`, `12 min`, `5 h`, `3 days`."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86_400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    if moment >= now:
        return "just now"
    return f"{span(now - moment)} ago"


def percent(part: int, whole: int) -> str:
    if whole == 0:
        return "—"
    share = 100 * part / whole
    if part != whole and share > 99.9:
        return ">99.9 %"
    return f"{share:.1f} %" if share % 1 else f"{share:.0f} %"


def components_of(components_json: str) -> list[dict[str, Any]]:
    """The heartbeat's components, required ones first, then by name."""
    items: list[dict[str, Any]] = json.loads(components_json or "[]")
    return sorted(items, key=lambda c: (not c.get("required", True), str(c.get("name"))))


def component_summary(components_json: str, state: str | None = None) -> str:
    """`4 running`, or what is wrong: `antivirus stopped, backup missing`. For an offboarded
    machine, what the offboard removed: its agent reports no more, so nothing is `running`
    now; a component it did not remove is told as of its last report."""
    components = components_of(components_json)
    if state == "offboarded":
        kept = [c for c in components if c.get("status") != "missing"]
        if not kept:
            return "removed by the offboard"
        told = ", ".join(f"{c.get('name')} {c.get('status')}" for c in kept)
        return f"offboarded; last reported before it: {told}"
    if not components:
        return "none reported"
    wrong = [
        f"{c.get('name')} {c.get('status')}" for c in components if c.get("status") != "running"
    ]
    return ", ".join(wrong) if wrong else f"{len(components)} running"


def url(path: str, params: dict[str, Any]) -> str:
    """`path?query` with empty values left out, so links stay short and stable."""
    kept = {k: v for k, v in params.items() if v not in (None, "", False)}
    return f"{path}?{urlencode(kept)}" if kept else path


@dataclass(frozen=True, slots=True)
class Pager:
    page: int
    pages: int
    total: int
    first_item: int
    last_item: int
    previous_url: str | None
    next_url: str | None


def pager(path: str, params: dict[str, Any], *, page: int, size: int, total: int) -> Pager:
    pages = max(1, -(-total // size))
    first_item = 0 if total == 0 else (page - 1) * size + 1
    return Pager(
        page=page,
        pages=pages,
        total=total,
        first_item=first_item,
        last_item=min(total, page * size),
        previous_url=url(path, {**params, "page": page - 1}) if page > 1 else None,
        next_url=url(path, {**params, "page": page + 1}) if page < pages else None,
    )


# the presence timeline


TIMELINE_DAYS = 90
DAY_WIDTH = 10
TIMELINE_LEFT = 4
TIMELINE_TOP = 30
CELL_HEIGHT = 26


@dataclass(frozen=True, slots=True)
class DayCell:
    x: int
    day: str
    status: str  # "seen", "unseen" or "unenrolled"
    title: str


# An upper bound on the width of one character of a cutoff label (9.5 px, bold when billed), in
# the timeline's own units: a label that would run past the right edge is drawn left of its line.
LABEL_CHAR_WIDTH = 5.5


@dataclass(frozen=True, slots=True)
class CutoffMark:
    x: float
    label: str
    billed: bool
    why: str
    # Where the label is drawn: after the line ("start"), or before it ("end") near the edge.
    label_x: float = 0.0
    label_anchor: str = "start"


@dataclass(frozen=True, slots=True)
class MonthLabel:
    x: int
    text: str


@dataclass(frozen=True, slots=True)
class Timeline:
    width: int
    height: int
    cell_top: int
    cell_height: int
    cells: list[DayCell]
    months: list[MonthLabel]
    cutoffs: list[CutoffMark]
    expiry_x: float
    expiry_label: str
    days_seen: int
    start: datetime
    end: datetime


def _coverage_at(coverage: list[CoveragePeriod], moment: datetime) -> CoveragePeriod | None:
    """The coverage period in force at `moment`: the latest one enrolled before it."""
    periods = [p for p in coverage if p.first_seen < moment]
    return max(periods, key=lambda p: p.first_seen) if periods else None


def last_seen_at(runs: list[PresenceRun], moment: datetime) -> datetime | None:
    """The last heartbeat at or before `moment`, as the inventory computes it."""
    seen = [min(run.end, moment) for run in runs if run.start <= moment]
    return max(seen) if seen else None


def billed_at(history: PresenceHistory, cutoff: datetime) -> tuple[bool, str]:
    """Whether the machine was in inventory at `cutoff`, by the billing rules, and why."""
    period = _coverage_at(history.coverage, cutoff)
    if period is None:
        return False, "not enrolled yet"
    if period.offboarded_at is not None and period.offboarded_at <= cutoff:
        return False, "offboarded before it"
    last = last_seen_at(history.runs, cutoff)
    if last is None or cutoff - last >= EXPIRY:
        return False, "not seen in the 30 days before it (expired)"
    if cutoff - last < timedelta(minutes=1):
        return True, "online at the cutoff"
    return True, f"seen {span(cutoff - last)} before it"


def month_starts(start: datetime, end: datetime) -> list[datetime]:
    """Every 1st of a month, 00:00 UTC, in (start, end]."""
    moment = datetime(start.year, start.month, 1, tzinfo=UTC)
    found = []
    while moment <= end:
        if moment > start:
            found.append(moment)
        moment = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return found


def timeline(history: PresenceHistory, now: datetime) -> Timeline:
    """Day by day over the last 90 days (UTC): seen or not, the monthly cutoffs and whether the
    machine was billed at each, and the line 30 days back before which a last sighting means
    the machine has expired."""
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    first_day = today - timedelta(days=TIMELINE_DAYS - 1)
    start = first_day
    end = today + timedelta(days=1)
    scale = DAY_WIDTH / 86_400

    def x_of(moment: datetime) -> float:
        return TIMELINE_LEFT + (moment - start).total_seconds() * scale

    cells = []
    days_seen = 0
    for index in range(TIMELINE_DAYS):
        day = first_day + timedelta(days=index)
        day_end = day + timedelta(days=1)
        seen = any(run.start < day_end and run.end >= day for run in history.runs)
        enrolled = any(
            p.first_seen < day_end and (p.offboarded_at is None or p.offboarded_at >= day)
            for p in history.coverage
        )
        status = "seen" if seen else ("unseen" if enrolled else "unenrolled")
        days_seen += seen
        label = {"seen": "seen", "unseen": "not seen", "unenrolled": "not enrolled"}[status]
        cells.append(
            DayCell(
                x=TIMELINE_LEFT + index * DAY_WIDTH,
                day=day.strftime("%Y-%m-%d"),
                status=status,
                title=f"{day:%a %d %b %Y}: {label}",
            )
        )
    width = TIMELINE_LEFT * 2 + TIMELINE_DAYS * DAY_WIDTH
    cutoffs = []
    for cutoff in month_starts(start, now):
        billed, why = billed_at(history, cutoff)
        x = x_of(cutoff)
        label = f"{cutoff:%d %b} cutoff: {'billed' if billed else 'not billed'}"
        fits = x + 3 + len(label) * LABEL_CHAR_WIDTH <= width - TIMELINE_LEFT
        cutoffs.append(
            CutoffMark(
                x=x,
                label=label,
                billed=billed,
                why=why,
                label_x=x + 3 if fits else x - 3,
                label_anchor="start" if fits else "end",
            )
        )
    months = [
        MonthLabel(x=int(x_of(m)) + 2, text=f"{m:%b %Y}")
        for m in month_starts(start - timedelta(days=1), end)
        if m < end - timedelta(days=6)
    ]
    if not months or months[0].x > TIMELINE_LEFT + 6 * DAY_WIDTH:
        months.insert(0, MonthLabel(x=TIMELINE_LEFT + 2, text=f"{start:%d %b %Y}"))
    expiry = now - EXPIRY
    return Timeline(
        width=width,
        height=TIMELINE_TOP + CELL_HEIGHT + 34,
        cell_top=TIMELINE_TOP,
        cell_height=CELL_HEIGHT,
        cells=cells,
        months=months,
        cutoffs=cutoffs,
        expiry_x=x_of(expiry),
        expiry_label=f"30 days ago ({expiry:%d %b}): last seen before this line = expired",
        days_seen=days_seen,
        start=start,
        end=end,
    )


def next_cutoff(now: datetime) -> datetime:
    """The next monthly cutoff at 00:00 UTC (clients billed in other time zones are cut off at
    their own local midnight, a few hours either side)."""
    return month_starts(now, now + timedelta(days=32))[0]


def billed_again(last_seen: datetime, now: datetime) -> bool:
    """A machine that stays dark is still in inventory at the next cutoff if it expires after."""
    return last_seen + EXPIRY > next_cutoff(now)
