"""Text from elsewhere made safe for a terminal (host names, client names, collector reasons)."""

from __future__ import annotations

from wire.text import command_line, printable, printable_lines


def test_escape_sequences_and_other_controls_are_replaced() -> None:
    assert printable("pc-1\x1b]0;owned\x07\r\n") == "pc-1\ufffd]0;owned\ufffd\ufffd\ufffd"
    assert printable(None) == ""


def test_a_report_of_several_lines_keeps_its_line_breaks_only() -> None:
    report = "Acme:\n  will expire: evil\x1b[2J\x9b31m, FRONT-DESK\r\n"
    assert (
        printable_lines(report)
        == "Acme:\n  will expire: evil\ufffd[2J\ufffd31m, FRONT-DESK\ufffd\n"
    )


def test_a_steps_argv_reads_as_one_shell_quoted_printable_line() -> None:
    assert command_line(["apt-get", "-y", "purge", "clamav-daemon"]) == (
        "apt-get -y purge clamav-daemon"
    )
    assert command_line(["sh", "-c", "rm -rf /opt/av"]) == "sh -c 'rm -rf /opt/av'"
    assert "\x1b" not in command_line(["echo", "\x1b]0;owned\x07"])
