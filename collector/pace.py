"""How fast each enrollment token enrolls: an optional limit per minute (off by default, since a
roll-out enrolls hundreds of machines a minute) and the hourly alert threshold."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class EnrollmentPace:
    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._monotonic = monotonic
        self._seen: dict[str, deque[float]] = {}

    def allow(self, token_hash: str) -> bool:
        """Count one enrollment with this token; False when over the limit (nothing counted)."""
        if self._per_minute <= 0:
            return True
        now = self._monotonic()
        times = self._seen.setdefault(token_hash, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self._per_minute:
            return False
        times.append(now)
        if len(self._seen) > 10_000:  # forget tokens quiet for a minute
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - 60}
        return True
