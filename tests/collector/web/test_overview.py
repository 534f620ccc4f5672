"""The fleet overview: per client, machines by state and coverage, and what needs a person."""

from __future__ import annotations

import re

from tests.collector.web import scenario
from tests.collector.web.conftest import BrowserFactory


def row_of(html: str, client: str) -> list[str]:
    """The cells of the overview's row for `client`, as text."""
    row = re.search(rf"<tr>\s*<th scope=\"row\"><a [^>]*>{client}</a></th>(.*?)</tr>", html, re.S)
    assert row, f"no row for {client}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in cells]


async def test_each_client_shows_its_machines_by_state_coverage_and_attention(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    s = await scenario.build(b.harness)
    await b.sign_in("viewer")
    page = await b.get("/")
    # machines, online, offline, expired, pending, failed, coverage, dark 7d+, exposure
    assert row_of(page.html, "Acme Dental") == ["6", "2", "1", "1", "1", "1", "40 %", "1", "1"]
    assert row_of(page.html, "Globex") == ["0", "0", "0", "0", "0", "0", "—", "0", "0"]
    assert f"/machines?client={s.client_id}&amp;state=offline" in page.html
    assert f"/machines?client={s.client_id}&amp;status=gap" in page.html
    assert '<meter min="0" max="5" value="2"' in page.html


async def test_what_needs_a_person_is_listed_with_the_facts_to_act_on(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    s = await scenario.build(b.harness)
    await b.sign_in("technician")
    text = (await b.get("/")).text
    pending = text.split("Offboards pending for a day or more")[1].split("Failed offboards")[0]
    assert "waiting-pc Acme Dental" in pending
    assert "asked 2 days ago by scenario-tech" in pending
    assert "machine has not checked in since" in pending
    failed = text.split("Failed offboards")[1].split("Offline 7+ days")[0]
    assert "broken-pc Acme Dental" in failed and "backup agent busy" in failed
    stale = text.split("Offline 7+ days, still billed")[1].split("Licence exposure")[0]
    assert "stale-laptop" in stale and "last seen 12 days ago" in stale
    assert "in inventory until 22 Apr" in stale
    exposure = text.split("Licence exposure")[1].split("Clients")[0]
    assert "gone-dark" in exposure and "still carries licensed software" in exposure
    links = (await b.get("/")).links
    assert f"/commands/{s.pending_command}" in links
    assert f"/machines/{s.machines['broken']['machine_id']}" in links


async def test_a_machine_dark_for_a_week_is_flagged_as_billed_again_at_the_next_cutoff(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    _, enrollment = await b.harness.add_client("Initech")
    await b.harness.enroll(enrollment, "hw-x", hostname="forgotten-pc")
    b.harness.clock.set(b.harness.clock.now().replace(month=3, day=20))
    await b.sign_in("viewer")
    text = (await b.get("/")).text
    assert "forgotten-pc" in text
    assert "billed again 01 Apr" in text  # expires 1 Apr 09:00, after the 00:00 cutoff


async def test_an_empty_collector_shows_an_empty_overview(browser: BrowserFactory) -> None:
    b = await (await browser()).sign_in("admin")
    text = (await b.get("/")).text
    assert "0 machines across 0 clients" in text
    assert "No clients yet." in text
