"""Values as the pages write them: the end of a step's output, and audit details in words."""

from __future__ import annotations

from collector.web.audit_rows import detail_text
from collector.web.step_rows import TAIL_CHARS, TAIL_LINES, step_row, tail_of


def test_a_short_output_is_shown_whole_without_a_note() -> None:
    output = "\n".join(f"line {n}" for n in range(TAIL_LINES)) + "\n"
    assert tail_of(output) == (output.rstrip("\n"), None)
    assert tail_of("") == ("", None)


def test_a_long_output_keeps_its_last_lines_and_says_so() -> None:
    text, note = tail_of("\n".join(f"line {n}" for n in range(1, 101)))
    assert text.splitlines() == [f"line {n}" for n in range(86, 101)]
    assert note == f"the last {TAIL_LINES} of 100 lines the agent sent"


def test_one_enormous_line_keeps_its_end() -> None:
    text, note = tail_of("x" * 5000 + "THE END")
    assert text.endswith("THE END") and len(text) == TAIL_CHARS + 1 and text.startswith("…")
    assert note == "the last 1 of 1 lines the agent sent"


def test_a_step_without_values_has_dashes() -> None:
    row = step_row({"component": "backup", "argv": [], "status": "skipped", "exit_code": None})
    assert (row.command, row.exit_code, row.duration, row.tail, row.failed) == (
        "(a check, no command run)",
        "—",
        "—",
        "",
        False,
    )


def test_audit_details_are_words() -> None:
    assert detail_text(None) is None
    assert detail_text(True) == "yes"
    assert detail_text([]) == "none"
    assert detail_text(["antivirus", None, "backup"]) == "antivirus; backup"
    assert detail_text({"reason": "busy", "ticket": None}) == "reason busy"
    step = {"component": "backup", "argv": ["/opt/u"], "status": "timeout", "exit_code": None}
    assert detail_text([step]) == "backup: /opt/u timeout"
