"""What the pages show once an offboard has ended: the components it removed, the failed step
with its exit code and the end of its output, and no Python value anywhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from tests.collector.web.conftest import Browser, BrowserFactory, Page

DEPLOYED = [
    {"name": "antivirus", "status": "running", "version": "1.2", "required": True},
    {"name": "dns_protection", "status": "running", "version": "2.91", "required": True},
]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.parts.append(" ".join(data.split()))


def text_of(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


def section(page: Page, pattern: str) -> str:
    """The text of the first part of the page the regular expression matches."""
    found = re.search(pattern, page.html, re.S)
    assert found, f"nothing matches {pattern!r}"
    return text_of(found.group(0))


async def offboarded(
    browser: BrowserFactory,
    status: str = "succeeded",
    steps: list[dict[str, Any]] | None = None,
    reason: str | None = None,
) -> tuple[Browser, dict[str, Any], str]:
    """A machine reporting its deployment, offboarded through the API; a technician signed in."""
    b = await browser()
    _, enrollment = await b.harness.add_client("Acme Dental")
    agent = await b.harness.enroll(enrollment, "hw-1", hostname="front-desk")
    await b.harness.heartbeat(agent["agent_token"], DEPLOYED)
    await b.harness.flush()
    tech = await b.harness.api_token("technician", name="tina")
    resp = await b.harness.client.post(
        f"/v1/machines/{agent['machine_id']}/offboard", headers=tech, json={"reason": "returned"}
    )
    command_id = (await resp.json())["command_id"]
    b.harness.clock.advance(minutes=1)
    await b.harness.heartbeat(agent["agent_token"], DEPLOYED)
    await b.harness.flush()
    b.harness.clock.advance(minutes=1)
    default_steps = [
        {
            "component": "antivirus",
            "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
            "status": "ok",
            "exit_code": 0,
            "output_tail": "Removing clamav-daemon",
        },
        {"component": "dns_protection", "argv": [], "status": "skipped", "output_tail": ""},
    ]
    resp = await b.harness.client.post(
        f"/v1/commands/{command_id}/result",
        headers={"Authorization": f"Bearer {agent['agent_token']}"},
        json={
            "status": status,
            "reason": reason,
            "steps": default_steps if steps is None else steps,
        },
    )
    assert resp.status == 200, await resp.text()
    await b.sign_in("admin", name="ada")
    return b, agent, command_id


async def test_an_offboarded_machine_shows_no_component_running(browser: BrowserFactory) -> None:
    b, agent, _ = await offboarded(browser)
    listed = await b.get("/machines")
    row = section(
        listed, r"<tr>\s*<th scope=\"row\"><a href=\"/machines/[^\"]+\">front-desk.*?</tr>"
    )
    assert "Offboarded" in row and "removed by the offboard" in row
    assert "running" not in row
    page = await b.get(f"/machines/{agent['machine_id']}")
    components = section(page, r'<section aria-labelledby="components-title".*?</section>')
    assert "running" not in components
    assert "antivirus removed" in components and "dns_protection removed" in components
    assert "the agent uninstalled these components" in components
