"""The collector's business rules, as plain functions, without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from collector.rules.commands import (
    OffboardTarget,
    decide_offboard_request,
    decide_result,
    plan_delivery,
)
from collector.rules.enrollment import (
    EnrollmentPlan,
    HeldEnrollment,
    KnownHardware,
    decide_enrollment,
    plan_enrollment,
    token_usable,
)
from collector.rules.expiry import ExpiringMachine, expired_before, expiry_record
from collector.rules.presence import closes_run, retention_horizon
from collector.store.records import (
    AgentIdentity,
    CommandRecord,
    CommandResultRecord,
    Conflict,
    EnrollRequestRecord,
    Facts,
    NotFound,
)

NOW = datetime(2026, 5, 7, 9, 30, tzinfo=UTC)
GAP = timedelta(seconds=180)
COMPONENTS = '[{"name":"antivirus","status":"running"}]'
REQUEST = EnrollRequestRecord(
    "token-hash", "hw-1", Facts("pc-1", "Linux", "pc", "[]"), "a2", "t2", None
)


def known(**changes: object) -> KnownHardware:
    base = KnownHardware("m1", "k1", None, NOW - timedelta(seconds=60), COMPONENTS)
    return replace(base, **changes)  # type: ignore[arg-type]


def command(**changes: object) -> CommandRecord:
    base = CommandRecord(
        command_id="c1",
        type="offboard",
        machine_id="m1",
        client_id="k1",
        agent_id="a1",
        sequence=3,
        state="offboard_pending",
        issuer="tina",
        reason="returned",
        ticket=None,
        created_at=NOW - timedelta(hours=1),
        delivered_at=None,
        delivery_count=0,
        completed_at=None,
        result_status=None,
        result_reason=None,
        steps_json=None,
        rejections=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


AGENT = AgentIdentity("a1", "m1", "k1")


# enrollment


def test_unknown_hardware_is_a_new_machine_with_its_first_coverage_period() -> None:
    p = plan_enrollment(REQUEST, None, client_id="k1", new_machine_id="m-new", now=NOW, gap=GAP)
    assert (p.machine_id, p.new_machine, p.new_coverage_period) == ("m-new", True, True)
    assert p.audit.action == "machine.enrolled" and p.last_seen == NOW


def test_a_reimage_keeps_the_machine_and_what_it_last_reported() -> None:
    p = plan_enrollment(REQUEST, known(), client_id="k1", new_machine_id="m-new", now=NOW, gap=GAP)
    assert (p.machine_id, p.new_machine, p.new_coverage_period) == ("m1", False, False)
    assert p.components_json == COMPONENTS  # an enrollment reports no components yet
    assert p.audit.action == "machine.reenrolled"


def test_enrolling_again_after_an_offboard_starts_a_new_coverage_period() -> None:
    p = plan_enrollment(
        REQUEST,
        known(offboard_state="offboarded"),
        client_id="k1",
        new_machine_id="m-new",
        now=NOW,
        gap=GAP,
    )
    assert (p.machine_id, p.new_coverage_period) == ("m1", True)


def test_an_enrollment_after_a_gap_longer_than_the_online_window_closes_the_run() -> None:
    after_gap = known(last_seen=NOW - GAP - timedelta(microseconds=1))
    at_gap = known(last_seen=NOW - GAP)
    common = {"client_id": "k1", "new_machine_id": "m-new", "now": NOW, "gap": GAP}
    assert plan_enrollment(REQUEST, after_gap, **common).closes_presence_run  # type: ignore[arg-type]
    assert not plan_enrollment(REQUEST, at_gap, **common).closes_presence_run  # type: ignore[arg-type]


def test_last_seen_never_moves_back_on_enrollment() -> None:
    ahead = known(last_seen=NOW + timedelta(seconds=5))
    p = plan_enrollment(REQUEST, ahead, client_id="k1", new_machine_id="m", now=NOW, gap=GAP)
    assert p.last_seen == NOW + timedelta(seconds=5)


def decide(
    same: KnownHardware | None = None, elsewhere: KnownHardware | None = None
) -> EnrollmentPlan | HeldEnrollment:
    return decide_enrollment(
        REQUEST,
        client_id="k1",
        same_client=same,
        elsewhere=elsewhere,
        new_machine_id="m-new",
        now=NOW,
        gap=GAP,
    )


def test_known_hardware_without_proof_or_approval_is_held_and_changes_nothing() -> None:
    held = decide(same=known())
    assert isinstance(held, HeldEnrollment)
    assert (held.machine_id, held.audit.action) == ("m1", "machine.reenroll_held")


def test_known_hardware_with_its_credential_or_an_approval_enrolls_again() -> None:
    for vouched in (known(proven=True), known(approved=True)):
        plan = decide(same=vouched)
        assert isinstance(plan, EnrollmentPlan)
        assert (plan.machine_id, plan.new_machine, plan.moved_from) == ("m1", False, None)


def test_another_clients_hardware_without_proof_is_held_with_proof_it_moves() -> None:
    theirs = known(client_id="k-other", machine_id="m-theirs")
    held = decide(elsewhere=theirs)
    assert isinstance(held, HeldEnrollment) and held.client_id == "k1"
    moved = decide(elsewhere=replace(theirs, proven=True))
    assert isinstance(moved, EnrollmentPlan)
    assert moved.new_machine and moved.machine_id == "m-new"
    assert moved.moved_from is not None and moved.moved_from.machine_id == "m-theirs"
    assert moved.audit.action == "machine.moved_in"


def test_new_hardware_needs_no_proof() -> None:
    plan = decide()
    assert isinstance(plan, EnrollmentPlan) and plan.new_machine


def test_an_enrollment_token_with_a_use_limit_enrolls_that_many_times() -> None:
    assert token_usable(0, None) and token_usable(4, 5)
    assert not token_usable(5, 5)


# presence, expiry, retention


def test_a_run_closes_only_after_a_gap_longer_than_the_online_window() -> None:
    assert not closes_run(NOW, NOW + GAP, GAP)
    assert closes_run(NOW, NOW + GAP + timedelta(microseconds=1), GAP)


def test_expired_at_exactly_720_hours_after_the_last_heartbeat() -> None:
    assert expired_before(NOW) == NOW - timedelta(hours=720)
    entry = expiry_record(ExpiringMachine("m1", "k1", "pc-1", NOW - timedelta(days=31), None), NOW)
    assert (entry.actor, entry.action) == ("system", "machine.expired")
    assert entry.detail["expired_at"] == "2026-05-06T09:30:00Z"


def test_history_must_reach_further_back_than_the_expiry_window() -> None:
    assert retention_horizon(NOW, timedelta(days=400)) == NOW - timedelta(days=400)
    with pytest.raises(AssertionError):
        retention_horizon(NOW, timedelta(days=30))


# offboard requests and delivery


def test_an_offboard_of_an_unknown_machine_is_not_found_and_of_an_offboarded_one_a_conflict() -> (
    None
):
    with pytest.raises(NotFound):
        decide_offboard_request(None, None)
    with pytest.raises(Conflict):
        decide_offboard_request(OffboardTarget("m1", "k1", "a1", "pc-1", "offboarded"), None)


def test_a_second_offboard_request_answers_with_the_pending_command() -> None:
    target = OffboardTarget("m1", "k1", "a1", "pc-1", "offboard_pending")
    assert decide_offboard_request(target, command()) == command()
    assert decide_offboard_request(replace(target, offboard_state=None), None) is None


def test_the_first_delivery_is_audited_and_later_ones_are_not() -> None:
    first = plan_delivery(command(), AGENT, NOW)
    assert first.audit is not None and first.audit.action == "command.delivered"
    assert plan_delivery(command(delivery_count=1), AGENT, NOW).audit is None


# command results


def result(status: str, steps: str = "[]") -> CommandResultRecord:
    return CommandResultRecord("c1", status, "why", steps)  # type: ignore[arg-type]


def test_a_result_from_another_agent_is_refused_and_audited() -> None:
    decision = decide_result(command(), AgentIdentity("a9", "m9", "k1"), result("succeeded"), NOW)
    assert decision.effect == "refuse" and not decision.ends_command
    assert decision.audit is not None and decision.audit.action == "command.result_refused"


def test_a_result_for_no_command_is_not_found() -> None:
    with pytest.raises(NotFound):
        decide_result(None, AGENT, result("succeeded"), NOW)


def test_a_rejected_report_is_counted_and_never_ends_the_command() -> None:
    decision = decide_result(command(), AGENT, result("rejected"), NOW)
    assert decision.effect == "count_rejection" and not decision.ends_command


def test_a_repeated_final_report_changes_nothing() -> None:
    decision = decide_result(command(state="offboarded"), AGENT, result("succeeded"), NOW)
    assert (decision.effect, decision.audit) == ("ignore_repeat", None)


def test_success_completes_the_offboard_and_failure_records_the_failed_steps() -> None:
    done = decide_result(command(), AGENT, result("succeeded"), NOW)
    assert (done.effect, done.state) == ("complete", "offboarded")
    steps = '[{"component":"av","status":"ok"},{"component":"dns","status":"failed"}]'
    failed = decide_result(command(), AGENT, result("failed", steps), NOW)
    assert (failed.effect, failed.state) == ("fail", "offboard_failed")
    assert failed.audit is not None
    assert failed.audit.detail["failed_steps"] == [{"component": "dns", "status": "failed"}]


def test_a_failed_offboard_can_still_succeed_when_asked_again() -> None:
    decision = decide_result(command(state="offboard_failed"), AGENT, result("succeeded"), NOW)
    assert decision.effect == "complete"
