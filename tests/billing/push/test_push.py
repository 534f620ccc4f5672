"""`rmm-billing push`: the issued invoices of a month into each PSA's stand-in and a signed
webhook receiver, all real aiohttp servers on loopback (the real services are outside our
network; the stand-ins keep to the vendors' documented requests and field names)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from billing.push.errors import PushError
from billing.push.run import PushOutcome, PushRequest, outcome_text, push_month, status_text
from tests.billing.factories import at
from tests.billing.push.conftest import MARCH, SECRET, Billed, make_billed
from tests.billing.push.standins import (
    FAULTS,
    AutotaskStandIn,
    ConnectWiseStandIn,
    HaloStandIn,
    Receiver,
)

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class Sleeps:
    """The injected sleep: records what the retry policy waited, waits nothing."""

    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


async def push(
    billed: Billed,
    target: str,
    url: str,
    *,
    dry_run: bool = False,
    sleep: Sleeps | None = None,
    prices: Path | None = None,
) -> PushOutcome:
    request = PushRequest(
        month=MARCH,
        target=target,
        url=url,
        ledger=billed.ledger,
        now=at("2026-03-03T09:00:00Z"),
        prices=prices or billed.prices,
        dry_run=dry_run,
    )
    return await push_month(request, sleep=sleep or Sleeps())


def changed(outcome: PushOutcome) -> list[tuple[str, str | None, str]]:
    return [
        (r.client_id, c.before, c.after) for r in outcome.results for c in r.changes if c.changed
    ]


# The webhook.


async def test_webhook_push_twice_delivers_each_client_month_once_then_nothing(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    receiver = Receiver(SECRET)
    server = await aiohttp_server(receiver.app())
    url = str(server.make_url("/hook"))

    first = await push(billed, "webhook", url)
    second = await push(billed, "webhook", url)

    assert first.ok and second.ok
    assert sorted(receiver.deliveries) == ["acme:2026-03:NW-000001", "bayside:2026-03:NW-000002"]
    assert receiver.posts == 2
    assert all(r.already for r in second.results)
    assert "already delivered" in outcome_text(second)[0]
    elsewhere = await push(billed, "webhook", url + "?copy=accounts")
    assert not any(r.already for r in elsewhere.results)  # another endpoint gets them all
    body = receiver.deliveries["acme:2026-03:NW-000001"]
    assert next(iter(body)) == "client_id"
    assert body["invoice"]["total"] == "255.00" and len(body["invoice"]["machines"]) == 4


async def test_webhook_retries_5xx_and_honours_retry_after_but_never_retries_4xx(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    billed = make_billed(tmp_path, {"acme": (1, 0), "bayside": (1, 0), "cove": (1, 0)})
    receiver = Receiver(SECRET)
    app = receiver.app()
    server = await aiohttp_server(app)
    sleeps = Sleeps()
    app[FAULTS].queue = [503, 429]  # acme's first two tries (clients go in id order)

    retried = await push(billed, "webhook", str(server.make_url("/hook")), sleep=sleeps)

    assert retried.ok
    assert 7.0 in sleeps.waited  # Retry-After: 7
    assert len(receiver.deliveries) == 3

    billed.bill(supersede=frozenset({"bayside"}))  # a new invoice number to deliver
    app[FAULTS].queue = [400]
    refused = await push(billed, "webhook", str(server.make_url("/hook")), sleep=sleeps)
    assert not refused.ok
    (error,) = [r.error for r in refused.results if r.error]
    assert "client 'Client bayside' (bayside): webhook http://" in error and "400" in error
    assert app[FAULTS].requests == 3 + 2 + 1  # the 400 was tried once


async def test_a_webhook_that_times_out_is_retried_with_the_same_idempotency_key(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    receiver = Receiver(SECRET)
    keys: list[str] = []

    async def stalls_once(request: web.Request) -> web.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            await asyncio.sleep(0.4)  # longer than the request timeout below
        return await receiver.post(request)

    app = web.Application()
    app.router.add_post("/hook", stalls_once)
    server = await aiohttp_server(app)
    request = PushRequest(
        month=MARCH,
        target="webhook",
        url=str(server.make_url("/hook")),
        ledger=billed.ledger,
        now=at("2026-03-03T09:00:00Z"),
        in_flight=1,
        request_timeout_s=0.1,
    )
    sleeps = Sleeps()
    outcome = await push_month(request, sleep=sleeps)
    assert outcome.ok, [r.error for r in outcome.results]
    assert keys[:2] == ["acme:2026-03:NW-000001", "acme:2026-03:NW-000001"]
    assert len(sleeps.waited) == 1  # one backoff, then delivered
    assert sorted(receiver.deliveries) == ["acme:2026-03:NW-000001", "bayside:2026-03:NW-000002"]


async def test_push_exit_status_is_0_only_if_every_client_was_pushed(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = connectwise(billed)
    server = await aiohttp_server(standin.app())
    command = [sys.executable, "-m", "billing.cli", "push", "--month", "2026-03"]
    command += ["--to", "connectwise", "--url", str(server.make_url("")), "--ledger"]
    command += [str(billed.ledger), "--prices", str(billed.prices)]

    async def run() -> tuple[int, str, str]:
        child = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await child.communicate()
        assert child.returncode is not None
        return child.returncode, out.decode(), err.decode()

    code, out, _ = await run()
    assert code == 0 and "changed 3 objects" in out
    code, out, _ = await run()
    assert code == 0 and "Nothing to change." in out
    del standin.agreements[101]
    code, _, err = await run()
    assert code == 1
    assert "rmm-billing: error: client 'Client bayside' (bayside): connectwise agreement 101" in err


async def test_a_bad_webhook_signature_is_refused_by_the_receiver_and_named(
    billed: Billed, aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(SECRET)
    server = await aiohttp_server(receiver.app())
    monkeypatch.setenv("RMM_BILLING_WEBHOOK_SECRET", "not-the-shared-secret")
    outcome = await push(billed, "webhook", str(server.make_url("/hook")))
    assert not outcome.ok and receiver.deliveries == {}
    assert all("the PSA refused the credentials (401)" in (r.error or "") for r in outcome.results)


# ConnectWise PSA.


def connectwise(billed: Billed) -> ConnectWiseStandIn:
    standin = ConnectWiseStandIn(("northwind", "pub", "priv", "cid-1"))
    # acme's agreement has last month's PC addition; bayside's has none yet.
    standin.agreements[100] = [
        {
            "id": 501,
            "product": {"id": 11},
            "quantity": 1,
            "unitPrice": 45.0,
            "billCustomer": "Billable",
            "cancelledDate": None,
        }
    ]
    standin.agreements[101] = []
    return standin


async def test_connectwise_push_twice_one_change_then_none(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = connectwise(billed)
    server = await aiohttp_server(standin.app())
    url = str(server.make_url(""))

    first = await push(billed, "connectwise", url)
    second = await push(billed, "connectwise", url)

    assert first.ok and second.ok
    assert changed(first) == [("acme", "1", "3"), ("acme", None, "1"), ("bayside", None, "2")]
    assert changed(second) == []
    assert "Nothing to change." in outcome_text(second)[0]
    assert standin.writes == 3
    acme = {a["product"]["id"]: a for a in standin.agreements[100]}
    assert (acme[11]["quantity"], acme[12]["quantity"], acme[12]["billCustomer"]) == (
        3,
        1,
        "Billable",
    )
    assert acme[12]["effectiveDate"] == "2026-03-01T00:00:00Z"
    status = status_text(billed.ledger, MARCH, "connectwise")
    assert "acme  NW-000001  agreement 100 product 11 (addition 501): 1 -> 3" in status


async def test_dry_run_prints_the_changes_and_changes_nothing(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = connectwise(billed)
    server = await aiohttp_server(standin.app())
    outcome = await push(billed, "connectwise", str(server.make_url("")), dry_run=True)
    shown, _ = outcome_text(outcome)
    assert "dry run: nothing sent" in shown
    assert "acme  agreement 100 product 11 (addition 501): 1 -> 3" in shown
    assert standin.writes == 0
    assert status_text(billed.ledger, MARCH, None) == "Nothing was pushed for 2026-03."


async def test_connectwise_401_and_404_name_the_client_and_agreement_and_the_rest_go_on(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = connectwise(billed)
    del standin.agreements[101]  # bayside's agreement id is wrong
    server = await aiohttp_server(standin.app())
    outcome = await push(billed, "connectwise", str(server.make_url("")))
    errors = {r.client_id: r.error for r in outcome.results}
    assert errors["acme"] is None
    assert errors["bayside"] == (
        "client 'Client bayside' (bayside): connectwise agreement 101: not found (404)"
    )

    standin.credentials = ("northwind", "pub", "rotated", "cid-1")
    refused = await push(billed, "connectwise", str(server.make_url("")))
    assert "agreement 100: the PSA refused the credentials (401)" in (
        refused.results[0].error or ""
    )


async def test_a_client_without_a_mapping_is_named_and_the_others_are_pushed(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = connectwise(billed)
    server = await aiohttp_server(standin.app())
    text = billed.prices.read_text()
    lines = [
        line
        for line in text.splitlines()
        if not (line.startswith("connectwise") and "agreement_id = 101" in line)
    ]
    billed.prices.write_text("\n".join(lines) + "\n")
    outcome = await push(billed, "connectwise", str(server.make_url("")))
    errors = {r.client_id: r.error for r in outcome.results}
    assert errors["acme"] is None
    assert errors["bayside"] == (
        "client 'Client bayside' (bayside): no connectwise mapping in the price book (set "
        "agreement_id, pc_product_id, server_product_id under [client.connectwise])"
    )


async def test_a_superseded_invoice_pushes_the_new_quantity_and_the_record_shows_both(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = connectwise(billed)
    server = await aiohttp_server(standin.app())
    url = str(server.make_url(""))
    assert (await push(billed, "connectwise", url)).ok
    inventory = json.loads(billed.inventory.read_text())
    extra = dict(inventory["machines"][0], machine_id="acme-pc-late", hostname="LATE")
    inventory["machines"].append(extra)
    billed.inventory.write_text(json.dumps(inventory))
    billed.bill(supersede=frozenset({"acme"}))

    again = await push(billed, "connectwise", url)

    assert changed(again) == [("acme", "3", "4")]
    status = status_text(billed.ledger, MARCH, "connectwise")
    assert "NW-000001  agreement 100 product 11 (addition 501): 1 -> 3" in status
    assert "NW-000004  agreement 100 product 11 (addition 501): 3 -> 4" in status


# Autotask and HaloPSA.


async def test_autotask_adjusts_units_by_the_difference_once(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = AutotaskStandIn(("INT", "api@northwind", "s3cret"))
    for contract, base in ((200, 1000), (201, 2000)):
        standin.services += [
            {"id": base + 1, "contractID": contract, "serviceID": 21, "unitPrice": 45.0},
            {"id": base + 2, "contractID": contract, "serviceID": 22, "unitPrice": 120.0},
        ]
    standin.units = {1001: 5, 1002: 1, 2001: 0, 2002: 0}
    server = await aiohttp_server(standin.app())
    url = str(server.make_url(""))

    first = await push(billed, "autotask", url)
    second = await push(billed, "autotask", url)

    assert first.ok and second.ok, [r.error for r in first.results]
    assert changed(first) == [("acme", "5", "3"), ("bayside", "0", "2")]
    assert changed(second) == []
    assert [(a["contractServiceID"], a["unitChange"]) for a in standin.adjustments] == [
        (1001, -2),
        (2001, 2),
    ]
    assert standin.adjustments[0]["effectiveDate"] == "2026-03-01T00:00:00Z"


async def test_halopsa_sets_the_line_quantity_once(
    billed: Billed, aiohttp_server: ServerFactory
) -> None:
    standin = HaloStandIn("halo-id", "halo-secret")
    standin.invoices[300] = {
        "id": 300,
        "lines": [{"id": 601, "item_id": 31, "qty_order": 2.0, "unit_price": 45.0}],
    }
    standin.invoices[301] = {"id": 301, "lines": []}
    server = await aiohttp_server(standin.app())
    url = str(server.make_url(""))

    first = await push(billed, "halopsa", url)
    second = await push(billed, "halopsa", url)

    assert first.ok and second.ok, [r.error for r in first.results]
    assert changed(first) == [("acme", "2", "3"), ("acme", None, "1"), ("bayside", None, "2")]
    assert changed(second) == []
    assert standin.saves == 2
    acme = {line["item_id"]: line for line in standin.invoices[300]["lines"]}
    assert (acme[31]["id"], acme[31]["qty_order"], acme[32]["qty_order"]) == (601, 3, 1)


# Interrupted pushes and credentials.


async def test_a_push_killed_half_way_and_run_again_ends_with_every_client_once(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    clients = {f"c{n:02d}": (1 + n % 3, n % 2) for n in range(30)}
    billed = make_billed(tmp_path, clients)
    receiver = Receiver(SECRET, delay_s=0.02, watch_for=8)
    server = await aiohttp_server(receiver.app())
    url = str(server.make_url("/hook"))
    command = [sys.executable, "-m", "billing.cli", "push", "--month", "2026-03", "--to"]
    command += ["webhook", "--url", url, "--ledger", str(billed.ledger), "--in-flight", "2"]
    child = await asyncio.create_subprocess_exec(*command, env=dict(os.environ), cwd=tmp_path)
    await asyncio.wait_for(receiver.reached.wait(), timeout=30)
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert 8 <= len(receiver.deliveries) < 30  # interrupted half-way

    rerun = await push(billed, "webhook", url)

    assert rerun.ok
    assert sorted(key.split(":")[0] for key in receiver.deliveries) == sorted(clients)
    status = status_text(billed.ledger, MARCH, "webhook")
    recorded = [line.split()[2] for line in status.splitlines()[1:]]
    assert sorted(recorded) == sorted(clients)  # each client recorded once


async def test_credentials_come_from_a_file_readable_by_its_owner_only(
    billed: Billed, aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(SECRET)
    server = await aiohttp_server(receiver.app())
    monkeypatch.delenv("RMM_BILLING_WEBHOOK_SECRET")
    secrets = billed.root / "push.env"
    secrets.write_text(f"RMM_BILLING_WEBHOOK_SECRET={SECRET}\n")
    secrets.chmod(0o644)
    request = PushRequest(
        month=MARCH,
        target="webhook",
        url=str(server.make_url("/hook")),
        ledger=billed.ledger,
        now=at("2026-03-03T09:00:00Z"),
        credentials_file=secrets,
    )
    with pytest.raises(PushError, match="mode 0644 lets others read it; chmod 600"):
        await push_month(request, sleep=Sleeps())
    secrets.chmod(0o600)
    assert (await push_month(request, sleep=Sleeps())).ok
    assert len(receiver.deliveries) == 2


async def test_missing_credentials_are_named(
    billed: Billed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RMM_BILLING_CONNECTWISE_PRIVATE_KEY")
    with pytest.raises(
        PushError,
        match="credentials missing in the environment: RMM_BILLING_CONNECTWISE_PRIVATE_KEY",
    ):
        await push(billed, "connectwise", "http://127.0.0.1:9")
