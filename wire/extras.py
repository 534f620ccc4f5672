"""Console scripts on an install that lacks their extra: one line naming it, not a traceback.

A plain install is the endpoint agent alone (`pyproject.toml`); `rmm-collector`, `rmm-billing`
and `rmm-fleetsim` need extras. Each script's entry point imports its program through
`run_console`, which turns a missing module of one of the program's extras, at start-up or later
(the PostgreSQL driver is imported only for a `postgresql://` database), into that line and exit
status 2. Every part of the product imports `wire`, so this lives here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

PROJECT = "rmm-suite"

EXTRA_MODULES: dict[str, frozenset[str]] = {
    "collector": frozenset(
        {"aiohttp", "prometheus_client", "jinja2", "tzdata", "uvloop", "argon2", "segno", "joserfc"}
    ),
    "postgres": frozenset({"asyncpg"}),
    "billing": frozenset({"aiohttp", "tzdata"}),
}
"""The top-level modules of each extra's distributions in `pyproject.toml` (a test keeps the two
in step)."""

EXIT_MISSING_EXTRA = 2


def missing_extra(error: ModuleNotFoundError, extras: Sequence[str]) -> str | None:
    """The first of `extras` that provides the module `error` could not import, if any does."""
    root = (error.name or "").partition(".")[0]
    return next((extra for extra in extras if root in EXTRA_MODULES[extra]), None)


def install_hint(prog: str, extra: str) -> str:
    return f"{prog} needs the \"{extra}\" extra: pip install '{PROJECT}[{extra}]'"


def run_console(prog: str, module: str, extras: Sequence[str]) -> int:
    """Run `module.main()` (which reads `sys.argv`); a module of `extras` that is not installed
    is one line on stderr and exit status 2. Any other missing module is a bug: it propagates."""
    try:
        status: int = importlib.import_module(module).main()
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc, extras)
        if extra is None:
            raise
        print(install_hint(prog, extra), file=sys.stderr)
        return EXIT_MISSING_EXTRA
    return status
