"""The `rmm-collector` entry point: without the collector extra installed (an agent-only
install), one line says which extra to install instead of a traceback."""

from __future__ import annotations

from wire.extras import run_console


def main() -> int:
    return run_console("rmm-collector", "collector.cli", ("collector", "postgres"))
