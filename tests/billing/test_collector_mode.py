"""`rmm-billing --collector`: the inventory is read over HTTP, never from the collector's code.

`StandInCollector` stands in for the collector's `GET /v1/inventory` (its real endpoint is built
separately): it serves saved responses per `as_of` on a real loopback server, checks the bearer
token like the real one, refuses a future `as_of`, and streams large bodies in chunks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from billing.collector_client import InventoryClient, new_session
from billing.inventory import Machine, decode_inventory
from billing.remote import CollectorRefused, CollectorSettings
from tests.billing.factories import at, client, inventory_bytes, machine, price_book_toml
from wire.times import InstantError, format_instant, parse_instant

TOKEN = "billing-token-5f2c"
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class StandInCollector:
    now: datetime
    snapshots: dict[datetime, bytes] = field(default_factory=dict)
    latest: list[Machine] = field(default_factory=list)
    unavailable_times: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/inventory", self.inventory)
        return app

    async def inventory(self, request: web.Request) -> web.StreamResponse:
        as_of_text = request.query.get("as_of", "")
        self.requests.append((as_of_text, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "unauthorized", "a valid API token is required")
        try:
            as_of = parse_instant(as_of_text)
        except InstantError:
            return _error(400, "bad_as_of", "as_of must be an ISO-8601 instant")
        if as_of > self.now:
            return _error(400, "as_of_in_future", "as_of is in the future")
        if self.unavailable_times:
            self.unavailable_times -= 1
            return _error(503, "unavailable", "try again")
        body = self.snapshots.get(as_of) or inventory_bytes(format_instant(as_of), self.latest)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), 4096):  # streamed, as the collector does for big fleets
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


def base_url(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


async def rmm_billing(
    *args: object, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """The CLI in a child process, while this event loop keeps serving the stand-in."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "billing.cli",
        *map(str, args),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def run_march(prices: Path, out: Path, *source: object) -> list[object]:
    """`rmm-billing run` for March 2026, run on the 9th."""
    month = ["run", "--month", "2026-03", "--now", "2026-03-09T10:00:00Z"]
    return [*month, "--prices", prices, "--out", out, *source]


def preview_now(prices: Path, server: TestServer, now: str) -> list[object]:
    source = ["--collector", base_url(server), "--token", TOKEN]
    return ["preview", "--prices", prices, *source, "--now", now]


MARCH_UTC = "2026-03-01T00:00:00Z"
MARCH_NY = "2026-03-01T05:00:00Z"
FEBRUARY_UTC = "2026-02-01T00:00:00Z"
FEBRUARY_NY = "2026-02-01T05:00:00Z"


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(
        price_book_toml(
            client("acme", currency="USD"),
            client("bayside", currency="EUR", timezone="America/New_York"),
        )
    )
    return path


def saved_responses() -> dict[str, bytes]:
    return {
        FEBRUARY_UTC: inventory_bytes(
            FEBRUARY_UTC, [machine("a-1", last_seen="2026-01-30T08:00:00Z")]
        ),
        FEBRUARY_NY: inventory_bytes(
            FEBRUARY_NY, [machine("b-1", client_id="bayside", last_seen="2026-01-30T08:00:00Z")]
        ),
        MARCH_UTC: inventory_bytes(
            MARCH_UTC,
            [machine("a-1"), machine("a-2", kind="server"), machine("b-1", client_id="bayside")],
        ),
        MARCH_NY: inventory_bytes(
            MARCH_NY,
            [
                machine("a-1"),
                machine("b-1", client_id="bayside"),
                machine("b-2", client_id="bayside"),
            ],
        ),
    }


