"""A durable, bounded, ordered queue of what the collector has not acknowledged yet.

One file per item in `state_dir/spool/`, named by a growing sequence number, written to a temporary
file, flushed, then renamed into place: a crash or `kill -9` leaves whole items only, and a restart
picks them up in order. Two kinds of item: telemetry **events** and command **results**. When the
spool holds more than `max_events` events the oldest events are dropped; command results are never
dropped. A result the collector refuses outright (a 4xx) is set aside in `spool/rejected/`, not
deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from agent.events import Event
from agent.state import FILE_MODE, ensure_private_dir, sync_dir, write_private_file

log = logging.getLogger(__name__)

ItemKind = Literal["event", "result"]
SPOOL_DIR = "spool"
REJECTED_DIR = "rejected"
_ITEM = re.compile(r"^(\d{20})\.(event|result)\.json$")


class ResultItem(msgspec.Struct, frozen=True, kw_only=True):
    """A command result waiting for `POST /v1/commands/{command_id}/result`."""

    command_id: str
    body: msgspec.Raw


@dataclass(frozen=True, slots=True)
class SpoolItem:
    seq: int
    kind: ItemKind
    data: bytes

    def event(self) -> Event:
        return msgspec.json.decode(self.data, type=Event)

    def result(self) -> ResultItem:
        return msgspec.json.decode(self.data, type=ResultItem)


@dataclass(frozen=True, slots=True)
class SpoolCounts:
    events: int
    results: int
    rejected: int
    oldest_at: str | None

    @property
    def total(self) -> int:
        return self.events + self.results


class Spool:
    def __init__(self, state_dir: Path, *, max_events: int = 10_000) -> None:
        self.directory = ensure_private_dir(state_dir / SPOOL_DIR)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._index: dict[int, ItemKind] = {}
        self._events = 0
        for name in sorted(os.listdir(self.directory)):
            path = self.directory / name
            if name.startswith(".") and name.endswith(".tmp"):
                # An item whose write was interrupted: it was never acknowledged to anyone.
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            match = _ITEM.match(name)
            if match:
                kind: ItemKind = "event" if match.group(2) == "event" else "result"
                self._index[int(match.group(1))] = kind
                self._events += kind == "event"
        self._next = max(self._index, default=0) + 1

    def _path(self, seq: int, kind: ItemKind) -> Path:
        return self.directory / f"{seq:020d}.{kind}.json"

    def put_event(self, event: Event) -> None:
        self._put("event", msgspec.json.encode(event))

    def put_result(self, command_id: str, body: bytes) -> None:
        item = ResultItem(command_id=command_id, body=msgspec.Raw(body))
        self._put("result", msgspec.json.encode(item))

    def _put(self, kind: ItemKind, data: bytes) -> None:
        with self._lock:
            seq = self._next
            self._next += 1
            write_private_file(self._path(seq, kind), data)
            self._index[seq] = kind
            if kind == "event":
                self._events += 1
                self._drop_excess_events()

    def _drop_excess_events(self) -> None:
        excess = self._events - self.max_events
        if excess <= 0:
            return
        victims = [seq for seq, kind in self._index.items() if kind == "event"][:excess]
        for seq in victims:
            with contextlib.suppress(FileNotFoundError):
                self._path(seq, "event").unlink()
            del self._index[seq]
            self._events -= 1
        sync_dir(self.directory)
        log.warning(
            "spool holds more than %d events: dropped the %d oldest (command results are kept)",
            self.max_events,
            len(victims),
        )

    def pending(self, limit: int = 1000) -> list[SpoolItem]:
        """The oldest `limit` items, in the order they were spooled."""
        with self._lock:
            chosen = sorted(self._index.items())[:limit]
        items: list[SpoolItem] = []
        for seq, kind in chosen:
            path = self._path(seq, kind)
            try:
                data = path.read_bytes()
                if kind == "event":
                    msgspec.json.decode(data, type=Event)
                else:
                    msgspec.json.decode(data, type=ResultItem)
            except FileNotFoundError:
                with self._lock:
                    self._forget(seq)
                continue
            except (OSError, msgspec.DecodeError) as exc:
                log.error("spool item %s is unreadable (%s); set aside", path.name, exc)
                self._set_aside(seq, kind)
                continue
            items.append(SpoolItem(seq, kind, data))
        return items

    def acknowledge(self, items: Iterable[SpoolItem]) -> None:
        """The collector has these: delete them."""
        with self._lock:
            for item in items:
                with contextlib.suppress(FileNotFoundError):
                    self._path(item.seq, item.kind).unlink()
                self._forget(item.seq)
            sync_dir(self.directory)

    def set_aside(self, item: SpoolItem) -> None:
        """Keep a refused item out of the queue without losing it."""
        self._set_aside(item.seq, item.kind)

    def _set_aside(self, seq: int, kind: ItemKind) -> None:
        with self._lock:
            rejected = ensure_private_dir(self.directory / REJECTED_DIR)
            source = self._path(seq, kind)
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, rejected / source.name)
                if os.name == "posix":
                    os.chmod(rejected / source.name, FILE_MODE)
            self._forget(seq)
            sync_dir(self.directory)

    def _forget(self, seq: int) -> None:
        kind = self._index.pop(seq, None)
        if kind == "event":
            self._events -= 1

    def counts(self) -> SpoolCounts:
        with self._lock:
            events = self._events
            results = len(self._index) - events
            first = min(self._index.items(), default=None)
        return SpoolCounts(
            events, results, _count_rejected(self.directory), _oldest_at(self.directory, first)
        )


def inspect_spool(state_dir: Path) -> SpoolCounts:
    """Counts for `rmm-agent status`, read without taking over the spool."""
    directory = state_dir / SPOOL_DIR
    events = results = 0
    first: tuple[int, ItemKind] | None = None
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return SpoolCounts(0, 0, 0, None)
    for name in names:
        match = _ITEM.match(name)
        if not match:
            continue
        kind: ItemKind = "event" if match.group(2) == "event" else "result"
        if first is None:
            first = (int(match.group(1)), kind)
        if kind == "event":
            events += 1
        else:
            results += 1
    return SpoolCounts(events, results, _count_rejected(directory), _oldest_at(directory, first))


def _count_rejected(directory: Path) -> int:
    try:
        return sum(1 for name in os.listdir(directory / REJECTED_DIR) if _ITEM.match(name))
    except FileNotFoundError:
        return 0


def _oldest_at(directory: Path, first: tuple[int, ItemKind] | None) -> str | None:
    """When the oldest pending item was recorded: the event's own time, or the file's."""
    if first is None:
        return None
    seq, kind = first
    path = directory / f"{seq:020d}.{kind}.json"
    try:
        if kind == "event":
            return msgspec.json.decode(path.read_bytes(), type=Event).at
        from datetime import UTC, datetime

        from wire.times import format_instant

        return format_instant(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    except (OSError, msgspec.DecodeError):
        return None
