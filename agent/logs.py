"""Plain log lines on stderr, friendly to journald and the Windows event log, with secrets masked.

Under systemd (`JOURNAL_STREAM` is set) each line starts with a `<N>` syslog priority, which
journald turns into the entry's priority, and carries no timestamp of its own. Elsewhere lines carry
a UTC time. Known secrets (tokens) are masked in every record as a last line of defence; nothing
logs them on purpose.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TextIO

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class SecretFilter(logging.Filter):
    """Replaces every registered secret in a record's final message with `***`."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 8:
            with self._lock:
                self._secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg = masked
            record.args = None
        return True


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


secrets = SecretFilter()


def setup_logging(level: str, *, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(secrets)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter stays out unless debugging.
    if level.lower() != "debug":
        logging.getLogger("asyncio").setLevel(logging.WARNING)
