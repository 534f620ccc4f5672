"""The collector client: what each kind of answer becomes, and the one retry policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer

from agent.client import (
    CollectorClient,
    CollectorUnavailable,
    Rejected,
    Unauthorized,
    retrying,
)
from tests.agent.conftest import free_port
from tests.agent.fake_collector import FakeCollector, Reply
from wire.messages import Component, EnrollRequest, HeartbeatRequest

TOKEN = "rmmag_secret-token-value"
ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def fake(aiohttp_server: ServerFactory) -> tuple[FakeCollector, str]:
    collector = FakeCollector()
    server = await aiohttp_server(collector.app())
    return collector, str(server.make_url("")).rstrip("/")


HEARTBEAT = HeartbeatRequest(
    components=[Component(name="rmm", status="running", version="1.0")], kind="pc"
)
ENROLL = EnrollRequest(
    enrollment_token="rmmen_x", hardware_id="hw", hostname="h", os="Linux", kind="pc"
)


async def test_enroll_sends_no_authorization_and_returns_the_credential(
    fake: tuple[FakeCollector, str],
) -> None:
    collector, url = fake
    async with CollectorClient(url) as client:
        answer = await client.enroll(ENROLL)
    assert answer.agent_token == TOKEN
    (request,) = collector.to("/v1/enroll")
    assert "Authorization" not in request.headers
    assert request.json()["hardware_id"] == "hw"


async def test_the_token_travels_only_in_the_authorization_header(
    fake: tuple[FakeCollector, str],
) -> None:
    collector, url = fake
    async with CollectorClient(url, token=TOKEN) as client:
        answer = await client.heartbeat(HEARTBEAT)
    assert answer.next_heartbeat_s == 60
    (request,) = collector.to("/v1/heartbeat")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in request.path
    assert TOKEN.encode() not in request.body


async def test_a_4xx_is_rejected_with_the_collectors_reason(
    fake: tuple[FakeCollector, str],
) -> None:
    collector, url = fake
    collector.script("/v1/heartbeat", Reply(400, {"error": "invalid_body", "detail": "bad kind"}))
    async with CollectorClient(url, token=TOKEN) as client:
        with pytest.raises(Rejected) as caught:
            await client.heartbeat(HEARTBEAT)
    assert (caught.value.status, caught.value.error, caught.value.detail) == (
        400,
        "invalid_body",
        "bad kind",
    )
    assert not isinstance(caught.value, CollectorUnavailable)


async def test_a_401_is_unauthorized(fake: tuple[FakeCollector, str]) -> None:
    collector, url = fake
    collector.script(
        "/v1/heartbeat", Reply(401, {"error": "invalid_token", "detail": "token revoked"})
    )
    async with CollectorClient(url, token=TOKEN) as client:
        with pytest.raises(Unauthorized) as caught:
            await client.heartbeat(HEARTBEAT)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(503, {"error": "unavailable", "detail": "down"}),
        Reply(200, raw=b"<html>captive portal</html>"),
        Reply(502, raw=b"Bad Gateway"),
    ],
)
async def test_server_errors_and_foreign_answers_are_unavailable(
    fake: tuple[FakeCollector, str], reply: Reply
) -> None:
    collector, url = fake
    collector.script("/v1/heartbeat", reply)
    async with CollectorClient(url, token=TOKEN) as client:
        with pytest.raises(CollectorUnavailable):
            await client.heartbeat(HEARTBEAT)


async def test_a_redirect_is_not_followed(fake: tuple[FakeCollector, str]) -> None:
    collector, url = fake
    collector.script(
        "/v1/heartbeat", Reply(307, raw=b"", headers={"Location": "http://elsewhere.example/"})
    )
    async with CollectorClient(url, token=TOKEN) as client:
        with pytest.raises(Rejected, match="redirect"):
            await client.heartbeat(HEARTBEAT)
    assert len(collector.received) == 1


async def test_a_hanging_collector_times_out(fake: tuple[FakeCollector, str]) -> None:
    collector, url = fake
    collector.script("/v1/heartbeat", Reply(200, {"next_heartbeat_s": 1}, delay=5))
    async with CollectorClient(url, token=TOKEN, request_timeout=0.2) as client:
        with pytest.raises(CollectorUnavailable, match="no answer within"):
            await client.heartbeat(HEARTBEAT)


async def test_nothing_listening_is_unavailable() -> None:
    async with CollectorClient(f"http://127.0.0.1:{free_port()}", token=TOKEN) as client:
        with pytest.raises(CollectorUnavailable):
            await client.heartbeat(HEARTBEAT)


async def test_retries_back_off_on_5xx_and_stop_at_the_first_success(
    fake: tuple[FakeCollector, str],
) -> None:
    collector, url = fake
    collector.script("/v1/heartbeat", *[Reply(500, {"error": "x", "detail": "y"})] * 4)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with CollectorClient(url, token=TOKEN) as client:
        async for attempt in retrying(max_wait=3, sleep=sleep):
            with attempt:
                answer = await client.heartbeat(HEARTBEAT)
    assert answer.next_heartbeat_s == 60
    assert len(collector.to("/v1/heartbeat")) == 5
    assert len(slept) == 4
    assert all(0 <= s <= 3 for s in slept)


async def test_a_4xx_is_never_retried(fake: tuple[FakeCollector, str]) -> None:
    collector, url = fake
    collector.script("/v1/heartbeat", Reply(422, {"error": "x", "detail": "y"}))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with CollectorClient(url, token=TOKEN) as client:
        with pytest.raises(Rejected):
            async for attempt in retrying(max_wait=3, sleep=sleep):
                with attempt:
                    await client.heartbeat(HEARTBEAT)
    assert slept == []
    assert len(collector.to("/v1/heartbeat")) == 1


async def test_the_backoff_cap_holds_however_long_the_outage(
    fake: tuple[FakeCollector, str],
) -> None:
    collector, url = fake
    collector.script("/v1/heartbeat", *[Reply(503, raw=b"")] * 30)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with CollectorClient(url, token=TOKEN) as client:
        async for attempt in retrying(max_wait=300, sleep=sleep):
            with attempt:
                await client.heartbeat(HEARTBEAT)
    assert len(slept) == 30
    assert max(slept) <= 300
    assert max(slept[-10:]) > 1  # it did grow