async def test_run_asks_the_collector_for_each_cutoff_and_each_previous_cutoff(
    aiohttp_server: ServerFactory, tmp_path: Path, prices: Path
) -> None:
    saved = saved_responses()
    collector = StandInCollector(
        now=at("2026-03-09T10:00:00Z"), snapshots={at(k): v for k, v in saved.items()}
    )
    server = await aiohttp_server(collector.app())

    source = ["--collector", base_url(server), "--token", TOKEN]
    code, stdout, stderr = await rmm_billing(
        *run_march(prices, tmp_path / "remote", *source), cwd=tmp_path
    )

    assert code == 0, stderr
    assert sorted(as_of for as_of, _ in collector.requests) == sorted(saved)
    assert {auth for _, auth in collector.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in stdout + stderr

    # The same saved responses given as files bill exactly the same.
    for as_of, body in saved.items():
        (tmp_path / f"{as_of[:13]}.json").write_bytes(body)
    files = [arg for path in sorted(tmp_path.glob("2026-*.json")) for arg in ("--inventory", path)]
    code, _, stderr = await rmm_billing(
        *run_march(prices, tmp_path / "files", *files), cwd=tmp_path
    )
    assert code == 0, stderr
    for name in ("invoices.json", "reports.json", "invoices.csv"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "files" / name).read_bytes()
    reports = json.loads((tmp_path / "remote" / "reports.json").read_text())
    assert all(r["changes"]["previous_inventory"] for r in reports["clients"])


async def test_a_token_the_collector_rejects_refuses_the_run_and_writes_nothing(
    aiohttp_server: ServerFactory, tmp_path: Path, prices: Path
) -> None:
    collector = StandInCollector(now=at("2026-03-09T10:00:00Z"))
    server = await aiohttp_server(collector.app())

    code, stdout, stderr = await rmm_billing(
        *run_march(prices, tmp_path / "out", "--collector", base_url(server)),
        cwd=tmp_path,
        env={"RMM_BILLING_TOKEN": "not-the-token"},
    )

    assert code == 1
    assert "refused with 401: unauthorized: a valid API token is required" in stderr
    assert "not-the-token" not in stdout + stderr
    assert len(collector.requests) == 1  # a 4xx is not retried
    assert not (tmp_path / "out").exists()


async def test_a_collector_that_is_briefly_unavailable_is_retried(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    collector = StandInCollector(
        now=at("2026-03-09T10:00:00Z"), latest=[machine("a-1")], unavailable_times=2
    )
    server = await aiohttp_server(collector.app())
    pauses: list[float] = []

    async def no_wait(seconds: float) -> None:
        pauses.append(seconds)

    settings = CollectorSettings(url=base_url(server) + "/", token=TOKEN)
    async with new_session(settings) as session:
        body = await InventoryClient(session, settings, sleep=no_wait).inventory(at(MARCH_UTC))

    document = decode_inventory(body, "collector")
    assert document.as_of == at(MARCH_UTC)
    assert [m.machine_id for m in document.machines()] == ["a-1"]
    assert len(collector.requests) == 3 and len(pauses) == 2


async def test_a_future_as_of_is_refused_by_the_collector_without_retrying(
    aiohttp_server: ServerFactory,
) -> None:
    collector = StandInCollector(now=at("2026-03-09T10:00:00Z"))
    server = await aiohttp_server(collector.app())
    settings = CollectorSettings(url=base_url(server), token=TOKEN)

    async with new_session(settings) as session:
        client_ = InventoryClient(session, settings, sleep=_never)
        with pytest.raises(CollectorRefused, match="400: as_of_in_future"):
            await client_.inventory(at("2026-04-01T00:00:00Z"))
    assert len(collector.requests) == 1


async def _never(seconds: float) -> None:
    raise AssertionError(f"unexpected retry after {seconds} s")


async def test_an_unreachable_collector_is_an_error_not_a_hang(
    tmp_path: Path, prices: Path
) -> None:
    source = ["--collector", "http://127.0.0.1:9", "--token", TOKEN, "--collector-attempts", "2"]
    code, _, stderr = await rmm_billing(*run_march(prices, tmp_path / "out", *source), cwd=tmp_path)
    assert code == 1
    assert "inventory from http://127.0.0.1:9 as of" in stderr
    assert not (tmp_path / "out").exists()


async def test_preview_asks_the_collector_for_the_inventory_as_it_stands_now(
    aiohttp_server: ServerFactory, tmp_path: Path, prices: Path
) -> None:
    collector = StandInCollector(
        now=at("2026-03-20T12:00:00Z"),
        latest=[
            machine("a-1", last_seen="2026-03-20T11:58:00Z"),
            machine(
                "a-2",
                kind="server",
                first_seen="2026-03-12T08:00:00Z",
                last_seen="2026-03-20T11:58:00Z",
            ),
        ],
    )
    server = await aiohttp_server(collector.app())

    code, stdout, stderr = await rmm_billing(
        *preview_now(prices, server, "2026-03-20T12:00:00Z"), "--json", cwd=tmp_path
    )

    assert code == 0, stderr
    assert [as_of for as_of, _ in collector.requests] == ["2026-03-20T12:00:00Z"]
    preview: dict[str, Any] = json.loads(stdout)
    acme = next(i for i in preview["invoices"] if i["client_id"] == "acme")
    assert (preview["month"], acme["total"]) == ("2026-04", "165.00")
    assert list(tmp_path.iterdir()) == [prices]


async def test_preview_asks_a_minute_earlier_when_our_clock_runs_ahead_of_the_collectors(
    aiohttp_server: ServerFactory, tmp_path: Path, prices: Path
) -> None:
    collector = StandInCollector(now=at("2026-03-20T12:00:00Z"), latest=[machine("a-1")])
    server = await aiohttp_server(collector.app())

    code, stdout, stderr = await rmm_billing(
        *preview_now(prices, server, "2026-03-20T12:00:30Z"), cwd=tmp_path
    )

    assert code == 0, stderr
    assert [as_of for as_of, _ in collector.requests] == [
        "2026-03-20T12:00:30Z",
        "2026-03-20T11:59:30Z",
    ]
    assert "1 PC x 45.00 = 45.00 USD" in stdout


async def test_collector_client_reads_a_large_streamed_response(
    aiohttp_server: ServerFactory,
) -> None:
    fleet = [machine(f"m-{n:05d}", hostname=f"HOST-{n:05d}") for n in range(20_000)]
    collector = StandInCollector(now=at("2026-03-09T10:00:00Z"), latest=fleet)
    server = await aiohttp_server(collector.app())
    settings = CollectorSettings(url=base_url(server), token=TOKEN)

    async with new_session(settings) as session:
        body = await InventoryClient(session, settings).inventory(at(MARCH_UTC))

    assert len(body) > 4 * 1024 * 1024
    assert len(decode_inventory(body, "collector")) == 20_000


def test_settings_know_when_the_token_would_travel_in_clear() -> None:
    assert CollectorSettings("http://127.0.0.1:8080", TOKEN).is_loopback_or_tls
    assert CollectorSettings("https://noc.example.net", TOKEN).is_loopback_or_tls
    assert not CollectorSettings("http://noc.example.net", TOKEN).is_loopback_or_tls


async def test_explain_asks_the_collector_for_the_inventory_as_of_the_clients_cutoff(
    aiohttp_server: ServerFactory, tmp_path: Path, prices: Path
) -> None:
    collector = StandInCollector(
        now=at("2026-03-09T10:00:00Z"),
        latest=[
            machine("desk"),
            machine("gone", offboarded_at="2026-02-10T12:00:00Z"),
            machine("elsewhere", client_id="other"),
        ],
    )
    server = await aiohttp_server(collector.app())
    source = ["--collector", base_url(server), "--token", TOKEN]

    code, stdout, stderr = await rmm_billing(
        "explain",
        "--month",
        "2026-03",
        "--prices",
        prices,
        *source,
        "--client",
        "acme",
        "--json",
        cwd=tmp_path,
    )

    assert code == 0, stderr
    assert [as_of for as_of, _ in collector.requests] == [MARCH_UTC]
    rules = {m["machine_id"]: m["rule"] for m in json.loads(stdout)["machines"]}
    assert rules == {"desk": "billed", "gone": "offboarded"}
