"""The presence timeline in a real browser (Debian's chromium, driven by Playwright): every label
is drawn inside the figure, the last cutoff's too when the cutoff was a day ago."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from tests.collector.web.conftest import BrowserFactory

CHROMIUM = Path("/usr/bin/chromium")

_LABEL_BOXES = """() => {
  const svg = document.querySelector("svg.timeline-svg").getBoundingClientRect();
  return [...document.querySelectorAll("svg.timeline-svg text")].map((t) => {
    const box = t.getBoundingClientRect();
    return {text: t.textContent, left: box.left, right: box.right,
            svgLeft: svg.left, svgRight: svg.right};
  });
}"""


@pytest.mark.parametrize("width", [1360, 600])
async def test_every_timeline_label_lies_inside_the_timeline(
    browser: BrowserFactory, width: int
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    b = await browser()
    _, enrollment = await b.harness.add_client("Acme Dental")
    # The clock stands on 2 March, 09:00: the 1 March cutoff is a day before the right edge.
    agent = await b.harness.enroll(enrollment, "hw-1", hostname="front-desk")
    await b.sign_in("viewer")
    url = b.client.make_url(f"/machines/{agent['machine_id']}")
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
            await page.goto(str(url))
            boxes: list[dict[str, Any]] = await page.evaluate(_LABEL_BOXES)
        finally:
            await chromium.close()
    labels = [box["text"] for box in boxes]
    assert "01 Mar cutoff: not billed" in labels
    for box in boxes:
        assert box["left"] >= box["svgLeft"] - 0.5, box
        assert box["right"] <= box["svgRight"] + 0.5, box
