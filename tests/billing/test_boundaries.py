"""Billing may run on another host: it reads the collector over HTTP only, never its code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import billing

PACKAGE = Path(billing.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_billing_never_imports_collector_or_agent_code() -> None:
    for source in PACKAGE.glob("*.py"):
        roots = {name.split(".")[0] for name in imported_modules(source)}
        assert not roots & {"collector", "agent"}, source.name


def test_the_http_client_is_loaded_only_when_a_collector_is_asked() -> None:
    check = "import sys, billing.cli; print('aiohttp' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "False"
