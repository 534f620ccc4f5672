"""A plain install is the agent alone: the other programs, started without their extra, say in
one line which extra to install, and the agent runs without any extra at all.

Each program runs in a fresh interpreter whose imports of the extras' modules fail as they do
where those distributions are not installed.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from wire.extras import EXTRA_MODULES, install_hint

ROOT = Path(__file__).resolve().parent.parent

EVERY_EXTRA = sorted(set().union(*EXTRA_MODULES.values()))

_BLOCKER = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""

_RUN_MAIN = """
import importlib

module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
sys.exit(importlib.import_module(module).main())
"""


def run_without(
    blocked: list[str], entry: str, *argv: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script `entry` (a `pyproject.toml` `[project.scripts]` target) with the
    top-level modules `blocked` not installed."""
    module = entry.partition(":")[0]
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER + _RUN_MAIN, ",".join(blocked), module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or ROOT,
    )


def scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


def _dist(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert name is not None
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


@pytest.mark.parametrize(
    ("script", "extra"),
    [("rmm-collector", "collector"), ("rmm-fleetsim", "collector")],
)
def test_a_program_without_its_extra_names_the_extra_in_one_line(script: str, extra: str) -> None:
    done = run_without(EVERY_EXTRA, scripts()[script], "--help")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [install_hint(script, extra)]
    assert f"pip install 'rmm-suite[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_billing_without_its_extra_says_so_when_it_asks_the_collector(tmp_path: Path) -> None:
    """Billing from saved inventories needs nothing more; asking a collector needs HTTP."""
    (tmp_path / "prices.toml").write_text(
        '[[client]]\nid = "c1"\nname = "Acme"\ncurrency = "USD"\n'
        '[[client.price]]\nfrom = "2026-01-01"\npc = "45.00"\nserver = "120.00"\n'
    )
    argv = ["run", "--month", "2026-11", "--prices", "prices.toml", "--out", "out"]
    argv += ["--collector", "http://127.0.0.1:9", "--token", "t", "--ledger", "ledger.sqlite3"]
    done = run_without(EVERY_EXTRA, scripts()["rmm-billing"], *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [install_hint("rmm-billing", "billing")]
    assert "Traceback" not in done.stderr
    assert run_without(EVERY_EXTRA, scripts()["rmm-billing"], "--help").returncode == 0


def test_the_collector_without_the_postgres_extra_says_so_when_given_postgresql(
    tmp_path: Path,
) -> None:
    """The driver is imported only for a PostgreSQL database, long after start-up."""
    done = run_without(
        ["asyncpg"],
        scripts()["rmm-collector"],
        "keys",
        "show",
        "--db",
        "postgresql://rmm@127.0.0.1:9/rmm",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [install_hint("rmm-collector", "postgres")]


def test_the_agent_needs_no_extra() -> None:
    done = run_without(EVERY_EXTRA, scripts()["rmm-agent"], "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: rmm-agent")


def test_every_agent_module_imports_without_any_extra() -> None:
    """Not only `--help`: the service, its HTTP client and every other agent and wire module
    load on a plain install."""
    modules = sorted(
        f"{p.parent.name}.{p.stem}"
        for package in ("agent", "wire")
        for p in (ROOT / package).glob("*.py")
        if p.stem != "__main__"
    )
    code = f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKER + code, ",".join(EVERY_EXTRA)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_the_extras_modules_are_those_of_the_extras_in_pyproject() -> None:
    """`wire.extras` knows which modules each extra brings; it must agree with pyproject.toml."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    provided = importlib.metadata.packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        dists = {_dist(r) for r in extras[extra]}
        from_pyproject = {
            module
            for module, owners in provided.items()
            if not module.startswith("_") and dists & {_dist(o) for o in owners}
        }
        assert from_pyproject == modules, extra


def test_a_plain_install_holds_only_what_the_agent_imports() -> None:
    """Each base dependency is imported by the agent or the wire format; the rest are extras."""
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    provided = importlib.metadata.packages_distributions()
    sources = "\n".join(
        p.read_text() for package in ("agent", "wire") for p in (ROOT / package).rglob("*.py")
    )
    for requirement in base:
        dist = _dist(requirement)
        modules = {m for m, owners in provided.items() if dist in {_dist(o) for o in owners}}
        assert modules, dist
        imported = [
            m for m in modules if re.search(rf"^\s*(import|from) {m}\b", sources, re.MULTILINE)
        ]
        assert imported, f"{dist} is a base dependency the agent never imports"
