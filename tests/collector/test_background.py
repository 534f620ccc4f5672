"""Background jobs (last-seen flush, expiry sweep, polls) run start to start at their interval,
one run at a time; a slow run does not add a whole interval of waiting on top of itself.

These run on the real event loop clock with short intervals and generous margins.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from collections.abc import Awaitable, Callable

from collector.background import every


async def _starts(
    interval: float, run_for: float, job: Callable[[], Awaitable[None]]
) -> list[float]:
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def recorded() -> None:
        starts.append(loop.time())
        await job()

    task = asyncio.create_task(every(interval, "test", recorded))
    await asyncio.sleep(run_for)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return starts


def _gaps(starts: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(starts)]


async def test_a_quick_job_runs_once_per_interval() -> None:
    starts = await _starts(0.1, 0.75, lambda: asyncio.sleep(0.01))
    assert 5 <= len(starts) <= 8
    gaps = _gaps(starts)
    # Never early; late only by the loop's own delays (the median rides out one stall).
    assert min(gaps) >= 0.07 and statistics.median(gaps) <= 0.13


async def test_a_run_longer_than_the_interval_is_followed_at_once_by_the_next() -> None:
    running = 0
    overlapped = False

    async def slow() -> None:
        nonlocal running, overlapped
        running += 1
        overlapped |= running > 1
        await asyncio.sleep(0.3)
        running -= 1

    starts = await _starts(0.2, 1.6, slow)
    # Waiting a whole interval after each run would space them 0.5 s apart.
    assert len(starts) >= 4
    gaps = _gaps(starts)
    assert min(gaps) >= 0.28 and statistics.median(gaps) <= 0.42
    assert not overlapped


async def test_a_failing_job_keeps_its_interval_and_keeps_running() -> None:
    async def failing() -> None:
        raise RuntimeError("the database is down")

    starts = await _starts(0.1, 0.55, failing)
    assert len(starts) >= 4
    assert all(gap >= 0.07 for gap in _gaps(starts))
