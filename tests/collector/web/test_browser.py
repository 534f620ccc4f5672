"""End to end in a real browser: Debian's chromium, driven by Playwright, against a real
`rmm-collector serve` and a real `rmm-agent run` on loopback.

Each person signs in as a person the first time, as the NOC handed them over: user name and the
generated password, the QR page's first TOTP code (computed from the secret `user add` printed),
the recovery codes shown once, then a password of their own. A technician then finds the
agent's machine, offboards it and watches the follow page reach `offboarded` without reloading,
while the agent verifies the signed command and runs its uninstall steps for real. A viewer
signs in and finds no way to offboard. Screenshots of the overview, the machine page and the
follow page are kept under tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from collector import totp
from tests.collector.web.fleet import seed_sqlite
from tests.support.processes import free_port

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "tests" / "artifacts"
HOSTNAME = "front-desk-01"

COLLECTOR_ENV = {
    "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": "1",
    "RMM_COLLECTOR_FLUSH_INTERVAL_S": "0.2",
    "RMM_COLLECTOR_AUTH_CACHE_S": "1",
    "RMM_COLLECTOR_COMMAND_POLL_S": "0.5",
}


@dataclass
class Stack:
    url: str
    technician: str
    viewer: str
    machine_id: str
    other_machine_id: str
    pending_command_id: str
    antivirus: Path
    standin: subprocess.Popen[bytes]
    agent_log: Path
    people: dict[str, dict[str, str]]


def wait_until(check: object, what: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check() if callable(check) else check
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _cli(db: Path, *args: str, as_json: bool = True) -> str:
    done = subprocess.run(
        [str(BIN / "rmm-collector"), *args, *(["--json"] if as_json else []), "--db", str(db)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **COLLECTOR_ENV},
    )
    return done.stdout


def _api(url: str, path: str, token: str, body: dict[str, object] | None = None) -> object:
    request = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("browser")
    db = folder / "collector.sqlite3"
    pin = _cli(db, "keys", "generate", as_json=False).strip()
    technician = json.loads(_cli(db, "token", "add", "tina", "--role", "technician"))["token"]
    viewer = json.loads(_cli(db, "token", "add", "vic", "--role", "viewer"))["token"]
    enrollment = json.loads(_cli(db, "client", "add", "Acme Dental"))["enrollment_token"]
    people = {
        name: json.loads(_cli(db, "user", "add", name, "--role", role))
        for name, role in (("tina", "technician"), ("vic", "viewer"), ("tom", "technician"))
    }
    seed_sqlite(str(db), datetime.now(UTC), machines=400, clients=4)

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

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_until(ready, "the collector's /healthz")

    # The anti-virus stand-in: a daemon under its own name, uninstalled by the offboard.
    antivirus = folder / "avguard"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", antivirus)
    standin = subprocess.Popen([str(antivirus), "600"])
    agent_dir = folder / "agent"
    agent_dir.mkdir()
    config = agent_dir / "agent.toml"
    config.write_text(
        "\n".join(
            [
                f"collector_url = {json.dumps(url)}",
                f"enrollment_token = {json.dumps(enrollment)}",
                'state_dir = "state"',
                f"command_keys = [{json.dumps(pin)}]",
                # The collector's signature alone (the pages follow; two-person orders are
                # signed in the CLI and tested there).
                "offboard_approvals = 0",
                "retry_max_s = 1",
                "",
                "[[component]]",
                'name = "antivirus"',
                'processes = ["avguard"]',
                "uninstall = "
                + json.dumps([["kill", str(standin.pid)], ["rm", "-f", str(antivirus)]]),
                "",
            ]
        )
    )
    config.chmod(0o600)
    agent_log = agent_dir / "agent.log"
    log = open(agent_log, "wb")  # noqa: SIM115
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config), "--log-level", "debug"],
        env={
            **os.environ,
            "RMM_AGENT_HOSTNAME": HOSTNAME,
            "RMM_AGENT_HARDWARE_ID": uuid.uuid4().hex,
        },
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    log.close()

    def agent_machine() -> str | None:
        found = _api(url, f"/v1/machines?hostname={HOSTNAME}", technician)
        machines = found["machines"]  # type: ignore[index]
        running = [
            m
            for m in machines
            if any(c["name"] == "antivirus" and c["status"] == "running" for c in m["components"])
        ]
        return str(running[0]["machine_id"]) if running else None

    try:
        machine_id = str(wait_until(agent_machine, "the agent's first heartbeat"))
        other = _api(url, "/v1/machines?state=offline&limit=1", viewer)
        other_id = str(other["machines"][0]["machine_id"])  # type: ignore[index]
        waiting = _api(url, "/v1/commands?state=offboard_pending&limit=1", viewer)
        pending_id = str(waiting["commands"][0]["command_id"])  # type: ignore[index]
        yield Stack(
            url,
            technician,
            viewer,
            machine_id,
            other_id,
            pending_id,
            antivirus,
            standin,
            agent_log,
            people,
        )
    finally:
        _stop(agent)
        _stop(collector)
        if standin.poll() is None:
            standin.kill()
        standin.wait()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


def sign_in(browser: Browser, stack: Stack, name: str, *, javascript: bool = True) -> Page:
    """A person's first sign-in, start to end (each test signs in a person of its own)."""
    person = stack.people[name]
    context = browser.new_context(
        viewport={"width": 1360, "height": 900}, java_script_enabled=javascript
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(stack.url + "/")
    expect(page).to_have_url(f"{stack.url}/signin?next=%2F")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(person["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Set up your second factor")).to_be_visible()
    expect(page.locator("figure.qr svg")).to_be_visible()
    page.get_by_label("Code").fill(totp.code_at(person["totp_secret"], datetime.now(UTC)))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.locator("ol.recovery-codes li")).to_have_count(10)
    page.get_by_role("link", name="I have kept them; go on").click()
    expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
    page.get_by_label("Current password").fill(person["password"])
    page.get_by_label("New password", exact=True).fill(f"{name} picked a long passphrase")
    page.get_by_label("New password again").fill(f"{name} picked a long passphrase")
    page.get_by_role("button", name="Save my password").click()
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    expect(page.locator(".who")).to_contain_text(name)
    return page


