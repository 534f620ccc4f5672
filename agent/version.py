"""The agent's own version, as installed; reported as the `rmm` component and on enrollment."""

from __future__ import annotations

from functools import cache

DISTRIBUTION = "rmm-suite"


@cache
def agent_version() -> str:
    """The installed distribution's version, or `0+unknown` when run from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
