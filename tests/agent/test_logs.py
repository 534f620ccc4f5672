"""Log lines: plain text on stderr, syslog priorities under journald, secrets masked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from agent.logs import secrets, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_under_journald_lines_carry_the_syslog_priority(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    logging.getLogger("agent.service").error("heartbeat refused")
    logging.getLogger("agent.service").info("component antivirus: running -> stopped")
    logging.getLogger("agent.service").debug("not shown at info")
    assert stream.getvalue().splitlines() == [
        "<3>agent.service: heartbeat refused",
        "<6>agent.service: component antivirus: running -> stopped",
    ]


def test_elsewhere_lines_start_with_a_utc_time(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    setup_logging("debug", stream=stream)
    logging.getLogger("agent").debug("cycle")
    line = stream.getvalue().strip()
    assert line.endswith(" DEBUG agent: cycle")
    assert line[:20].endswith("Z") and line[4] == "-" and line[10] == "T"


def test_known_secrets_never_reach_the_log(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    secrets.add("rmmag_very-secret-agent-token")
    logging.getLogger("aiohttp.client").info(
        "sent %s", {"Authorization": "Bearer rmmag_very-secret-agent-token"}
    )
    assert "rmmag_very-secret-agent-token" not in stream.getvalue()
    assert "Bearer ***" in stream.getvalue()
