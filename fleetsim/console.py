"""The `rmm-fleetsim` entry point: it drives the collector's own code, so without the collector
extra one line says which extra to install instead of a traceback."""

from __future__ import annotations

from wire.extras import run_console


def main() -> int:
    return run_console("rmm-fleetsim", "fleetsim.cli", ("collector", "postgres"))
