"""End to end in a real browser (Debian's chromium, driven by Playwright) against a real
`rmm-collector serve` on loopback: an agent's heartbeat reports a printer on the LAN, a
technician finds it on the client's "Devices without an agent" page, dismisses it with a
reason, and opens the printable coverage statement. A screenshot of each page is kept under
tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, expect

from tests.collector.web.test_browser import (
    ARTIFACTS,
    BIN,
    COLLECTOR_ENV,
    _cli,
    _stop,
    chromium,
    sign_in,
    wait_until,
)
from tests.support.processes import free_port

__all__ = ["chromium"]  # the shared browser fixture

PRINTER = "3c:2a:f4:10:20:30"


@dataclass
class Office:
    url: str
    technician: str
    client_id: str
    machine_id: str
    people: dict[str, dict[str, str]]


def _post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    folder = tmp_path_factory.mktemp("coverage-browser")
    db = folder / "collector.sqlite3"
    technician = json.loads(_cli(db, "token", "add", "tina", "--role", "technician"))["token"]
    added = json.loads(_cli(db, "client", "add", "Acme Dental"))
    people = {"tina": json.loads(_cli(db, "user", "add", "tina", "--role", "technician"))}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "collector.log", "wb")  # noqa: SIM115
    collector = subprocess.Popen(
        [str(BIN / "rmm-collector"), "serve", "--port", str(port), "--db", str(db)],
        env={**os.environ, **COLLECTOR_ENV},
        stdout=log,
        stderr=log,
    )
    log.close()
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(ready, "the collector's /healthz")
        # The agent's side of the wire, as `rmm-agent run` sends it (its network reading is
        # this machine's own, which a test cannot choose).
        enrolled = _post(
            f"{url}/v1/enroll",
            {
                "enrollment_token": added["enrollment_token"],
                "hardware_id": "hw-front-desk",
                "hostname": "front-desk",
                "os": "Linux 6.1",
                "kind": "pc",
            },
        )
        _post(
            f"{url}/v1/heartbeat",
            {
                "components": [{"name": "rmm", "status": "running", "version": "0.1.0"}],
                "hostname": "front-desk",
                "network": {
                    "macs": ["02:00:00:00:00:01"],
                    "neighbors": [{"ip": "192.168.1.50", "mac": PRINTER.upper()}],
                },
            },
            token=str(enrolled["agent_token"]),
        )

        def listed() -> bool:
            request = urllib.request.Request(
                f"{url}/v1/clients/{added['client_id']}/unmanaged",
                headers={"Authorization": f"Bearer {technician}"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(json.load(response)["devices"])

        wait_until(listed, "the printer in the unmanaged list")
        yield Office(url, technician, added["client_id"], str(enrolled["machine_id"]), people)
    finally:
        _stop(collector)


def test_a_technician_dismisses_a_printer_and_prints_the_coverage_statement(
    office: Office, chromium: Browser
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = sign_in(chromium, office, "tina")  # type: ignore[arg-type]

    page.goto(f"{office.url}/machines?client={office.client_id}")
    page.get_by_role("link", name="Devices without an agent").click()
    expect(
        page.get_by_role("heading", name="Devices without an agent at Acme Dental")
    ).to_be_visible()
    row = page.get_by_role("row").filter(has_text=PRINTER)
    expect(row).to_contain_text("192.168.1.50")
    page.screenshot(path=str(ARTIFACTS / "unmanaged.png"), full_page=True)
    row.get_by_label(f"Reason for {PRINTER}").fill("reception printer")
    row.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_role("status")).to_have_text("Dismissed.")
    expect(page.get_by_role("heading", name="Unmanaged (0)")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=PRINTER)).to_contain_text("reception printer")

    page.get_by_role("link", name="Coverage statement").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Coverage statement: Acme Dental")
    expect(page.locator("#summary")).to_have_text(
        "1 of 1 machine protected 100% of the month so far."
    )
    expect(page.get_by_role("row").filter(has_text=PRINTER)).to_contain_text("reception printer")
    page.emulate_media(media="print")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "coverage-statement.png"), full_page=True)
    page.context.close()
