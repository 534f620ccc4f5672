"""How to reach the collector, and what can go wrong, without importing the HTTP client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class CollectorError(Exception):
    """The collector could not give the inventory."""


class CollectorUnavailable(CollectorError):
    """Transport failure or a 5xx answer: worth retrying."""


class CollectorRefused(CollectorError):
    """A 4xx answer (bad token, missing role, future `as_of`): retrying will not help."""

    def __init__(self, message: str, *, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    url: str
    token: str
    ca_file: Path | None = None
    attempts: int = 4

    @property
    def base(self) -> str:
        return self.url.rstrip("/")

    @property
    def is_loopback_or_tls(self) -> bool:
        parts = urlsplit(self.url)
        return parts.scheme == "https" or parts.hostname in {"localhost", "127.0.0.1", "::1"}
