"""Whether the collector can still write: the proof `/healthz` and the pages rely on.

Heartbeats are acknowledged from memory, so a collector whose database stopped taking writes
(a read-only folder, a lock held elsewhere, a full disk) would still answer them. Every
committed last-seen flush, and an idle collector's periodic probe write, proves the database
takes writes; `/healthz` answers 503 once that proof is older than a few flush intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Writes this many flush intervals old (and at least this many seconds) make the collector
# unhealthy; an idle collector probes after `PROBE_AFTER` intervals.
STALE_AFTER_INTERVALS = 5
STALE_AFTER_MIN_S = 5.0
PROBE_AFTER_INTERVALS = 2


class WriteHealth:
    def __init__(self, flush_interval_s: float, monotonic: Callable[[], float] = time.monotonic):
        self._interval = flush_interval_s
        self._monotonic = monotonic
        self._last_ok = monotonic()  # the store proved it writes when it opened
        self.last_error: str | None = None

    def ok(self) -> None:
        self._last_ok = self._monotonic()
        self.last_error = None

    def failed(self, error: BaseException) -> None:
        self.last_error = f"{type(error).__name__}: {error}"

    @property
    def age_s(self) -> float:
        """Seconds since the last write known to have committed."""
        return self._monotonic() - self._last_ok

    @property
    def stale_after_s(self) -> float:
        return max(STALE_AFTER_MIN_S, STALE_AFTER_INTERVALS * self._interval)

    @property
    def stale(self) -> bool:
        return self.age_s > self.stale_after_s

    @property
    def wants_probe(self) -> bool:
        return self.age_s > PROBE_AFTER_INTERVALS * self._interval

    def describe(self) -> str:
        detail = f"no database write has succeeded for {self.age_s:.0f} s"
        return f"{detail} ({self.last_error})" if self.last_error else detail
