"""`rmm-billing` as the billing team runs it: a real child process, real files, a real ledger."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
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

CONSOLE_SCRIPT = Path(sys.executable).parent / "rmm-billing"


@dataclass
class Workspace:
    root: Path
    prices: Path
    march_utc: Path  # acme's cutoff
    march_new_york: Path  # bayside's cutoff
    february_utc: Path  # acme's previous cutoff

    @property
    def out(self) -> Path:
        return self.root / "out"

    def run(
        self,
        *extra: object,
        now: str = "2026-03-09T10:00:00Z",
        out: Path | None = None,
        files: tuple[Path, ...] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        inventories = (
            files if files is not None else (self.march_utc, self.march_new_york, self.february_utc)
        )
        args: list[object] = ["run", "--month", "2026-03", "--prices", self.prices]
        args += ["--out", out or self.out, "--now", now]
        for path in inventories:
            args += ["--inventory", path]
        return run_cli(*args, *extra, cwd=self.root)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        price_book_toml(
            client("acme", name="Acme Dental", currency="USD"),
            client(
                "bayside",
                name="Bayside <Law> & Co",
                currency="EUR",
                timezone="America/New_York",
                prices=[("2025-01-01", "39.90", "99.00")],
            )
            | {"tax_rate": "0.19", "tax_label": "VAT", "po_number": "PO-4411"},
            seller=SELLER,
        )
    )
    acme_march = [
        machine("a-desk", hostname="FRONT-DESK"),
        machine("a-srv", hostname="FILES", kind="server", last_seen="2026-02-20T08:00:00Z"),
        machine("a-new", first_seen="2026-03-07T09:00:00Z", last_seen="2026-03-07T09:00:00Z"),
        machine("a-gone", last_seen="2026-01-15T08:00:00Z"),
    ]
    acme_february = [
        machine("a-desk", hostname="FRONT-DESK", last_seen="2026-01-30T08:00:00Z"),
        machine("a-gone", last_seen="2026-01-15T08:00:00Z"),
    ]
    bayside_march = [machine(f"b-{n}", client_id="bayside") for n in range(3)]
    return Workspace(
        root=tmp_path,
        prices=prices,
        march_utc=write_inventory(tmp_path / "mar-utc.json", "2026-03-01T00:00:00Z", acme_march),
        march_new_york=write_inventory(
            tmp_path / "mar-ny.json", "2026-03-01T05:00:00Z", bayside_march
        ),
        february_utc=write_inventory(
            tmp_path / "feb-utc.json", "2026-02-01T00:00:00Z", acme_february
        ),
    )


def invoices(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "invoices.json").read_text())
    return document


def without_issue_date(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in i.items() if k != "issued_at"} for i in document["invoices"]]


@pytest.mark.parametrize("command", [[], ["run"], ["preview"]])
def test_every_command_has_help_through_the_console_script(command: list[str]) -> None:
    completed = subprocess.run(
        [str(CONSOLE_SCRIPT), *command, "--help"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage: rmm-billing" in completed.stdout


def test_run_writes_invoices_csv_html_and_reports(workspace: Workspace) -> None:
    completed = workspace.run()
    assert completed.returncode == 0, completed.stderr
    out = workspace.out

    document = invoices(out)
    assert document["month"] == "2026-03"
    acme, bayside = document["invoices"]
    assert {k: acme[k] for k in ("number", "client_id", "currency", "cutoff", "total")} == {
        "number": "NW-000001",
        "client_id": "acme",
        "currency": "USD",
        "cutoff": "2026-03-01T00:00:00Z",
        "total": "165.00",
    }
    assert (acme["issue_date"], acme["due_date"], acme["status"]) == (
        "2026-03-01",
        "2026-03-15",
        "issued",
    )
    assert acme["service_period"]["text"] == "1-31 March 2026"
    assert acme["seller"]["name"] == "Northwind IT Services"
    assert acme["lines"] == [
        {
            "kind": "pc",
            "description": "Managed PC, March 2026",
            "quantity": 1,
            "unit_price": "45.00",
            "amount": "45.00",
        },
        {
            "kind": "server",
            "description": "Managed server, March 2026",
            "quantity": 1,
            "unit_price": "120.00",
            "amount": "120.00",
        },
    ]
    assert [m["machine_id"] for m in acme["machines"]] == ["a-srv", "a-desk"]  # by hostname
    # 3 PCs at 39.90 = 119.70, VAT 19% = 22.743 -> 22.74, total 142.44; issued in New York.
    assert (bayside["cutoff"], bayside["subtotal"], bayside["tax"], bayside["total"]) == (
        "2026-03-01T05:00:00Z",
        "119.70",
        "22.74",
        "142.44",
    )
    assert (bayside["number"], bayside["issue_date"]) == ("NW-000002", "2026-03-01")
    assert bayside["buyer"]["po_number"] == "PO-4411"

    rows = list(csv.DictReader(io.StringIO((out / "invoices.csv").read_text())))
    assert rows[0] == {
        "document_type": "invoice",
        "invoice_number": "NW-000001",
        "status": "issued",
        "supersedes": "",
        "client_id": "acme",
        "client_name": "Acme Dental",
        "po_number": "",
        "month": "2026-03",
        "issue_date": "2026-03-01",
        "due_date": "2026-03-15",
        "service_period_start": "2026-03-01",
        "service_period_end": "2026-03-31",
        "kind": "pc",
        "description": "Managed PC, March 2026",
        "quantity": "1",
        "unit_price": "45.00",
        "amount": "45.00",
        "currency": "USD",
        "subtotal": "165.00",
        "tax_label": "Tax",
        "tax_rate": "0",
        "tax": "0.00",
        "total": "165.00",
    }
    assert len(rows) == 3

    html = (out / "invoice-NW-000002.html").read_text()
    assert "Bayside &lt;Law&gt; &amp; Co" in html
    assert all(f"b-{n}" in html for n in range(3))
    assert "142.44 EUR" in html and "VAT (19%)" in html

    evidence = list(csv.DictReader(io.StringIO((out / "evidence-acme.csv").read_text())))
    assert {row["machine_id"]: row["rule"] for row in evidence} == {
        "a-desk": "billed",
        "a-srv": "billed",
        "a-new": "not_enrolled_yet",
        "a-gone": "expired",
    }

    reports = json.loads((out / "reports.json").read_text())
    acme_report = next(r for r in reports["clients"] if r["client_id"] == "acme")
    assert acme_report["billed"] == {"pc": 1, "server": 1}
    assert [m["machine_id"] for m in acme_report["changes"]["added"]] == ["a-srv"]
    assert [m["machine_id"] for m in acme_report["offline_7_days"]] == ["a-srv"]
    assert [m["machine_id"] for m in reports["licence_exposure"]] == ["a-gone"]


def test_stdout_summarises_clients_machines_and_totals_per_currency(workspace: Workspace) -> None:
    summary = workspace.run().stdout
    assert "Billed 2026-03 for 2 clients: 5 machines (4 PCs, 1 server)." in summary
    assert "EUR" in summary and "142.44" in summary
    assert "USD" in summary and "165.00" in summary
    assert "2 issued now" in summary


def test_rerun_of_the_same_month_returns_the_same_invoices_and_numbers(
    workspace: Workspace,
) -> None:
    assert workspace.run(now="2026-03-02T08:00:00Z").returncode == 0
    first = (workspace.out / "invoices.json").read_bytes()

    again = workspace.run(now="2026-03-20T08:00:00Z")

    assert again.returncode == 0, again.stderr
    assert (workspace.out / "invoices.json").read_bytes() == first
    assert "0 issued now, 2 already issued" in again.stdout


def test_rerun_after_the_data_changed_keeps_the_issued_invoice_and_says_so(
    workspace: Workspace,
) -> None:
    assert workspace.run().returncode == 0
    first = invoices(workspace.out)
    workspace.prices.write_text(workspace.prices.read_text().replace('"45.00"', '"47.00"'))

    again = workspace.run()

    assert invoices(workspace.out) == first
    assert "NW-000001 was issued earlier and stands" in again.stdout


def test_a_run_on_the_9th_gives_the_same_invoices_as_a_run_on_the_1st(
    workspace: Workspace,
) -> None:
    on_the_1st = workspace.root / "on-1st"
    on_the_9th = workspace.root / "on-9th"
    assert workspace.run(now="2026-03-01T06:00:00Z", out=on_the_1st).returncode == 0
    assert workspace.run(now="2026-03-09T06:00:00Z", out=on_the_9th).returncode == 0

    assert without_issue_date(invoices(on_the_1st)) == without_issue_date(invoices(on_the_9th))
    assert (on_the_1st / "reports.json").read_text() == (on_the_9th / "reports.json").read_text()


def test_supersede_issues_a_new_version_with_a_credit_note_and_keeps_the_old_one(
    workspace: Workspace,
) -> None:
    assert workspace.run().returncode == 0
    workspace.prices.write_text(workspace.prices.read_text().replace('"45.00"', '"47.00"'))

    replaced = workspace.run("--supersede-client", "acme")

    assert replaced.returncode == 0, replaced.stderr
    document = invoices(workspace.out)
    listed = [(i["number"], i["client_id"], i["status"]) for i in document["invoices"]]
    assert listed == [
        ("NW-000001", "acme", "superseded"),
        ("NW-000004", "acme", "issued"),
        ("NW-000002", "bayside", "issued"),
    ]
    new = document["invoices"][1]
    assert (new["supersedes"], new["total"], new["version"]) == ("NW-000001", "167.00", 2)
    (note,) = document["credit_notes"]
    assert (note["number"], note["credits"], note["replaced_by"], note["total"]) == (
        "NW-000003",
        "NW-000001",
        "NW-000004",
        "-165.00",
    )
    assert "Superseded" in (workspace.out / "invoice-NW-000001.html").read_text()
    assert "Credit note" in (workspace.out / "invoice-NW-000003.html").read_text()
    rows = list(csv.DictReader(io.StringIO((workspace.out / "invoices.csv").read_text())))
    credit_rows = [r for r in rows if r["document_type"] == "credit_note"]
    assert {r["supersedes"] for r in credit_rows} == {"NW-000001"}
    assert [r["amount"] for r in credit_rows] == ["-45.00", "-120.00"]
    with sqlite3.connect(workspace.root / "data" / "billing-ledger.sqlite3") as db:
        kept = db.execute("SELECT number, superseded_by, total FROM invoice ORDER BY number")
        assert kept.fetchall() == [
            ("NW-000001", "NW-000004", "165.00"),
            ("NW-000002", None, "142.44"),
            ("NW-000004", None, "167.00"),
        ]

    everything = workspace.run("--supersede")
    current = [i["number"] for i in invoices(workspace.out)["invoices"] if i["status"] == "issued"]
    assert current == ["NW-000006", "NW-000008"], everything.stderr


def test_the_ledger_is_one_per_installation_so_numbering_runs_on_across_out_folders(
    workspace: Workspace,
) -> None:
    assert workspace.run(out=workspace.root / "invoices" / "2026-03").returncode == 0
    again = workspace.run(out=workspace.root / "elsewhere")
    assert "0 issued now, 2 already issued" in again.stdout
    assert (workspace.root / "data" / "billing-ledger.sqlite3").exists()
    assert not (workspace.root / "elsewhere" / "ledger.sqlite3").exists()


def test_ledger_path_can_be_set(workspace: Workspace) -> None:
    ledger = workspace.root / "books" / "billing.sqlite3"
    assert workspace.run("--ledger", ledger).returncode == 0
    assert ledger.exists()
    assert not (workspace.root / "data" / "billing-ledger.sqlite3").exists()


def test_without_the_previous_inventory_the_run_succeeds_and_the_change_report_says_so(
    workspace: Workspace,
) -> None:
    completed = workspace.run(files=(workspace.march_utc, workspace.march_new_york))

    assert completed.returncode == 0, completed.stderr
    reports = json.loads((workspace.out / "reports.json").read_text())
    for report in reports["clients"]:
        assert report["changes"]["previous_inventory"] is False
        assert "no inventory as of the previous cutoff" in report["changes"]["detail"]
        assert "added" not in report["changes"]


def _refusal_cases(ws: Workspace) -> dict[str, tuple[list[object], str]]:
    stranger = write_inventory(
        ws.root / "stranger.json",
        "2026-03-01T00:00:00Z",
        [machine("a-desk"), machine("s-1", client_id="stranger")],
    )
    mid_month = write_inventory(ws.root / "mid.json", "2026-03-09T00:00:00Z", [machine()])
    malformed = ws.root / "malformed.json"
    malformed.write_text(ws.march_utc.read_text().replace('"kind":"pc"', '"kind":"tablet"', 1))
    bad_prices = ws.root / "bad-prices.toml"
    bad_prices.write_text(ws.prices.read_text().replace('"USD"', '"US$"'))
    month = ["run", "--month", "2026-03", "--now", "2026-03-09T10:00:00Z", "--out", ws.out]
    prices = ["--prices", ws.prices]
    utc, new_york = ["--inventory", ws.march_utc], ["--inventory", ws.march_new_york]
    before_new_york_cutoff = ["run", "--month", "2026-03", "--now", "2026-03-01T03:00:00Z"]
    return {
        "client with no price": (
            [*month, *prices, "--inventory", stranger, *new_york],
            "client 'stranger' is not in the price book, yet 1 of its machines are in inventory",
        ),
        "inventory as of neither cutoff": (
            [*month, *prices, *utc, *new_york, "--inventory", mid_month],
            "as of 2026-03-09T00:00:00Z is neither a client's cutoff nor its previous cutoff",
        ),
        "cutoff still ahead in new york": (
            [*before_new_york_cutoff, "--out", ws.out, *prices, *utc, *new_york],
            "2026-03 cannot be billed yet: its cutoff for client 'bayside' is 2026-03-01T05:00:00Z",
        ),
        "month far ahead by the real clock": (
            ["run", "--month", "2999-01", "--out", ws.out, *prices, *utc, *new_york],
            "2999-01 cannot be billed yet",
        ),
        "malformed inventory": (
            [*month, *prices, "--inventory", malformed, *new_york],
            "malformed.json: malformed row",
        ),
        "unreadable inventory": (
            [*month, *prices, "--inventory", ws.root / "absent.json"],
            "absent.json: cannot be read",
        ),
        "client without its cutoff inventory": (
            [*month, *prices, *utc],
            "(bayside): no inventory as of its cutoff 2026-03-01T05:00:00Z",
        ),
        "bad price book": (
            [*month, "--prices", bad_prices, *utc, *new_york],
            "client 'Acme Dental' (acme): currency: 'US$' is not an ISO 4217",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "client with no price",
        "inventory as of neither cutoff",
        "cutoff still ahead in new york",
        "month far ahead by the real clock",
        "malformed inventory",
        "unreadable inventory",
        "client without its cutoff inventory",
        "bad price book",
    ],
)
def test_a_refused_run_says_why_and_writes_nothing(workspace: Workspace, case: str) -> None:
    args, message = _refusal_cases(workspace)[case]

    completed = run_cli(*args, cwd=workspace.root)

    assert completed.returncode == 1
    assert message in completed.stderr
    assert not workspace.out.exists()
    assert completed.stdout == ""


def test_a_refused_rerun_leaves_earlier_outputs_and_ledger_untouched(
    workspace: Workspace,
) -> None:
    assert workspace.run().returncode == 0
    before = {p.name: p.read_bytes() for p in workspace.out.iterdir()}
    workspace.prices.write_text(workspace.prices.read_text().replace('"39.90"', '"lots"'))

    refused = workspace.run("--supersede")

    assert refused.returncode == 1
    assert {p.name: p.read_bytes() for p in workspace.out.iterdir()} == before


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--month", "2026-03", "--prices", "p.toml", "--out", "o"],
        [
            "run",
            "--month",
            "2026-03",
            "--prices",
            "p.toml",
            "--out",
            "o",
            "--inventory",
            "i",
            "--collector",
            "http://127.0.0.1:1",
            "--token",
            "t",
        ],
        ["run", "--month", "March", "--prices", "p.toml", "--out", "o", "--inventory", "i"],
        ["preview", "--prices", "p.toml"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    completed = run_cli(*args, cwd=tmp_path)
    assert completed.returncode == 2
    assert "usage:" in completed.stderr
    assert list(tmp_path.iterdir()) == []


def test_preview_shows_next_months_invoices_if_nothing_changes(workspace: Workspace) -> None:
    now = write_inventory(
        workspace.root / "now.json",
        "2026-03-20T12:00:00Z",
        [
            machine("a-desk", last_seen="2026-03-20T11:00:00Z"),
            machine("a-new", first_seen="2026-03-07T09:00:00Z", last_seen="2026-03-20T11:00:00Z"),
            machine("a-dark", kind="server", last_seen="2026-02-25T08:00:00Z"),
            machine("b-1", client_id="bayside", last_seen="2026-03-20T11:00:00Z"),
        ],
    )
    args = ["preview", "--prices", workspace.prices, "--inventory", now]
    args += ["--now", "2026-03-20T12:00:00Z"]

    text = run_cli(*args, cwd=workspace.root)
    as_json = run_cli(*args, "--json", cwd=workspace.root)

    assert text.returncode == 0, text.stderr
    assert "Preview of 2026-04" in text.stdout
    assert "2 PCs x 45.00 + 1 server x 120.00 = 210.00 USD" in text.stdout
    assert "will expire before the cutoff" in text.stdout
    preview = json.loads(as_json.stdout)
    acme = next(i for i in preview["invoices"] if i["client_id"] == "acme")
    assert (preview["month"], acme["total"], acme["machines"]) == ("2026-04", "210.00", 3)
    assert [m["machine_id"] for m in acme["expiring_before_cutoff"]] == ["a-dark"]
    assert preview["totals"] == {"EUR": "39.90", "USD": "210.00"}
    assert not workspace.out.exists()


def test_two_runs_started_at_once_for_the_same_month_issue_once_and_agree(
    workspace: Workspace,
) -> None:
    # Two real processes on one ledger: BEGIN IMMEDIATE lets one issue; the other waits, then
    # finds those invoices and returns them.
    args: list[str] = ["-m", "billing.cli", "run", "--month", "2026-03"]
    args += ["--prices", str(workspace.prices), "--now", "2026-03-09T10:00:00Z"]
    for path in (workspace.march_utc, workspace.march_new_york, workspace.february_utc):
        args += ["--inventory", str(path)]
    outs = [workspace.root / "first", workspace.root / "second"]
    runs = [
        subprocess.Popen(
            [sys.executable, *args, "--out", str(out)],
            cwd=workspace.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    results = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    first, second = (invoices(out) for out in outs)
    assert first == second
    assert [i["number"] for i in first["invoices"]] == ["NW-000001", "NW-000002"]
    summaries = sorted(stdout for stdout, _ in results)
    assert "0 issued now, 2 already issued" in summaries[0] + summaries[1]
    assert "2 issued now, 0 already issued" in summaries[0] + summaries[1]
    with sqlite3.connect(workspace.root / "data" / "billing-ledger.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM invoice").fetchone() == (2,)
        assert db.execute("SELECT last_sequence FROM series").fetchone() == (2,)


def test_a_client_with_nothing_billable_gets_no_invoice_and_is_listed_not_invoiced(
    workspace: Workspace,
) -> None:
    quiet = [machine("b-gone", client_id="bayside", offboarded_at="2026-02-10T00:00:00Z")]
    write_inventory(workspace.march_new_york, "2026-03-01T05:00:00Z", quiet)

    completed = workspace.run()

    assert completed.returncode == 0, completed.stderr
    assert [i["client_id"] for i in invoices(workspace.out)["invoices"]] == ["acme"]
    reports = json.loads((workspace.out / "reports.json").read_text())
    assert [(n["client_id"], n["client_name"]) for n in reports["not_invoiced"]] == [
        ("bayside", "Bayside <Law> & Co")
    ]
    assert "1 not invoiced" in completed.stdout
    evidence = (workspace.out / "evidence-bayside.csv").read_text()
    assert "b-gone" in evidence and "offboarded" in evidence


def test_a_rerun_after_a_client_left_the_price_book_still_lists_its_issued_invoice(
    workspace: Workspace,
) -> None:
    assert workspace.run().returncode == 0
    workspace.prices.write_text(
        price_book_toml(client("acme", name="Acme Dental", currency="USD"), seller=SELLER)
    )
    write_inventory(workspace.march_new_york, "2026-03-01T05:00:00Z", [])

    again = workspace.run(files=(workspace.march_utc, workspace.february_utc))

    assert again.returncode == 0, again.stderr
    listed = [(i["number"], i["client_id"]) for i in invoices(workspace.out)["invoices"]]
    assert listed == [("NW-000001", "acme"), ("NW-000002", "bayside")]
    rows = list(csv.DictReader(io.StringIO((workspace.out / "invoices.csv").read_text())))
    assert {r["invoice_number"] for r in rows} == {"NW-000001", "NW-000002"}
    assert (workspace.out / "invoice-NW-000002.html").exists()


def test_documents_an_earlier_run_wrote_but_this_one_does_not_are_removed(
    workspace: Workspace,
) -> None:
    workspace.out.mkdir()
    stale = workspace.out / "invoice-202603-acme-1.html"
    stale.write_text("an old numbering's invoice")
    keep = workspace.out / "notes.txt"
    keep.write_text("the bookkeeper's own file")

    assert workspace.run().returncode == 0

    assert not stale.exists()
    assert keep.exists()
