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
    """The text as read: the parts joined by spaces, none before punctuation or after "("."""
    parser = _Text()
    parser.feed(html)
    text = " ".join(parser.parts)
    return re.sub(r"\( ", "(", re.sub(r" ([,.:;)])", r"\1", text))


def section(page: Page, pattern: str) -> str:
    """The text of the first part of the page the regular expression matches."""
    found = re.search(pattern, page.html, re.S)
    assert found, f"nothing matches {pattern!r}"
    return text_of(found.group(0))


async def deployed_machine(
    b: Browser, components: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """front-desk of Acme Dental, enrolled and reporting `components` (the deployment)."""
    _, enrollment = await b.harness.add_client("Acme Dental")
    agent = await b.harness.enroll(enrollment, "hw-1", hostname="front-desk")
    await b.harness.heartbeat(agent["agent_token"], DEPLOYED if components is None else components)
    await b.harness.flush()
    return agent


async def offboard_requested(b: Browser, machine_id: str) -> str:
    """The command id of an offboard technician tina requested through the API."""
    tech = await b.harness.api_token("technician", name="tina")
    resp = await b.harness.client.post(
        f"/v1/machines/{machine_id}/offboard", headers=tech, json={"reason": "returned"}
    )
    return str((await resp.json())["command_id"])


async def offboarded(
    browser: BrowserFactory,
    status: str = "succeeded",
    steps: list[dict[str, Any]] | None = None,
    reason: str | None = None,
) -> tuple[Browser, dict[str, Any], str]:
    """A machine reporting its deployment, offboarded through the API; a technician signed in."""
    b = await browser()
    agent = await deployed_machine(b)
    command_id = await offboard_requested(b, agent["machine_id"])
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


APT_OUTPUT = "\n".join(f"Reading line {n}" for n in range(1, 41)) + (
    "\nE: Sub-process /usr/bin/dpkg returned an error code (1)\n"
)
FAILED_STEPS = [
    {
        "component": "antivirus",
        "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
        "status": "failed",
        "exit_code": 100,
        "output_tail": APT_OUTPUT,
        "duration_s": 4.25,
    },
    {"component": "antivirus", "argv": [], "status": "failed", "output_tail": "still running"},
]


async def test_a_failed_offboard_shows_the_failed_step_its_exit_code_and_its_output_end(
    browser: BrowserFactory,
) -> None:
    b, _, command_id = await offboarded(
        browser, "failed", FAILED_STEPS, reason="not removed: antivirus"
    )
    page = await b.get(f"/commands/{command_id}")
    failed = section(
        page, r'<div class="banner banner-danger failed-step" id="failed-step".*?</pre>'
    )
    assert "hidden" not in re.search(r'<div [^>]*id="failed-step"[^>]*>', page.html).group(0)  # type: ignore[union-attr]
    assert "The offboard failed at antivirus" in failed
    assert "not removed: antivirus" in failed
    assert "apt-get -y purge clamav-daemon" in failed
    assert "Exit code 100" in failed
    assert "dpkg returned an error code (1)" in failed and "Reading line 40" in failed
    assert "Reading line 1 " not in failed + " "  # the start is not what matters
    assert "the last 15 of 41 lines the agent sent" in failed
    # The follow page's JSON carries the same, for the script that updates the page.
    resp = await b.client.get(f"/commands/{command_id}/live")
    live = await resp.json()
    assert live["failed_step"]["exit_code"] == "100"
    assert live["failed_step"]["tail"].endswith("error code (1)")
    assert [r["command"] for r in live["step_rows"]] == [
        "apt-get -y purge clamav-daemon",
        "(a check, no command run)",
    ]


async def test_the_steps_table_shows_the_end_of_each_output_and_no_python_values(
    browser: BrowserFactory,
) -> None:
    b, _, command_id = await offboarded(browser, "failed", FAILED_STEPS)
    page = await b.get(f"/commands/{command_id}")
    steps = section(page, r"<tbody data-steps>.*?</tbody>")
    shown = section(page, r'<tbody data-steps>.*?<pre class="tail">.*?</pre>')
    assert shown.endswith("Reading line 40 E: Sub-process /usr/bin/dpkg returned an error code (1)")
    assert "Reading line 26 " not in shown and "Reading line 27 " in shown
    assert "the last 15 of 41 lines the agent sent" in steps
    assert "All the agent sent" in steps and "Reading line 1 " in steps
    assert "4.2 s" in steps
    # The check has no exit code: a dash, never "None".
    assert "(a check, no command run) failed — — still running" in steps
    assert not re.search(r"\bNone\b|\{'|'exit_code'", page.text)


async def test_a_skipped_step_has_dashes_where_it_has_no_values(browser: BrowserFactory) -> None:
    succeeded, _, done_id = await offboarded(browser)
    done = await succeeded.get(f"/commands/{done_id}")
    assert not re.search(r"\bNone\b|\{'", done.text)
    rows = section(done, r"<tbody data-steps>.*?</tbody>")
    assert "dns_protection (a check, no command run) skipped — —" in rows


async def test_the_audit_log_names_machines_and_agents_and_tells_failed_steps_in_words(
    browser: BrowserFactory,
) -> None:
    b, agent, _ = await offboarded(browser, "failed", FAILED_STEPS)
    page = await b.get("/audit")
    assert not re.search(r"\bNone\b|\{'|'exit_code'", page.text)
    assert agent["agent_id"] not in page.text and agent["machine_id"] not in page.text
    client = await b.harness.store.find_client("Acme Dental")
    assert client is not None and client.client_id not in page.text
    assert "client_id Acme Dental" in page.text
    assert "agent of front-desk (Acme Dental)" in page.text
    assert f"/machines/{agent['machine_id']}" in page.links
    assert (
        "antivirus: apt-get -y purge clamav-daemon failed, exit code 100; "
        "output ends: E: Sub-process /usr/bin/dpkg returned an error code (1)"
    ) in page.text
    machine_page = await b.get(f"/machines/{agent['machine_id']}")
    trail = section(machine_page, r'<section aria-labelledby="audit-title".*?</section>')
    assert "agent of front-desk (Acme Dental)" in trail
    assert not re.search(r"\bNone\b|\{'", trail)
