"""The `rmm-billing` entry point: without the billing extra installed, one line says which extra
to install instead of a traceback."""

from __future__ import annotations

from wire.extras import run_console


def main() -> int:
    return run_console("rmm-billing", "billing.cli", ("billing",))
