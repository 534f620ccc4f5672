"""The compact presence history answers inventory-as-of like a brute-force list of every heartbeat.

Hypothesis draws random heartbeat timelines (short gaps inside runs of presence, long gaps of
hours or weeks between them) and checks, at many instants including exactly 30 days after a
heartbeat, that membership by rule 3 is exact and `last_seen` is within one online window.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.store import open_store
from collector.store.base import EnrollRequestRecord, Facts, HeartbeatRecord
from collector.tokens import hash_token
from wire.times import EXPIRY

GAP = timedelta(seconds=180)  # the online window: three 60 s heartbeat intervals
START = datetime(2026, 1, 1, tzinfo=UTC)

gaps = st.one_of(
    st.integers(min_value=1, max_value=170),  # inside a run of presence
    st.integers(min_value=181, max_value=12 * 3600),  # switched off for hours
    st.integers(min_value=20 * 86400, max_value=40 * 86400),  # dark for weeks
    st.sampled_from([180, 181, 720 * 3600, 720 * 3600 + 1]),  # the boundaries
)


def brute_force_last_seen(heartbeats: list[datetime], moment: datetime) -> datetime | None:
    before = [h for h in heartbeats if h <= moment]
    return max(before) if before else None


async def _check(gap_seconds: list[int], probes: list[int]) -> None:
    heartbeats = [START]
    for gap in gap_seconds:
        heartbeats.append(heartbeats[-1] + timedelta(seconds=gap))
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(str(Path(folder) / "presence.sqlite3"))
        try:
            client = await store.create_client("Acme", now=START, actor="test")
            await store.add_enrollment_token(
                client.client_id,
                hash_token("enroll"),
                expires_at=START + timedelta(days=1),
                now=START,
                actor="test",
            )
            outcome = await store.enroll(
                EnrollRequestRecord(
                    hash_token("enroll"),
                    "hw",
                    Facts("h", "os", "pc", "[]"),
                    "agent",
                    hash_token("agent"),
                    None,
                ),
                now=START,
                gap_s=GAP.total_seconds(),
            )
            for beat in heartbeats[1:]:
                await store.apply_heartbeats(
                    [HeartbeatRecord(outcome.machine_id, beat, beat, None, None, None, "[]")],
                    gap_s=GAP.total_seconds(),
                )

            instants = {START}
            for beat in heartbeats:
                instants |= {
                    beat,
                    beat + EXPIRY,
                    beat + EXPIRY - timedelta(microseconds=1),
                    beat + GAP,
                    beat + timedelta(microseconds=1),
                }
            instants |= {START + timedelta(seconds=p) for p in probes}
            for moment in sorted(instants):
                rows = [r async for batch in store.iter_inventory(moment) for r in batch]
                true_last = brute_force_last_seen(heartbeats, moment)
                if moment <= START:
                    assert rows == [], moment
                    continue
                (row,) = rows
                assert true_last is not None
                assert true_last <= row.last_seen <= min(moment, true_last + GAP), moment
                in_inventory = moment - row.last_seen < EXPIRY
                assert in_inventory == (moment - true_last < EXPIRY), moment
                following = [h for h in heartbeats if h > true_last]
                if not following or following[0] - true_last > GAP:
                    assert row.last_seen == true_last, moment
        finally:
            await store.close()


@settings(max_examples=40, deadline=None)
@given(
    gap_seconds=st.lists(gaps, min_size=0, max_size=12),
    probes=st.lists(st.integers(min_value=-10, max_value=400 * 86400), max_size=8),
)
def test_inventory_as_of_matches_a_brute_force_model_of_every_heartbeat(
    gap_seconds: list[int], probes: list[int]
) -> None:
    asyncio.run(_check(gap_seconds, probes))
