"""People's accounts in the store (both engines) and through `rmm-collector user` (a real
process on a real SQLite file): a code is good once, a recovery code once, and disabling a
person or resetting their second factor ends their sessions."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import accounts, passwords, totp
from collector.secretbox import SecretBox
from collector.store.base import AuditFilter, Conflict, NotFound, Store
from tests.support.clock import FakeClock
from tests.support.processes import BIN, collector_cli, free_port


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_keys_folder(tmp_path / "keys")


async def test_a_person_is_stored_with_a_hash_not_the_password(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    made = await accounts.create_user(
        store, "ana", "technician", box=box, now=clock.now(), actor="test"
    )
    assert made.password and made.totp_uri.startswith("otpauth://totp/")
    secrets = await store.user_secrets("ana")
    assert secrets is not None
    assert secrets.password_hash.startswith("$argon2id$")
    assert made.password not in secrets.password_hash
    # The TOTP secret is sealed at rest with the keys folder's secret, bound to the person.
    assert made.totp_secret not in secrets.totp_secret
    assert accounts.totp_secret(secrets, box) == made.totp_secret
    other_folder = SecretBox(b"another keys folder's secret....")
    assert accounts.totp_secret(secrets, other_folder) is None
    assert passwords.verify_password(secrets.password_hash, made.password)
    assert not passwords.verify_password(secrets.password_hash, made.password + "x")
    user = secrets.user
    assert (user.role, user.clients, user.must_change_password, user.mfa_enrolled) == (
        "technician",
        None,
        True,
        False,
    )
    (entry,) = [e for _, e in await store.list_audit(AuditFilter(action="user.created"))]
    assert (entry.actor, entry.target) == ("test", "ana")


async def test_names_are_unique_and_clients_must_exist(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    await accounts.create_user(store, "ana", "viewer", box=box, now=clock.now(), actor="test")
    with pytest.raises(Conflict):
        await accounts.create_user(store, "ana", "admin", box=box, now=clock.now(), actor="test")
    with pytest.raises(NotFound):
        await accounts.create_user(
            store,
            "bo",
            "viewer",
            clients=["no-such-client"],
            box=box,
            now=clock.now(),
            actor="test",
        )
    assert [u.name for u in await store.list_users()] == ["ana"]


async def test_a_person_limited_to_clients_carries_that_scope(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    acme = await store.create_client("Acme", now=clock.now(), actor="test")
    await accounts.create_user(
        store, "cy", "technician", clients=[acme.client_id], box=box, now=clock.now(), actor="test"
    )
    user = await store.find_user("cy")
    assert user is not None and user.clients == frozenset({acme.client_id})
    (listed,) = await store.list_users()
    assert listed.clients == frozenset({acme.client_id})


async def test_a_code_is_accepted_once_and_an_older_one_never_after(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    made = await accounts.create_user(
        store, "ana", "viewer", box=box, now=clock.now(), actor="test"
    )
    secrets = await store.user_secrets("ana")
    assert secrets is not None
    earlier = totp.code_at(made.totp_secret, clock.now())
    clock.advance(seconds=30)
    current = totp.code_at(made.totp_secret, clock.now())
    assert await accounts.check_code(store, secrets, current, clock.now(), box=box) == "totp"
    assert await accounts.check_code(store, secrets, current, clock.now(), box=box) is None
    # The previous step's code is still within the drift, but a later step was used.
    assert await accounts.check_code(store, secrets, earlier, clock.now(), box=box) is None
    assert await accounts.check_code(store, secrets, "000000", clock.now(), box=box) is None


async def test_recovery_codes_work_once_each(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    made = await accounts.create_user(
        store, "ana", "viewer", box=box, now=clock.now(), actor="test"
    )
    user_id = made.user.user_id
    codes = passwords.new_recovery_codes()
    assert len(set(codes)) == 10
    step = totp.step_at(clock.now())
    digests = [passwords.recovery_digest(c) for c in codes]
    assert await store.confirm_mfa(user_id, step, digests, now=clock.now())
    assert not await store.confirm_mfa(user_id, step + 1, digests, now=clock.now())
    secrets = await store.user_secrets("ana")
    assert secrets is not None and secrets.user.mfa_enrolled
    assert (
        await accounts.check_code(store, secrets, codes[3].upper(), clock.now(), box=box)
        == "recovery"
    )
    assert await accounts.check_code(store, secrets, codes[3], clock.now(), box=box) is None
    assert await store.recovery_codes_left(user_id) == 9


async def test_disabling_and_resetting_mfa_end_sessions_and_are_audited(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    made = await accounts.create_user(
        store, "ana", "viewer", box=box, now=clock.now(), actor="test"
    )
    epoch = made.user.session_epoch
    await store.confirm_mfa(made.user.user_id, 1, ["d"], now=clock.now())
    reset = await accounts.reset_mfa(store, "ana", box=box, now=clock.now(), actor="admin-amy")
    assert reset.totp_secret != made.totp_secret
    assert not reset.user.mfa_enrolled and reset.user.session_epoch == epoch + 1
    assert await store.recovery_codes_left(made.user.user_id) == 0
    disabled = await store.disable_user("ana", now=clock.now(), actor="admin-amy")
    assert disabled.disabled_at == clock.now() and disabled.session_epoch == epoch + 2
    actions = [e.action for _, e in await store.list_audit(AuditFilter(actor="admin-amy"))]
    assert sorted(actions) == ["user.disabled", "user.mfa_reset"]
    with pytest.raises(NotFound):
        await store.disable_user("nobody", now=clock.now(), actor="admin-amy")


async def test_a_chosen_password_ends_the_forced_change(
    store: Store, clock: FakeClock, box: SecretBox
) -> None:
    made = await accounts.create_user(
        store, "ana", "viewer", box=box, now=clock.now(), actor="test"
    )
    changed = await store.set_password(
        made.user.user_id,
        passwords.hash_password("a long new password"),
        now=clock.now(),
        actor="ana",
    )
    assert not changed.must_change_password
    assert changed.session_epoch == made.user.session_epoch + 1


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rmm-collector"), *args, "--db", str(db)], capture_output=True, text=True
    )


def test_user_add_prints_exactly_the_credentials_once(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    collector_cli("client", "add", "Acme", db=db)
    made = collector_cli("user", "add", "ana", "--role", "technician", "--client", "Acme", db=db)
    assert list(made) == ["name", "role", "password", "totp_secret", "totp_uri"]
    assert (made["name"], made["role"]) == ("ana", "technician")
    assert str(made["totp_uri"]).startswith("otpauth://totp/RMM%20Collector:ana?secret=")
    state = Path(db).read_bytes().decode("latin-1")
    assert str(made["password"]) not in state
    assert str(made["totp_secret"]) not in state
    (listed,) = collector_cli("user", "list", db=db)["users"]  # type: ignore[misc]
    assert listed["name"] == "ana" and len(listed["clients"]) == 1
    assert listed["mfa_enrolled"] is False and listed["must_change_password"] is True
    assert "password" not in listed and "totp_secret" not in listed


def test_user_disable_and_reset_mfa(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    first = collector_cli("user", "add", "ana", "--role", "viewer", db=db)
    reset = collector_cli("user", "reset-mfa", "ana", db=db)
    assert list(reset) == ["name", "role", "totp_secret", "totp_uri"]
    assert reset["totp_secret"] != first["totp_secret"]
    assert collector_cli("user", "disable", "ana", db=db)["disabled_at"]
    assert run("user", "disable", "nobody", db=Path(db)).returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "has space", "--role", "viewer"], "no spaces"),
        (["user", "add", "ana", "--role", "viewer", "--client", "Nope"], "no client named"),
        (["user", "reset-mfa", "nobody"], "no person named"),
    ],
)
def test_bad_user_commands_are_refused_clearly(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = run(*args, db=tmp_path / "state.sqlite3")
    assert out.returncode == 2
    assert message in out.stderr


def test_a_second_person_of_the_same_name_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    collector_cli("user", "add", "ana", "--role", "viewer", db=str(db))
    out = run("user", "add", "ana", "--role", "admin", db=db)
    assert out.returncode == 2 and "already exists" in out.stderr


async def test_password_checks_run_at_most_two_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of sign-ins queues for the hasher rather than taking 64 MiB per attempt (the
    real check runs; it is only counted)."""
    stored = passwords.hash_password("the right password")
    running = 0
    peak = 0
    lock = threading.Lock()
    original = passwords.verify_password

    def counting(stored_hash: str | None, password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return original(stored_hash, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(passwords, "verify_password", counting)
    results = await asyncio.gather(
        *(passwords.verify_password_async(stored, "wrong guess") for _ in range(5))
    )
    assert results == [False] * 5
    assert peak == 2


def test_quickstart_adds_an_admin_person_to_sign_in_with(tmp_path: Path) -> None:
    db = tmp_path / "data" / "collector.sqlite3"
    port = str(free_port())
    for _run in range(2):  # the second run reuses the person the first one added
        proc = subprocess.Popen(
            [str(BIN / "rmm-collector"), "quickstart", "--db", str(db), "--port", port],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            banner = "".join(iter_until(proc.stdout, "Try it"))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        assert "sign in to the pages as:      admin, password " in banner
    (person,) = collector_cli("user", "list", db=str(db))["users"]  # type: ignore[misc]
    assert person["name"] == "admin" and person["role"] == "admin"


def iter_until(stream: Any, marker: str) -> Iterator[str]:
    for line in stream:
        yield line
        if marker in line:
            return
