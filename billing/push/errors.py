"""What can go wrong in a push, without importing the HTTP client."""

from __future__ import annotations


class PushError(Exception):
    """A client's push failed; the message names the client and the PSA object."""


class Transient(Exception):
    """A 5xx, a timeout or a dropped connection: worth another try."""


class RateLimited(Transient):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """A 4xx other than 429: retrying cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
