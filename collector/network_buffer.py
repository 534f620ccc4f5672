"""Network sections held in memory until the last-seen flush writes them.

A heartbeat with a `network` section (at most one in fifteen: agents send one when it changes or
every 15 minutes) costs the hot path one dictionary assignment; the section is normalised and
written with the others of the same flush, in one transaction (`Store.apply_network`). Only the
latest section of a machine is kept between two flushes. A crash loses at most one flush
interval of sightings, as for last-seen times.

Sections mostly repeat (an office's LAN changes little), so a machine's section is written only
when it differs from the last one this process wrote for it, or when that was written in an
earlier hour (UTC): sightings are exact to the hour, which the 30-day window and the monthly
statement need, and a fleet's sections cost about one write per machine per hour.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime
from typing import Annotated

import msgspec

from collector.rules.network import NetworkReport, network_report
from collector.store.base import Store
from wire.messages import MAX_NEIGHBORS, HeartbeatRequest

log = logging.getLogger(__name__)

_HOUR_S = 3600
# Bounded as the wire's `NetworkInfo` is, without its per-string pattern (five times faster):
# a NUL can be in no MAC, and addresses are checked as they are read.
_Text = Annotated[str, msgspec.Meta(max_length=64)]


class _Neighbor(msgspec.Struct, frozen=True):
    ip: _Text
    mac: _Text


class _Section(msgspec.Struct, frozen=True):
    macs: Annotated[list[_Text], msgspec.Meta(max_length=64)] = []
    addresses: Annotated[list[_Text], msgspec.Meta(max_length=128)] = []
    neighbors: Annotated[list[_Neighbor], msgspec.Meta(max_length=MAX_NEIGHBORS)] = []


_decode_section = msgspec.json.Decoder(_Section).decode


class ReceivedHeartbeat(HeartbeatRequest, frozen=True, kw_only=True):
    """A heartbeat as the collector reads it: the network section kept as its raw JSON, so the
    hot path neither validates nor builds it (a fifth of a heartbeat's decoding time when it
    is there). The flush decodes it, only when it is to be written; a section that does not
    fit is dropped then (logged), the heartbeat having counted already."""

    network: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]


def _fingerprint(raw: bytes, at: datetime) -> int:
    """Equal for the same section within the same UTC hour."""
    return hash((int(at.timestamp()) // _HOUR_S, raw))


class NetworkBuffer:
    def __init__(self, max_remembered: int = 1_000_000) -> None:
        self._pending: dict[str, tuple[str, datetime, bytes]] = {}
        # Reports of a failed write, kept for the next one unless a newer section comes.
        self._returned: dict[str, NetworkReport] = {}
        # What was last written per machine (`_fingerprint`), and what the write under way adds.
        self._written: dict[str, int] = {}
        self._taking: dict[str, int] = {}
        self._max = max_remembered

    def __len__(self) -> int:
        return len(self._pending.keys() | self._returned.keys())

    def add(self, machine_id: str, client_id: str, at: datetime, section: bytes) -> None:
        """`section`: the network section's JSON as the agent sent it."""
        if section != b"null":
            self._pending[machine_id] = (client_id, at, section)

    def take(self) -> list[NetworkReport]:
        """The sections to write: those that differ from the last written for the machine, or
        come in a later hour. `committed` once they are written."""
        pending, self._pending = self._pending, {}
        returned, self._returned = self._returned, {}
        self._taking = {}
        reports = []
        for machine_id, (client_id, at, raw) in pending.items():
            fingerprint = _fingerprint(raw, at)
            if self._written.get(machine_id) == fingerprint:
                continue
            try:
                section = _decode_section(raw)
            except msgspec.DecodeError as exc:  # ValidationError included
                log.info("machine %s sent a network section that does not fit: %s", machine_id, exc)
                continue
            self._taking[machine_id] = fingerprint
            reports.append(
                network_report(
                    machine_id,
                    client_id,
                    at,
                    section.macs,
                    [(n.mac, n.ip) for n in section.neighbors if "\x00" not in n.ip],
                    section.addresses,
                )
            )
        return reports + [r for m, r in returned.items() if m not in pending]

    def committed(self) -> None:
        if len(self._written) + len(self._taking) > self._max:
            # Forget the oldest tenth (insertion order): they are written again, no harm done.
            for stale in list(itertools.islice(self._written, self._max // 10)):
                del self._written[stale]
        self._written.update(self._taking)
        self._taking = {}

    def put_back(self, reports: list[NetworkReport]) -> None:
        """A failed write returns its reports; a section buffered meanwhile wins."""
        self._taking = {}
        for report in reports:
            if report.machine_id not in self._pending:
                self._returned[report.machine_id] = report


async def flush_network(store: Store, buffer: NetworkBuffer) -> int:
    """Write the buffered sections; on failure they wait for the next flush."""
    reports = buffer.take()
    if not reports:
        buffer.committed()
        return 0
    try:
        await store.apply_network(reports)
    except Exception:
        buffer.put_back(reports)
        raise
    buffer.committed()
    return len(reports)
