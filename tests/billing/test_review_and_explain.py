"""Big swings are held for review and issued on approval; `explain` tells why, machine by machine;
a run on a terminal shows progress and its phases' timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.billing.factories import (
    SELLER,
    client,
    machine,
    price_book_toml,
    run_cli,
    write_inventory,
)

FEB_1 = "2026-02-01T00:00:00Z"
MAR_1 = "2026-03-01T00:00:00Z"


@pytest.fixture
def books(tmp_path: Path) -> Path:
    (tmp_path / "prices.toml").write_text(price_book_toml(client("acme"), seller=SELLER))
    fleet = [machine(f"pc-{n}", last_seen="2026-01-30T10:00:00Z") for n in range(10)]
    write_inventory(tmp_path / "feb.json", FEB_1, fleet)
    return tmp_path


def bill(root: Path, month: str, *files: str, extra: tuple[str, ...] = ()) -> Any:
    args = ["run", "--month", month, "--prices", root / "prices.toml", "--out", root / month]
    args += ["--now", "2026-03-05T00:00:00Z"]
    for name in files:
        args += ["--inventory", root / name]
    return run_cli(*args, *extra, cwd=root)


def invoices(root: Path, month: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads((root / month / "invoices.json").read_text())[
        "invoices"
    ]
    return listed


def test_a_swing_past_the_bound_is_held_as_a_draft_and_issued_on_approval(books: Path) -> None:
    assert bill(books, "2026-02", "feb.json").returncode == 0
    write_inventory(books / "mar.json", MAR_1, [machine(f"pc-{n}") for n in range(4)])

    held = bill(books, "2026-03", "mar.json", "feb.json")

    assert held.returncode == 0, held.stderr
    assert invoices(books, "2026-03") == []
    reports = json.loads((books / "2026-03" / "reports.json").read_text())
    (draft,) = reports["held_for_review"]
    assert (draft["client_id"], draft["machines"], draft["previous_machines"]) == ("acme", 4, 10)
    assert "4 machines against 10 on the previous invoice NW-000001 (-6, -60%)" in draft["reason"]
    assert "rmm-billing approve --month 2026-03 --client acme" in held.stdout

    approved = run_cli("approve", "--month", "2026-03", "--client", "acme", cwd=books)
    assert approved.returncode == 0, approved.stderr
    assert "Issued NW-000002 to 'Acme' (acme) for 2026-03: 180.00 USD" in approved.stdout

    again = bill(books, "2026-03", "mar.json", "feb.json")
    assert again.returncode == 0, again.stderr
    assert [(i["number"], i["total"]) for i in invoices(books, "2026-03")] == [
        ("NW-000002", "180.00")
    ]
    assert "0 issued now, 1 already issued" in again.stdout


def test_a_swing_within_the_bound_is_issued_as_usual(books: Path) -> None:
    assert bill(books, "2026-02", "feb.json").returncode == 0
    write_inventory(books / "mar.json", MAR_1, [machine(f"pc-{n}") for n in range(14)])
    # +4 machines (40%) is fewer than 5 machines: issued.
    assert bill(books, "2026-03", "mar.json").returncode == 0
    assert [i["number"] for i in invoices(books, "2026-03")] == ["NW-000002"]


def test_the_review_bound_can_be_set(books: Path) -> None:
    assert bill(books, "2026-02", "feb.json").returncode == 0
    write_inventory(books / "mar.json", MAR_1, [machine(f"pc-{n}") for n in range(14)])
    run = bill(books, "2026-03", "mar.json", extra=("--review-machines", "3"))
    assert run.returncode == 0, run.stderr
    assert invoices(books, "2026-03") == []


def test_preview_shows_what_would_be_held(books: Path) -> None:
    assert bill(books, "2026-02", "feb.json").returncode == 0
    write_inventory(books / "now.json", "2026-02-20T00:00:00Z", [machine("pc-0")])
    args = ["preview", "--prices", books / "prices.toml", "--inventory", books / "now.json"]
    shown = run_cli(*args, "--month", "2026-03", "--now", "2026-02-20T01:00:00Z", cwd=books)
    assert shown.returncode == 0, shown.stderr
    assert "would be held for review: 1 machines against 10" in shown.stdout
    as_json = run_cli(
        *args, "--json", "--month", "2026-03", "--now", "2026-02-20T01:00Z", cwd=books
    )
    (entry,) = json.loads(as_json.stdout)["invoices"]
    assert entry["would_be_held"].startswith("1 machines against 10")


def test_approving_a_client_with_nothing_held_is_refused_naming_what_is(books: Path) -> None:
    assert bill(books, "2026-02", "feb.json").returncode == 0
    refused = run_cli("approve", "--month", "2026-03", "--client", "acme", cwd=books)
    assert refused.returncode == 1
    assert "no invoice of 2026-03 is held for client 'acme' (held: none)" in refused.stderr


def _explain(root: Path, *extra: str) -> Any:
    rows = [
        machine("billed-1", hostname="DESK", last_seen="2026-02-27T18:00:00Z"),
        machine("late", first_seen="2026-03-07T09:00:00Z", last_seen="2026-03-07T09:00:00Z"),
        machine("gone", offboarded_at="2026-02-10T12:00:00Z"),
        machine("moved", moved_at="2026-02-15T00:00:00Z", moved_to="bayside"),
        machine("dark", last_seen="2026-01-30T00:00:00Z"),
        machine("other", client_id="bayside"),
    ]
    write_inventory(root / "mar.json", MAR_1, rows)
    args = ["explain", "--month", "2026-03", "--prices", root / "prices.toml"]
    return run_cli(*args, "--inventory", root / "mar.json", "--client", "acme", *extra, cwd=root)


def test_explain_gives_each_machine_its_rule_and_sentence_as_json(books: Path) -> None:
    completed = _explain(books, "--json")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert (document["client_id"], document["month"], document["cutoff"]) == (
        "acme",
        "2026-03",
        MAR_1,
    )
    rules = {m["machine_id"]: (m["billed"], m["rule"]) for m in document["machines"]}
    assert rules == {
        "billed-1": (True, "billed"),
        "late": (False, "not_enrolled_yet"),
        "gone": (False, "offboarded"),
        "moved": (False, "moved"),
        "dark": (False, "expired"),
    }
    details = {m["machine_id"]: m["detail"] for m in document["machines"]}
    assert details["dark"] == (
        "last seen 2026-01-30 00:00 UTC, 30 days before the cutoff: dropped out of inventory"
    )
    assert details["late"].startswith("first seen 2026-03-07 09:00 UTC, at or after the cutoff")
    assert details["moved"].startswith("moved to bayside 2026-02-15 00:00 UTC")
    assert set(document["machines"][0]) >= {
        "machine_id",
        "hostname",
        "kind",
        "billed",
        "rule",
        "detail",
        "first_seen",
        "last_seen",
        "offboarded_at",
    }


def test_explain_one_machine_as_text(books: Path) -> None:
    completed = _explain(books, "--machine", "gone")
    assert completed.returncode == 0, completed.stderr
    assert "0 of 1 machines billed" in completed.stdout
    assert "offboarded 2026-02-10 12:00 UTC, 18 days before the cutoff" in completed.stdout


def test_explain_an_unknown_machine_or_client_is_refused_by_name(books: Path) -> None:
    unknown = _explain(books, "--machine", "nope")
    assert unknown.returncode == 1
    assert "machine 'nope' of client 'Acme' (acme) is not in" in unknown.stderr


def test_no_inventory_source_is_named_as_such_not_as_both(books: Path) -> None:
    args = ["run", "--month", "2026-02", "--prices", books / "prices.toml", "--out", books / "o"]
    completed = run_cli(*args, cwd=books)
    assert completed.returncode == 2
    assert "no inventory source: give --collector URL or --inventory FILE" in completed.stderr
    assert "not both" not in completed.stderr


def test_a_run_on_a_terminal_shows_progress_and_the_summary_has_phase_timings(
    books: Path,
) -> None:
    # stderr is a pseudo-terminal, as when the billing team runs it by hand.
    leader, follower = os.openpty()
    args = ["run", "--month", "2026-02", "--prices", books / "prices.toml"]
    args += ["--out", books / "o", "--inventory", books / "feb.json", "--now", "2026-03-01T00:00Z"]
    completed = subprocess.run(
        [sys.executable, "-m", "billing.cli", *map(str, args)],
        cwd=books,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(follower)
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    assert completed.returncode == 0
    assert f"rmm-billing: billing from {books / 'feb.json'} (1/1) ..." in shown
    assert "rmm-billing: issuing and writing invoices ..." in shown
    assert "Timings: read and bill " in completed.stdout and " s, write " in completed.stdout

    quiet = bill(books, "2026-02", "feb.json")
    assert quiet.stderr == ""  # not a terminal: no progress lines
