"""Pages in a real browser (Debian's chromium, driven by Playwright) against the test's own app:
every presence timeline label is drawn inside the figure, the last cutoff's too when the cutoff
was a day ago; a follow page left open shows a failed offboard's step when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.collector.web.conftest import Browser, BrowserFactory
from tests.collector.web.test_offboard_result_pages import (
    DEPLOYED,
    deployed_machine,
    offboard_requested,
)

CHROMIUM = Path("/usr/bin/chromium")

_LABEL_BOXES = """() => {
  const svg = document.querySelector("svg.timeline-svg").getBoundingClientRect();
  return [...document.querySelectorAll("svg.timeline-svg text")].map((t) => {
    const box = t.getBoundingClientRect();
    return {text: t.textContent, left: box.left, right: box.right,
            svgLeft: svg.left, svgRight: svg.right};
  });
}"""


@asynccontextmanager
async def chromium_page(b: Browser, path: str, width: int = 1360) -> AsyncIterator[Page]:
    """The page at `path` in chromium, signed in with the session of `b`."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    url = b.client.make_url(path)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            context = await chromium.new_context(viewport={"width": width, "height": 900})
            await context.add_cookies(
                [{"name": "rmm_session", "value": b.session_cookie(), "url": str(url.origin())}]
            )
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await page.goto(str(url))
            yield page
        finally:
            await chromium.close()


@pytest.mark.parametrize("width", [1360, 600])
async def test_every_timeline_label_lies_inside_the_timeline(
    browser: BrowserFactory, width: int
) -> None:
    b = await browser()
    _, enrollment = await b.harness.add_client("Acme Dental")
    # The clock stands on 2 March, 09:00: the 1 March cutoff is a day before the right edge.
    agent = await b.harness.enroll(enrollment, "hw-1", hostname="front-desk")
    await b.sign_in("viewer")
    async with chromium_page(b, f"/machines/{agent['machine_id']}", width) as page:
        boxes: list[dict[str, Any]] = await page.evaluate(_LABEL_BOXES)
    labels = [box["text"] for box in boxes]
    assert "01 Mar cutoff: not billed" in labels
    for box in boxes:
        assert box["left"] >= box["svgLeft"] - 0.5, box
        assert box["right"] <= box["svgRight"] + 0.5, box


async def test_the_follow_page_shows_the_failed_step_when_the_offboard_fails(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    agent = await deployed_machine(b)
    command_id = await offboard_requested(b, agent["machine_id"])
    await b.harness.heartbeat(agent["agent_token"], DEPLOYED)
    await b.sign_in("viewer")
    async with chromium_page(b, f"/commands/{command_id}") as page:
        failed = page.locator("#failed-step")
        await expect(failed).to_be_hidden()
        steps = [
            {
                "component": "antivirus",
                "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
                "status": "failed",
                "exit_code": 100,
                "output_tail": "\n".join(f"line {n}" for n in range(30)) + "\nE: dpkg broke",
            }
        ]
        resp = await b.harness.client.post(
            f"/v1/commands/{command_id}/result",
            headers={"Authorization": f"Bearer {agent['agent_token']}"},
            json={"status": "failed", "reason": "not removed: antivirus", "steps": steps},
        )
        assert resp.status == 200
        await expect(page.locator("[data-field=state_label]")).to_have_text(
            "Offboard failed", timeout=20_000
        )
        await expect(failed).to_be_visible()
        await expect(failed.locator("h2")).to_have_text("The offboard failed at antivirus")
        await expect(failed.locator("[data-failed=exit_code]")).to_have_text("100")
        await expect(failed.locator("[data-failed=tail]")).to_contain_text("E: dpkg broke")
        await expect(failed.locator("[data-failed=tail]")).not_to_contain_text("line 15")
        await expect(failed).to_contain_text("not removed: antivirus")
        await expect(page.locator("tr.step-failed")).to_contain_text("the last 15 of 31 lines")
