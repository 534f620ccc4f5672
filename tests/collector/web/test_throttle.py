"""The sign-in throttle's rules, without a server: limits per user name and per address over a
sliding window of the injected clock's time; a full sign-in clears the person's count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.web.throttle import SignInThrottle

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_the_sixth_attempt_on_a_name_is_refused_until_the_window_passes() -> None:
    throttle = SignInThrottle(user_failures=5, address_failures=100)
    for minute in range(5):
        assert throttle.blocked("ana", f"10.0.0.{minute}", T0) is None
        throttle.fail("ana", f"10.0.0.{minute}", T0 + timedelta(minutes=minute))
    assert throttle.blocked("ANA", "10.9.9.9", T0 + timedelta(minutes=5)) == "user"
    # The first failure leaves the window 15 minutes after it was made.
    assert throttle.blocked("ana", "10.9.9.9", T0 + timedelta(minutes=15)) is None


def test_an_address_is_refused_after_its_limit_whatever_the_names() -> None:
    throttle = SignInThrottle(user_failures=5, address_failures=3)
    for name in ("a", "b", "c"):
        throttle.fail(name, "192.0.2.7", T0)
    assert throttle.blocked("d", "192.0.2.7", T0) == "address"
    assert throttle.blocked("d", "192.0.2.8", T0) is None


def test_a_full_sign_in_clears_the_name_but_not_the_address() -> None:
    throttle = SignInThrottle(user_failures=2, address_failures=2)
    throttle.fail("ana", "192.0.2.7", T0)
    throttle.fail("ana", "192.0.2.7", T0)
    throttle.succeeded("ana")
    assert throttle.blocked("ana", "192.0.2.8", T0) is None
    assert throttle.blocked("bo", "192.0.2.7", T0) == "address"
