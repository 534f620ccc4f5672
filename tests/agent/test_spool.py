"""The durable spool: ordered, survives restarts, bounded without ever dropping a command result."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.events import Event, new_event
from agent.spool import Spool, inspect_spool


class StepClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


def event(clock: StepClock, n: int) -> Event:
    return new_event("component.changed", {"n": n}, clock=clock)


def test_items_come_back_in_the_order_they_were_spooled(tmp_path: Path) -> None:
    clock = StepClock()
    spool = Spool(tmp_path)
    spool.put_event(event(clock, 1))
    spool.put_result("cmd-1", b'{"status":"succeeded","steps":[]}')
    spool.put_event(event(clock, 2))
    items = spool.pending()
    assert [item.kind for item in items] == ["event", "result", "event"]
    assert [items[0].event().detail["n"], items[2].event().detail["n"]] == [1, 2]
    result = items[1].result()
    assert result.command_id == "cmd-1"
    assert json.loads(bytes(result.body)) == {"status": "succeeded", "steps": []}


def test_the_spool_survives_a_restart_and_keeps_numbering_forward(tmp_path: Path) -> None:
    clock = StepClock()
    first = Spool(tmp_path)
    first.put_event(event(clock, 1))
    first.put_event(event(clock, 2))
    second = Spool(tmp_path)
    second.put_event(event(clock, 3))
    assert [item.event().detail["n"] for item in second.pending()] == [1, 2, 3]


def test_acknowledged_items_are_gone_for_good(tmp_path: Path) -> None:
    clock = StepClock()
    spool = Spool(tmp_path)
    for n in range(3):
        spool.put_event(event(clock, n))
    spool.acknowledge(spool.pending()[:2])
    assert [item.event().detail["n"] for item in Spool(tmp_path).pending()] == [2]


def test_a_full_spool_drops_the_oldest_events_and_never_a_command_result(tmp_path: Path) -> None:
    clock = StepClock()
    spool = Spool(tmp_path, max_events=10)
    spool.put_result("cmd-early", b"{}")
    for n in range(25):
        spool.put_event(event(clock, n))
    spool.put_result("cmd-late", b"{}")
    items = spool.pending()
    events = [item.event().detail["n"] for item in items if item.kind == "event"]
    results = [item.result().command_id for item in items if item.kind == "result"]
    assert events == list(range(15, 25))
    assert results == ["cmd-early", "cmd-late"]
    counts = spool.counts()
    assert (counts.events, counts.results) == (10, 2)


def test_the_bound_holds_across_restarts(tmp_path: Path) -> None:
    clock = StepClock()
    for n in range(12):
        Spool(tmp_path, max_events=10).put_event(event(clock, n))
    assert [i.event().detail["n"] for i in Spool(tmp_path).pending()] == list(range(2, 12))


def test_an_interrupted_write_leaves_no_half_item(tmp_path: Path) -> None:
    clock = StepClock()
    spool = Spool(tmp_path)
    spool.put_event(event(clock, 1))
    # What a crash between creating and renaming a temporary file leaves behind:
    (spool.directory / ".00000000000000000002.event.json.123.456.tmp").write_text('{"event_')
    reopened = Spool(tmp_path)
    assert [i.event().detail["n"] for i in reopened.pending()] == [1]
    assert not [p for p in reopened.directory.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_item_is_set_aside_not_sent_and_not_deleted(tmp_path: Path) -> None:
    clock = StepClock()
    spool = Spool(tmp_path)
    spool.put_event(event(clock, 1))
    spool.put_event(event(clock, 2))
    first = sorted(spool.directory.glob("*.event.json"))[0]
    first.write_text("not json")
    assert [i.event().detail["n"] for i in spool.pending()] == [2]
    assert (spool.directory / "rejected" / first.name).exists()
    assert spool.counts().rejected == 1


def test_a_refused_result_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put_result("cmd-1", b"{}")
    spool.set_aside(spool.pending()[0])
    assert spool.pending() == []
    assert inspect_spool(tmp_path).rejected == 1


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_spool_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        spool = Spool(tmp_path / "state")
        spool.put_event(event(StepClock(), 1))
        spool.put_result("cmd-1", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    for path in spool.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_inspect_reports_counts_and_the_oldest_event_time(tmp_path: Path) -> None:
    clock = StepClock()
    spool = Spool(tmp_path)
    first = event(clock, 1)
    spool.put_event(first)
    spool.put_event(event(clock, 2))
    spool.put_result("cmd-1", b"{}")
    counts = inspect_spool(tmp_path)
    assert (counts.events, counts.results, counts.total) == (2, 1, 3)
    assert counts.oldest_at == first.at
    assert inspect_spool(tmp_path / "elsewhere").total == 0


def test_state_files_are_replaced_whole_and_leftovers_cleared(tmp_path: Path) -> None:
    from agent.state import KnownStatus, StateStore

    store = StateStore(tmp_path / "state")
    store.prepare()
    store.save_status(KnownStatus(next_heartbeat_s=60))
    (store.directory / ".status.json.99.1.tmp").write_text("{")
    store.prepare()
    assert [p.name for p in store.directory.iterdir()] == ["status.json"]
    assert store.load_status().next_heartbeat_s == 60
