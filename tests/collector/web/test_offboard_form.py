"""The offboard form tells what will happen before anyone confirms: the machine's own components
as last reported, the names the order carries, and whose uninstall steps the agent runs."""

from __future__ import annotations

import json

from collector.store.base import CommandFilter
from tests.collector.web.conftest import BrowserFactory
from tests.collector.web.test_offboard_result_pages import (
    DEPLOYED,
    deployed_machine,
    offboarded,
    section,
)

WITH_AGENT = [*DEPLOYED, {"name": "rmm", "status": "running", "version": "0.1.0"}]


async def test_the_form_lists_the_machines_components_and_the_steps_that_will_run(
    browser: BrowserFactory,
) -> None:
    b = await browser()
    agent = await deployed_machine(b, WITH_AGENT)
    await b.sign_in("technician", name="tina")
    path = f"/machines/{agent['machine_id']}/offboard"
    form = await b.get(path)
    summary = section(form, r'<p id="plan-summary">.*?</p>')
    assert "The order names the components front-desk last reported" in summary
    assert "antivirus, dns_protection, rmm" in summary
    assert (
        "the agent will run the uninstall steps from its own configuration for: "
        "antivirus, dns_protection, check that each is gone, report, and then remove itself"
    ) in summary
    plan = section(form, r'<table [^>]*id="plan">.*?</table>')
    assert "antivirus running 1.2 yes the agent runs the uninstall steps" in plan
    assert "dns_protection running 2.91 yes" in plan
    assert "rmm running 0.1.0 yes the agent removes itself last" in plan
    assert (
        "Yes, offboard front-desk of Acme Dental and uninstall antivirus, dns_protection "
        "from it, then remove its agent."
    ) in form.text
    await b.post(
        path,
        {"csrf": form.csrf, "reason": "returned", "confirm": agent["machine_id"]},
    )
    (command,) = await b.harness.store.list_commands(CommandFilter(machine_id=agent["machine_id"]))
    # The form said what the order carries.
    assert json.loads(command.components_json or "[]") == ["antivirus", "dns_protection", "rmm"]


async def test_after_a_failed_attempt_the_form_shows_the_commands_the_agent_ran(
    browser: BrowserFactory,
) -> None:
    steps = [
        {
            "component": "antivirus",
            "argv": ["apt-get", "-y", "purge", "clamav-daemon"],
            "status": "failed",
            "exit_code": 100,
            "output_tail": "E: dpkg was interrupted",
        }
    ]
    b, agent, _ = await offboarded(browser, "failed", steps, reason="not removed: antivirus")
    form = await b.get(f"/machines/{agent['machine_id']}/offboard")
    plan = section(form, r'<table [^>]*id="plan">.*?</table>')
    assert "ran in the attempt of 2026-03-02 09:00 UTC: apt-get -y purge clamav-daemon" in plan
    assert "dns_protection" in plan and plan.count("ran in the attempt") == 1
