"""The compact presence history answers inventory-as-of like a brute-force list of every heartbeat.

Hypothesis draws random heartbeat timelines (short gaps inside runs of presence, long gaps of
hours or weeks between them) and checks, at many instants including exactly 30 days after a
heartbeat, that membership by rule 3 is exact, `last_seen` is within one online window and the
hostname is the one reported last before the instant; on both engines.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.store import open_store
from collector.store.base import AgentIdentity, EnrollRequestRecord, Facts, HeartbeatRecord, Store
from collector.tokens import hash_token
from tests.collector.conftest import PostgresDatabase
from tests.support import postgres as pg
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


async def _enroll_one(store: Store) -> AgentIdentity:
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
            Facts("host-0", "os", "pc", "[]"),
            "agent",
            hash_token("agent"),
            None,
        ),
        now=START,
        gap_s=GAP.total_seconds(),
    )
    return AgentIdentity(outcome.agent_id, outcome.machine_id, outcome.client_id)


def beat(machine_id: str, at: datetime, **facts: str) -> HeartbeatRecord:
    return HeartbeatRecord(
        machine_id, at, at, facts.get("hostname"), facts.get("os"), facts.get("kind"), "[]"
    )


async def _history_matches_brute_force(
    url: str, beats: list[tuple[int, str]], probes: list[int]
) -> None:
    """Heartbeats `(gap after the previous, hostname)`; each is its own flush."""
    heartbeats = [(START, "host-0")]
    for gap, hostname in beats:
        heartbeats.append((heartbeats[-1][0] + timedelta(seconds=gap), hostname))
    times = [at for at, _ in heartbeats]
    store = await open_store(url)
    try:
        agent = await _enroll_one(store)
        for at, hostname in heartbeats[1:]:
            await store.apply_heartbeats(
                [beat(agent.machine_id, at, hostname=hostname)], gap_s=GAP.total_seconds()
            )
        instants = {START} | {START + timedelta(seconds=p) for p in probes}
        for at in times:
            instants |= {at, at + EXPIRY, at + EXPIRY - timedelta(microseconds=1), at + GAP}
            instants |= {at - timedelta(microseconds=1)}
        for moment in sorted(instants):
            rows = [r async for batch in store.iter_inventory(moment) for r in batch]
            true_last = brute_force_last_seen(times, moment)
            if moment <= START:
                assert rows == [], moment
                continue
            (row,) = rows
            assert true_last is not None
            assert true_last <= row.last_seen <= min(moment, true_last + GAP), moment
            assert (moment - row.last_seen < EXPIRY) == (moment - true_last < EXPIRY), moment
            following = [h for h in times if h > true_last]
            if not following or following[0] - true_last > GAP:
                assert row.last_seen == true_last, moment
            hostname = [name for at, name in heartbeats if at <= moment][-1]
            assert row.hostname == hostname, moment
            assert row.first_seen == START
    finally:
        await store.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    beats=st.lists(st.tuples(gaps, st.sampled_from(["host-0", "host-1"])), max_size=10),
    probes=st.lists(st.integers(min_value=-10, max_value=400 * 86400), max_size=6),
)
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_inventory_as_of_and_its_facts_match_a_brute_force_model(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    engine: str,
    beats: list[tuple[int, str]],
    probes: list[int],
) -> None:
    if engine == "postgres":
        database: PostgresDatabase = request.getfixturevalue("postgres_database")

        async def example() -> None:
            await pg.empty_tables(database.url, database.tables)
            await _history_matches_brute_force(database.url, beats, probes)

        pg.run_blocking(example())
        return
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        pg.run_blocking(
            _history_matches_brute_force(str(Path(folder) / "model.sqlite3"), beats, probes)
        )
