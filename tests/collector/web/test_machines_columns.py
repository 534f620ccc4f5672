"""The machines list shows what every RMM shows (issue 22): OS, IP address, logged-in user and
agent version columns, and one search box over hostname, IP, user and OS."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from tests.collector.web.conftest import BrowserFactory, Page


class _Rows(HTMLParser):
    """The list's table as {header: cell text} per row, and each cell's `title`s."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self.titles: list[list[list[str]]] = []
        self._where = ""
        self._cell: list[str] | None = None
        self._cell_titles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("thead", "tbody"):
            self._where = tag
        elif tag == "tr" and self._where == "tbody":
            self.rows.append([])
            self.titles.append([])
        elif tag in ("th", "td") and self._where:
            self._cell, self._cell_titles = [], []
        title = dict(attrs).get("title")
        if self._cell is not None and title:
            self._cell_titles.append(title)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None:
            text = " ".join(" ".join(self._cell).split())
            if self._where == "thead":
                self.headers.append(text)
            else:
                self.rows[-1].append(text)
                self.titles[-1].append(self._cell_titles)
            self._cell = None
        elif tag in ("thead", "tbody"):
            self._where = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table(page: Page) -> tuple[list[dict[str, str]], list[dict[str, list[str]]]]:
    parsed = _Rows()
    parsed.feed(page.html)
    # A row of another width is the "No machines match" line.
    width = len(parsed.headers)
    rows = [dict(zip(parsed.headers, r, strict=True)) for r in parsed.rows if len(r) == width]
    titles = [dict(zip(parsed.headers, t, strict=True)) for t in parsed.titles if len(t) == width]
    return rows, titles


async def _fleet(b: Any) -> None:
    """front-desk reports everything, two users, three addresses; old-agent reports nothing new."""
    harness = b.harness
    _client_id, token = await harness.add_client("Acme Dental")
    front = await harness.enroll(
        token, "hw-front", hostname="front-desk", os="Windows 11 Pro 23H2", agent_version="1.4.0"
    )
    old = await harness.enroll(token, "hw-old", hostname="old-agent")
    await harness.heartbeat(
        front["agent_token"],
        os="Windows 11 Pro 23H2",
        agent_version="1.5.0",
        users=["reception", "alice"],
        network={
            "macs": ["02:00:00:00:00:01"],
            "addresses": ["192.168.7.21", "172.17.0.1", "2001:db8::21"],
            "neighbors": [],
        },
    )
    await harness.heartbeat(old["agent_token"])
    await harness.flush()


async def test_the_list_shows_os_ip_user_and_agent_version(browser: BrowserFactory) -> None:
    b = await browser()
    await _fleet(b)
    await b.sign_in("viewer")
    rows, titles = table(await b.get("/machines"))
    assert [r["Hostname"] for r in rows] == ["front-desk", "old-agent"]
    front, old = rows
    assert front["OS"] == "Windows 11 Pro 23H2"
    assert front["IP"] == "192.168.7.21 +2"  # the agent's first (its default route's), then more
    assert titles[0]["IP"] == ["192.168.7.21, 172.17.0.1, 2001:db8::21"]
    assert front["User"] == "alice +1"
    assert titles[0]["User"] == ["alice, reception"]
    assert front["Agent version"] == "1.5.0"
    assert old["OS"] == "Linux 6.1"
    assert (old["IP"], old["User"], old["Agent version"]) == ("\u2013",) * 3
    assert titles[1]["IP"] == titles[1]["User"] == ["not reported"]


async def test_the_search_box_finds_machines_by_hostname_ip_user_or_os(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    await _fleet(b)
    await b.sign_in("viewer")
    page = await b.get("/machines")
    search = [attrs for tag, attrs in page.tags if tag == "input" and attrs.get("name") == "q"]
    assert search and search[0]["type"] == "search"
    assert "IP" in (search[0].get("placeholder") or "")
    for q, found in [
        ("front", ["front-desk"]),
        ("192.168.7", ["front-desk"]),
        ("2001:DB8", ["front-desk"]),
        ("ALICE", ["front-desk"]),
        ("windows 11", ["front-desk"]),
        ("linux", ["old-agent"]),
        ("10.9.9", []),
    ]:
        searched = await b.get(f"/machines?q={q.replace(' ', '+')}")
        rows, _ = table(searched)
        assert [r["Hostname"] for r in rows] == found, q
        assert f'value="{q}"' in searched.html  # the box keeps what was searched


async def test_nobody_logged_in_reads_as_nobody(browser: BrowserFactory) -> None:
    b = await browser()
    harness = b.harness
    _client_id, token = await harness.add_client("Acme Dental")
    server = await harness.enroll(token, "hw-srv", hostname="file-server", kind="server")
    await harness.heartbeat(server["agent_token"], users=[], agent_version="1.5.0")
    await harness.flush()
    await b.sign_in("viewer")
    rows, _ = table(await b.get("/machines"))
    assert rows[0]["User"] == "nobody"


async def test_the_machine_page_shows_every_address_user_and_the_agent_version(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    await _fleet(b)
    await b.sign_in("viewer")
    listed = (await b.harness.get("/v1/machines", await b.harness.api_token("viewer")))["machines"]
    ids = {m["hostname"]: m["machine_id"] for m in listed}
    front = (await b.get(f"/machines/{ids['front-desk']}")).text
    assert "192.168.7.21, 172.17.0.1, 2001:db8::21" in front
    assert "alice, reception" in front and "1.5.0" in front
    old = (await b.get(f"/machines/{ids['old-agent']}")).text
    assert old.count("not reported") >= 2
