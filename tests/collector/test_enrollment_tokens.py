"""Enrollment tokens with limits: a use limit, and an alert when one token enrolls a crowd."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from collector.store.base import AuditFilter
from collector.tokens import hash_token, new_token
from tests.collector.conftest import Harness, HarnessFactory
from tests.collector.test_reenrollment import enroll_raw
from tests.support.processes import BIN, collector_cli


async def limited_token(harness: Harness, max_uses: int) -> tuple[str, str]:
    client = await harness.store.create_client("Acme", now=harness.clock.now(), actor="test")
    token = new_token("enrollment")
    await harness.store.add_enrollment_token(
        client.client_id,
        hash_token(token),
        expires_at=harness.clock.now() + timedelta(days=30),
        now=harness.clock.now(),
        actor="test",
        max_uses=max_uses,
    )
    return client.client_id, token


async def test_a_token_with_a_use_limit_enrolls_that_many_machines_and_no_more(
    harness: Harness,
) -> None:
    client_id, token = await limited_token(harness, max_uses=2)
    admin = await harness.api_token("admin")
    await harness.enroll(token, "hw-1")
    await harness.enroll(token, "hw-2")
    status, answer = await enroll_raw(harness, token, "hw-3")
    assert status == 403
    assert answer["error"] == "enrollment_token_used_up"
    machines = await harness.get("/v1/machines", admin)
    assert sorted(m["hostname"] for m in machines["machines"]) == ["host-hw-1", "host-hw-2"]
    (info,) = await harness.store.list_enrollment_tokens(client_id)
    assert (info.max_uses, info.uses) == (2, 2)


async def test_a_token_enrolling_more_than_the_hourly_threshold_is_audited_once(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(enrollment_alert_per_hour=3)
    client_id, token = await harness.add_client()
    for n in range(6):
        await harness.enroll(token, f"hw-{n}")
    entries = await harness.store.list_audit(AuditFilter(action="enrollment_token.burst"))
    assert [(e.target, e.detail["enrolled_last_hour"]) for _, e in entries] == [(client_id, 4)]


def test_max_uses_is_set_from_the_command_line_and_must_be_positive(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    created = collector_cli("client", "add", "Acme", "--max-uses", "25", db=db)
    assert created["max_uses"] == 25
    again = collector_cli("client", "new-token", "Acme", "--max-uses", "1", db=db)
    assert again["max_uses"] == 1
    tokens = collector_cli("client", "list", db=db)["clients"][0]["enrollment_tokens"]  # type: ignore[index]
    assert sorted(t["max_uses"] for t in tokens) == [1, 25]
    refused = subprocess.run(
        [str(BIN / "rmm-collector"), "client", "new-token", "Acme", "--max-uses", "0", "--db", db],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "at least 1" in refused.stderr
