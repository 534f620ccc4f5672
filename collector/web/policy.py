"""What the pages count as needing attention, and how much they show at once."""

from __future__ import annotations

from datetime import timedelta

PAGE_SIZE = 50
ATTENTION_LIMIT = 10
# "Offboards pending for days": a request the machine has not picked up within a day.
PENDING_FOR = timedelta(days=1)
# Offline this long but not expired: billed while dark; the client may want it offboarded.
STALE_AFTER = timedelta(days=7)
MAX_REASON = 1000
MAX_TICKET = 200
FINAL_STATES = ("offboarded", "offboard_failed")
