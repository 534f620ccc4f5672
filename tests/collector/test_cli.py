"""`rmm-collector` through real subprocesses, on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import BIN, collector_cli


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rmm-collector"), *args, "--db", str(db)], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["quickstart"],
        ["client"],
        ["client", "add"],
        ["client", "list"],
        ["client", "new-token"],
        ["client", "revoke-token"],
        ["token", "add"],
        ["token", "list"],
        ["token", "revoke"],
        ["keys"],
        ["user"],
        ["user", "add"],
        ["user", "list"],
        ["user", "disable"],
        ["user", "reset-mfa"],
        ["remote"],
    ],
)
def test_every_subcommand_has_help(command: list[str]) -> None:
    out = subprocess.run(
        [str(BIN / "rmm-collector"), *command, "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "usage: rmm-collector" in out.stdout


def test_serve_help_names_every_setting_with_its_variable() -> None:
    out = subprocess.run(
        [str(BIN / "rmm-collector"), "serve", "--help"], capture_output=True, text=True
    ).stdout
    for variable in (
        "RMM_COLLECTOR_DB",
        "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S",
        "RMM_COLLECTOR_FLUSH_INTERVAL_S",
        "RMM_COLLECTOR_TLS_CERT",
    ):
        assert variable in out


def test_client_add_prints_client_id_and_enrollment_token_and_creates_the_state(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fresh" / "state.sqlite3"
    created = collector_cli("client", "add", "Acme Dental", db=str(db))
    assert set(created) >= {"client_id", "enrollment_token"}
    assert str(created["enrollment_token"]).startswith("rmmen_")
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    listed = collector_cli("client", "list", db=str(db))
    (client,) = listed["clients"]  # type: ignore[misc]
    assert client["name"] == "Acme Dental"
    assert len(client["enrollment_tokens"]) == 1
    assert str(created["enrollment_token"]) not in db.read_bytes().decode("latin-1")


def test_enrollment_tokens_can_be_reissued_and_revoked(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    collector_cli("client", "add", "Acme", db=db)
    again = collector_cli("client", "new-token", "Acme", db=db)
    assert again["enrollment_token"]
    assert collector_cli("client", "revoke-token", "Acme", db=db) == {"revoked": 2}
    tokens = collector_cli("client", "list", db=db)["clients"][0]["enrollment_tokens"]  # type: ignore[index]
    assert all(t["revoked"] for t in tokens)


def test_duplicate_client_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    collector_cli("client", "add", "Acme", db=str(db))
    out = run("client", "add", "Acme", db=db)
    assert out.returncode == 2
    assert "already exists" in out.stderr


def test_unknown_client_is_refused(tmp_path: Path) -> None:
    out = run("client", "new-token", "Nobody", db=tmp_path / "s.sqlite3")
    assert out.returncode == 2
    assert "no client named" in out.stderr


def test_api_tokens_are_added_listed_and_revoked(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    created = collector_cli("token", "add", "alice", "--role", "technician", db=db)
    assert str(created["token"]).startswith("rmmapi_")
    listed = collector_cli("token", "list", db=db)["tokens"]
    assert listed == [
        {
            "name": "alice",
            "role": "technician",
            "created_at": listed[0]["created_at"],
            "revoked_at": None,
            "clients": None,
        }
    ]  # type: ignore[index]
    assert run("token", "revoke", "alice", db=Path(db)).returncode == 0
    assert run("token", "revoke", "alice", db=Path(db)).returncode == 2


def test_a_role_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    out = run("token", "add", "mallory", "--role", "root", db=tmp_path / "s.sqlite3")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_signing_keys_are_generated_shown_and_retired_as_files_only_the_owner_reads(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.sqlite3"
    first = run("keys", "generate", db=db)
    second = run("keys", "generate", db=db)
    assert first.returncode == second.returncode == 0
    shown = run("keys", "show", db=db).stdout.split()
    assert shown == [first.stdout.strip(), second.stdout.strip()]
    key_id, _, public = shown[0].partition(":")
    assert key_id.startswith("ed25519-") and len(public) == 44
    folder = tmp_path / "keys"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for pem in folder.glob("*.pem"):
        assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
        assert public not in pem.read_text()
    assert run("keys", "retire", key_id, db=db).returncode == 0
    assert run("keys", "show", db=db).stdout.split() == [shown[1]]
    # Only the public half of a retired key is kept: it can sign nothing more.
    (kept,) = (folder / "retired").iterdir()
    assert kept.suffix == ".pub" and kept.read_text().strip() == shown[0]
    assert run("keys", "retire", key_id, db=db).returncode == 2
    with sqlite3.connect(db) as conn:
        audited = conn.execute(
            "SELECT action, target FROM audit WHERE action LIKE 'key.%' ORDER BY id"
        ).fetchall()
    assert audited == [
        ("key.generated", key_id),
        ("key.generated", shown[1].partition(":")[0]),
        ("key.retired", key_id),
    ]


def test_a_retired_private_key_left_by_an_earlier_version_loses_its_private_half(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.sqlite3"
    run("keys", "generate", db=db)
    line = run("keys", "show", db=db).stdout.strip()
    (pem,) = (tmp_path / "keys").glob("*.pem")
    (tmp_path / "keys" / "retired").mkdir(mode=0o700)
    pem.rename(tmp_path / "keys" / "retired" / pem.name)
    assert run("keys", "show", db=db).stdout.strip() == ""
    (kept,) = (tmp_path / "keys" / "retired").iterdir()
    assert kept.suffix == ".pub" and kept.read_text().strip() == line


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    run("keys", "generate", db=db)
    (pem,) = (tmp_path / "keys").glob("*.pem")
    pem.chmod(0o644)
    out = run("keys", "show", db=db)
    assert out.returncode == 2
    assert "chmod 600" in out.stderr


def test_bad_settings_in_the_environment_are_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "rmm-collector"), "client", "list", "--db", str(tmp_path / "s.sqlite3")],
        capture_output=True,
        text=True,
        env={**os.environ, "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S": "often"},
    )
    assert out.returncode == 2
    assert "RMM_COLLECTOR_HEARTBEAT_INTERVAL_S" in out.stderr