def test_a_technician_offboards_a_machine_and_watches_it_finish(
    stack: Stack, chromium: Browser
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = sign_in(chromium, stack, "tina")
    expect(page.get_by_role("heading", name="Needs a person")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    page.get_by_role("link", name="Machines", exact=True).click()
    page.get_by_label("Search", exact=True).fill("front-desk")
    page.get_by_label("Search", exact=True).press("Enter")
    page.get_by_role("link", name=HOSTNAME).click()
    expect(page.get_by_role("heading", name=HOSTNAME)).to_contain_text("Online")
    expect(page.locator("svg.timeline-svg rect")).to_have_count(90)
    page.screenshot(path=str(ARTIFACTS / "machine.png"), full_page=True)

    page.get_by_role("link", name="Offboard…").click()
    expect(page.get_by_role("heading", name=f"Offboard {HOSTNAME} of Acme Dental?")).to_be_visible()
    page.get_by_label("Reason").fill("laptop returned at end of lease")
    page.get_by_label("Ticket").fill("T-1042")
    page.get_by_label(f"Yes, offboard {HOSTNAME} of Acme Dental").check()
    page.get_by_role("button", name="Request offboard").click()
    expect(page.get_by_role("heading", name=f"Offboard of {HOSTNAME}")).to_be_visible()

    loads: list[str] = []
    page.on("load", lambda: loads.append(page.url))
    state = page.locator("[data-field=state_label]")
    expect(state).to_have_text("Offboarded", timeout=40_000)
    assert loads == [], f"the page reloaded instead of updating live: {loads}"
    expect(page.locator("[data-live-note]")).to_have_text("Finished: Offboarded.")
    expect(page.locator("[data-field=machine_state_label]")).to_have_text("Offboarded")
    expect(page.locator("[data-steps]")).to_contain_text(str(stack.antivirus))
    page.screenshot(path=str(ARTIFACTS / "offboarded.png"), full_page=True)

    assert not stack.antivirus.exists(), "the uninstall step did not run"
    stack.standin.wait(timeout=5)
    machine = _api(stack.url, f"/v1/machines/{stack.machine_id}", stack.technician)
    assert machine["state"] == "offboarded"  # type: ignore[index]


def test_a_viewer_finds_no_way_to_offboard(stack: Stack, chromium: Browser) -> None:
    page = sign_in(chromium, stack, "vic")
    page.goto(f"{stack.url}/machines/{stack.other_machine_id}")
    expect(page.get_by_role("heading", name="Facts")).to_be_visible()
    expect(page.locator("h1 .state")).to_have_text("Offline")  # a technician could offboard it
    assert page.get_by_role("link", name="Offboard…").count() == 0
    assert page.get_by_role("button", name="Request offboard").count() == 0
    assert page.locator("a[href$='/offboard'], form[action$='/offboard']").count() == 0
    page.goto(f"{stack.url}/machines/{stack.other_machine_id}/offboard")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("the viewer role may not do this")


def test_the_follow_page_refreshes_itself_without_javascript(
    stack: Stack, chromium: Browser
) -> None:
    page = sign_in(chromium, stack, "tom", javascript=False)
    page.goto(f"{stack.url}/commands/{stack.pending_command_id}")
    expect(page.locator("[data-field=state_label]")).to_have_text("Offboard pending")
    expect(page.get_by_role("link", name="Reload now")).to_be_visible()
    with page.expect_event("load", timeout=10_000):
        pass  # the <noscript> refresh reloads the page after 5 seconds
    expect(page).to_have_url(f"{stack.url}/commands/{stack.pending_command_id}")
