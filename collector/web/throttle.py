"""Slowing down password and code guessing at sign-in: failures are counted per user name and
per client address, and once either is over its limit the attempt is refused *before* anything
is checked, so a right guess made while throttled does not get in either.

These counts live in this instance's memory; the sign-in also counts the failures for a user
name that every instance audited within the window (`signin.throttled`), so a restart or another
instance does not start the name afresh. The clock is the app's own, so tests move time on
instead of waiting.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

USER_FAILURES = 5
ADDRESS_FAILURES = 20
WINDOW = timedelta(minutes=15)
_MAX_KEYS = 100_000


class SignInThrottle:
    def __init__(
        self,
        user_failures: int = USER_FAILURES,
        address_failures: int = ADDRESS_FAILURES,
        window: timedelta = WINDOW,
    ) -> None:
        self._limits = {"user": user_failures, "address": address_failures}
        self._window = window
        self._failures: dict[tuple[str, str], deque[datetime]] = {}

    def _recent(self, key: tuple[str, str], now: datetime) -> deque[datetime]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def blocked(self, user: str, address: str, now: datetime) -> str | None:
        """Which limit an attempt is over (`user` or `address`), or None."""
        for kind, value in (("user", user.casefold()), ("address", address)):
            if len(self._recent((kind, value), now)) >= self._limits[kind]:
                return kind
        return None

    def fail(self, user: str, address: str, now: datetime) -> None:
        if len(self._failures) > _MAX_KEYS:
            horizon = now - self._window
            self._failures = {k: t for k, t in self._failures.items() if t and t[-1] > horizon}
        for key in (("user", user.casefold()), ("address", address)):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, user: str) -> None:
        """A full sign-in clears the person's count (their address's stays)."""
        self._failures.pop(("user", user.casefold()), None)
