"""The machines list (filters, search, paging) and the machine page (facts, components, commands,
audit, and the presence timeline that answers "why was this machine billed?")."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.collector.conftest import StoreLocation
from tests.collector.web import scenario
from tests.collector.web.conftest import BrowserFactory, Page
from tests.collector.web.fleet import seed_fleet


def hostnames(page: Page) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/machines/[^"]+">([^<]+)</a></th>', page.html)


async def test_paging_walks_every_machine_once_in_hostname_order(
    browser: BrowserFactory, store_location: StoreLocation
) -> None:
    b = await browser()
    seeded = await seed_fleet(store_location, b.harness.clock.now(), machines=230, clients=3)
    await b.sign_in("viewer")
    seen: list[str] = []
    path: str | None = "/machines"
    pages = 0
    while path:
        page = await b.get(path)
        seen += hostnames(page)
        pages += 1
        nexts = [link for link in page.links if "page=" in link and "Next" in page.html]
        match = re.search(r'<a href="([^"]+)" rel="next">', page.html)
        path = match.group(1).replace("&amp;", "&") if match else None
        assert nexts or path is None
    assert pages == 5
    assert len(seen) == seeded.machines == len(set(seen))
    assert seen == sorted(seen, key=str.lower)
    last = await b.get("/machines?page=5")
    assert "201\u2013230 of 230 · page 5 of 5" in last.text
    beyond = await b.get("/machines?page=9")
    assert "No machines match on this page." in beyond.text


async def test_filters_combine_and_keep_each_other_across_pages(
    browser: BrowserFactory, store_location: StoreLocation
) -> None:
    b = await browser()
    seeded = await seed_fleet(store_location, b.harness.clock.now(), machines=400, clients=2)
    client_id = seeded.clients[0][0]
    await b.sign_in("viewer")
    page = await b.get(f"/machines?client={client_id}&kind=pc&state=online")
    total = int(re.search(r"([\d,]+) match", page.text).group(1))  # type: ignore[union-attr]
    api = await b.harness.get(
        f"/v1/machines?client={client_id}&kind=pc&state=online&limit=10000",
        await b.harness.api_token("viewer", name="api-reader"),
    )
    assert total == len(api["machines"]) > 50
    assert set(hostnames(page)) <= {m["hostname"] for m in api["machines"]}
    second = re.search(r'<a href="([^"]+)" rel="next">', page.html)
    assert second is not None
    assert f"client={client_id}" in second.group(1) and "state=online" in second.group(1)
    search = await b.get("/machines?q=SRV-0000")
    assert hostnames(search) and all(h.startswith("srv-0000") for h in hostnames(search))


async def test_component_status_filters_find_coverage_gaps(browser: BrowserFactory) -> None:
    b = await browser()
    await scenario.build(b.harness)
    await b.sign_in("viewer")
    gap = hostnames(await b.get("/machines?status=gap"))
    assert gap == ["gap-pc", "gone-dark", "stale-laptop", "waiting-pc"]
    covered = hostnames(await b.get("/machines?status=covered"))
    assert covered == ["broken-pc", "ok-pc"]
    stopped_av = hostnames(await b.get("/machines?component=antivirus&status=stopped"))
    assert stopped_av == ["gap-pc"]
    no_backup = hostnames(await b.get("/machines?component=backup&status=missing"))
    assert no_backup == ["broken-pc", "gap-pc", "gone-dark", "ok-pc", "stale-laptop", "waiting-pc"]
    dark = await b.get("/machines?state=offline&offline_days=7&sort=last_seen")
    assert hostnames(dark) == ["stale-laptop"]
    assert "not seen for 7+ days" in dark.text
    exposed = hostnames(await b.get("/machines?exposed=1"))
    assert exposed == ["gone-dark"]
    servers = hostnames(await b.get("/machines?kind=server"))
    assert servers == ["gone-dark"]


async def test_the_machine_page_shows_facts_components_commands_and_audit(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    s = await scenario.build(b.harness)
    await b.sign_in("admin")
    broken = s.machines["broken"]["machine_id"]
    text = (await b.get(f"/machines/{broken}")).text
    assert "broken-pc Offboard failed" in text
    assert "Acme Dental" in text and broken in text and "hw-broken" in text
    assert "rmm running 0.1.0 yes" in text
    assert "client left" in text and "scenario-tech" in text
    assert "offboard.failed" in text and "offboard.requested" in text
    gap_page = await b.get(f"/machines/{s.machines['gap']['machine_id']}")
    assert "antivirus stopped 4.1 yes" in gap_page.text
    assert "backup" not in gap_page.text.split("Components")[1].split("Presence")[0]
    tech = await (await browser()).sign_in("technician")
    assert "Audit entries" not in (await tech.get(f"/machines/{broken}")).text


async def test_the_timeline_shows_ninety_days_cutoffs_and_the_expiry_line(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    s = await scenario.build(b.harness)
    await b.sign_in("viewer")
    gone = await b.get(f"/machines/{s.machines['gone']['machine_id']}")
    svg = gone.html.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert svg.count("<rect") == 90
    assert svg.count('class="tl-seen"') == 1  # enrolled on 2 March, never seen again
    assert "30-day expiry line" in svg
    # Enrolled 2 March 09:00; at the 1 April cutoff it was seen 29 days 15 hours before it.
    assert "01 Apr cutoff: billed" in gone.text
    assert "01 Mar cutoff: not billed" in gone.text and "not enrolled yet" in gone.text
    ok = await b.get(f"/machines/{s.machines['ok']['machine_id']}")
    assert "Seen on 2 of 90 days" in ok.text
    assert "01 Apr cutoff: not billed" in ok.text


async def test_a_machine_billed_at_a_cutoff_after_going_dark_shows_why(
    browser: BrowserFactory,
) -> None:
    """Seen until 20 Feb, dark since: billed on 1 March (9 days), expired by 1 April."""
    b = await browser()
    clock = b.harness.clock
    clock.set(clock.now().replace(month=1, day=5))
    _, enrollment = await b.harness.add_client("Initech", ttl_days=90)
    agent = await b.harness.enroll(enrollment, "hw-dark", hostname="dark-pc")
    while clock.now() < clock.now().replace(month=2, day=20):
        clock.advance(hours=12)
        await b.harness.heartbeat(agent["agent_token"])
        await b.harness.flush()
    clock.set(clock.now().replace(month=4, day=10))
    await b.sign_in("viewer")
    page = await b.get(f"/machines/{agent['machine_id']}")
    assert "01 Mar cutoff: billed: seen 8 days before it" in page.text
    assert "01 Apr cutoff: not billed: not seen in the 30 days before it (expired)" in page.text
    assert "Expired" in page.text
    seen_days = page.html.split("<svg", 1)[1].count('class="tl-seen"')
    first_day = clock.now() - timedelta(days=89)
    assert seen_days == (clock.now().replace(month=2, day=20) - first_day).days + 1
