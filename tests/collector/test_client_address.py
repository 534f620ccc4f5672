"""Behind a reverse proxy the client's address comes from X-Forwarded-For, and only from proxies
the collector is told to trust; failed authentication is limited per client, not per proxy.

The test client connects from 127.0.0.1, which plays the proxy (nginx on the same host).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.auth import FailedAuthLimiter
from collector.errors import ApiError
from collector.settings import Settings, SettingsError, parse_networks, validate
from tests.collector.conftest import Harness, HarnessFactory

LIMIT = 30  # failed attempts per address per minute before 429


async def _failed_heartbeats(harness: Harness, forwarded_for: list[str | None]) -> list[int]:
    statuses = []
    for value in forwarded_for:
        headers = {"Authorization": "Bearer rmmagent_guess"}
        if value is not None:
            headers["X-Forwarded-For"] = value
        resp = await harness.client.post("/v1/heartbeat", json={"components": []}, headers=headers)
        statuses.append(resp.status)
    return statuses


def _limited_as_one_client(statuses: list[int]) -> bool:
    """The first LIMIT failures answered 401, every later one 429."""
    return statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}


async def test_forwarded_for_is_ignored_when_no_proxy_is_trusted(harness: Harness) -> None:
    forged: list[str | None] = [f"203.0.113.{i}" for i in range(LIMIT + 2)]
    assert _limited_as_one_client(await _failed_heartbeats(harness, forged))


async def test_behind_a_trusted_proxy_failures_count_per_client(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1")
    assert _limited_as_one_client(await _failed_heartbeats(harness, ["203.0.113.7"] * (LIMIT + 2)))
    # Another client behind the same proxy is not slowed down by the guesser.
    assert await _failed_heartbeats(harness, ["198.51.100.9"]) == [401]
    # And valid heartbeats are never limited, whoever guessed before.
    _, token = await harness.add_client()
    agent = await harness.enroll(token)
    await harness.heartbeat(agent["agent_token"])


async def test_a_client_cannot_escape_the_limit_by_writing_its_own_forwarded_for(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1")
    # nginx appends the address it saw to whatever the client sent: only that last entry counts.
    sent: list[str | None] = [f"192.0.2.{i}, 203.0.113.7" for i in range(LIMIT + 2)]
    assert _limited_as_one_client(await _failed_heartbeats(harness, sent))


async def test_a_chain_of_trusted_proxies_is_followed_back_to_the_client(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1, 10.0.0.0/8")
    # A load balancer (10.1.2.3) in front of nginx: each side's clients are told apart.
    first = await _failed_heartbeats(harness, ["203.0.113.7, 10.1.2.3"] * LIMIT)
    second = await _failed_heartbeats(harness, ["203.0.113.8, 10.1.2.3"] * LIMIT)
    assert first == second == [401] * LIMIT


async def test_an_untrusted_hop_in_the_chain_is_where_trust_ends(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1")
    # 10.1.2.3 is not trusted here: it is the client, whatever it claims to forward for.
    sent: list[str | None] = [f"203.0.113.{i}, 10.1.2.3" for i in range(LIMIT + 1)]
    assert _limited_as_one_client(await _failed_heartbeats(harness, sent))


async def test_a_malformed_forwarded_for_counts_against_the_proxy_itself(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(trusted_proxies="127.0.0.1")
    sent: list[str | None] = [f"203.0.113.{i}, not-an-address" for i in range(LIMIT)]
    assert _limited_as_one_client(await _failed_heartbeats(harness, [*sent, None, ""]))


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert [str(n) for n in parse_networks(" 127.0.0.1, 10.0.0.0/8,,::1 ")] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    with pytest.raises(SettingsError, match=r"nginx\.local"):
        validate(Settings(trusted_proxies="127.0.0.1, nginx.local"))


def test_a_bad_trusted_proxy_in_the_environment_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "rmm-collector"),
            "client",
            "list",
            "--db",
            str(tmp_path / "s.sqlite3"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "RMM_COLLECTOR_TRUSTED_PROXIES": "10.0.0.300"},
    )
    assert out.returncode == 2
    assert "trusted_proxies" in out.stderr and "10.0.0.300" in out.stderr


def test_addresses_that_stopped_failing_are_forgotten() -> None:
    limiter = FailedAuthLimiter(window_s=0.05, max_addresses=10)
    refused = ApiError(401, "invalid_token", "unknown")
    for i in range(11):
        assert limiter.fail_from(f"198.51.100.{i}", refused) is refused
    assert len(limiter) == 11  # all still within the window: nothing to forget yet
    time.sleep(0.1)
    for i in range(12):
        limiter.fail_from(f"203.0.113.{i}", refused)
    assert len(limiter) == 12  # the quiet ones are gone, the failing ones kept
    for _ in range(30):
        limiter.fail_from("203.0.113.0", refused)
    assert limiter.fail_from("203.0.113.0", refused).status == 429
