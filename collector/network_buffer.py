"""Network sections held in memory until the last-seen flush writes them.

A heartbeat with a `network` section (at most one in fifteen: agents send one when it changes or
every 15 minutes) costs the hot path one dictionary assignment; the section is normalised and
written with the others of the same flush, in one transaction (`Store.apply_network`). Only the
latest section of a machine is kept between two flushes. A crash loses at most one flush
interval of sightings, as for last-seen times.
"""

from __future__ import annotations

from datetime import datetime

from collector.rules.network import NetworkReport, network_report
from collector.store.base import Store
from wire.messages import NetworkInfo


class NetworkBuffer:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, datetime, NetworkInfo]] = {}
        # Reports of a failed write, kept for the next one unless a newer section comes.
        self._returned: dict[str, NetworkReport] = {}

    def __len__(self) -> int:
        return len(self._pending.keys() | self._returned.keys())

    def add(self, machine_id: str, client_id: str, at: datetime, section: NetworkInfo) -> None:
        self._pending[machine_id] = (client_id, at, section)

    def take(self) -> list[NetworkReport]:
        pending, self._pending = self._pending, {}
        returned, self._returned = self._returned, {}
        reports = [
            network_report(
                machine_id,
                client_id,
                at,
                section.macs,
                [(n.mac, n.ip) for n in section.neighbors],
            )
            for machine_id, (client_id, at, section) in pending.items()
        ]
        return reports + [r for m, r in returned.items() if m not in pending]

    def put_back(self, reports: list[NetworkReport]) -> None:
        """A failed write returns its reports; a section buffered meanwhile wins."""
        for report in reports:
            if report.machine_id not in self._pending:
                self._returned[report.machine_id] = report


async def flush_network(store: Store, buffer: NetworkBuffer) -> int:
    """Write the buffered sections; on failure they wait for the next flush."""
    reports = buffer.take()
    if not reports:
        return 0
    try:
        await store.apply_network(reports)
    except Exception:
        buffer.put_back(reports)
        raise
    return len(reports)
