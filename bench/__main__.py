"""`make bench`: the whole system against the physical ceiling of this machine.

Runs, in order: heartbeats per second against a bare aiohttp handler's ceiling (SQLite one
process, PostgreSQL one and two, keep-alive and a new connection per heartbeat) with a fleet
simulator run and its loss check; `GET /v1/inventory` over 1,000,000 machines; and, where their
modules are present, billing over 1,000,000 machines and the agent's footprint. Prints a table
and writes `bench/results.json`. Everything runs on loopback, each load for a bounded time.

`python -m bench [--only heartbeats|network|inventory|billing|push|agent ...]
[--no-sqlite-inventory]`

`network`: heartbeats with a network section on 1 in 15 against heartbeats without (coverage).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
SECTIONS = ("heartbeats", "network", "inventory", "billing", "push", "agent")
RATIO_TARGET = 0.60
P99_TARGET_MS = 25.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _optional(module: str) -> Callable[[], dict[str, Any]] | None:
    """`main` of a benchmark module someone else keeps, if its file is there."""
    if not (HERE / f"{module}.py").exists():
        return None
    return importlib.import_module(f"bench.{module}").main  # type: ignore[no-any-return]


def _ratio(value: float, ceiling: float) -> str:
    return f"{value / ceiling:.2f}" if ceiling else "-"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [
        ("scenario", "result", "p50 ms", "p99 ms", "vs ceiling", "target")
    ]
    hb = results.get("heartbeats")
    if isinstance(hb, dict):
        for key in (
            "bare_1",
            "sqlite_1",
            "postgres_1",
            "bare_2",
            "postgres_2",
        ):
            if isinstance(hb.get(key), dict) and "error" in hb[key]:
                rows.append((f"heartbeats {key}: FAILED", hb[key]["error"][:70], "", "", "", ""))

        def ok(key: str) -> bool:
            return isinstance(hb.get(key), dict) and "keep_alive" in hb[key]

        for mode, label in (("keep_alive", "keep-alive"), ("new_connection", "new connection")):
            ceilings = {
                1: hb["bare_1"][mode]["per_second"] if ok("bare_1") else 0,
                2: hb["bare_2"][mode]["per_second"] if ok("bare_2") else 0,
            }
            for key, name, processes, target in (
                ("bare_1", "ceiling: bare handler", 1, False),
                ("sqlite_1", "collector, SQLite", 1, True),
                ("postgres_1", "collector, PostgreSQL", 1, False),
                ("bare_2", "ceiling: bare handler", 2, False),
                ("postgres_2", "collector, PostgreSQL", 2, True),
            ):
                if not ok(key) or mode not in hb[key]:
                    continue
                run = hb[key][mode]
                rows.append(
                    (
                        f"{name}, {processes} proc, {label}",
                        f"{run['per_second']:,} req/s",
                        f"{run['p50_ms']}",
                        f"{run['p99_ms']}",
                        _ratio(run["per_second"], ceilings[processes]),
                        f">= {RATIO_TARGET:.2f}, p99 <= {P99_TARGET_MS:g}"
                        if target and mode == "keep_alive"
                        else "",
                    )
                )
        sim = hb["postgres_2"].get("fleetsim") if ok("postgres_2") else None
        if sim:
            rows.append(
                (
                    f"fleetsim: {sim['agents']:,} agents via 2 PostgreSQL procs",
                    f"{sim['rate_achieved']:,} hb/s, lost {sim['lost']} of "
                    f"{sim['agents_checked']:,}",
                    f"{sim['p50_ms']}",
                    f"{sim['p99_ms']}",
                    "",
                    "lost 0",
                )
            )
    net = results.get("network")
    if isinstance(net, dict):
        for engine, label in (("sqlite_1", "SQLite"), ("postgres_1", "PostgreSQL")):
            run = net.get(engine)
            if not isinstance(run, dict) or "hourly_cpu_ratio" not in run:
                continue
            for phase, what in (("first", "each the first this hour"), ("repeat", "repeated")):
                part = run[phase]
                rows.append(
                    (
                        f"network 1 in {net['every']}, {what}, {label}, 1 proc",
                        f"{part['network_per_second']:,} vs {part['plain_per_second']:,} "
                        f"req/s, CPU {part['network_cpu_us']} vs {part['plain_cpu_us']} us/req",
                        "",
                        f"{part['network_p99_ms']}",
                        f"{part['ratio']:.3f} (CPU {part['cpu_ratio']:.3f})",
                        "",
                    )
                )
            rows.append(
                (
                    f"network 1 in {net['every']}, an hour's mix (1 written, 3 repeated), {label}",
                    f"CPU {run['hourly_network_cpu_us']} vs {run['plain_cpu_us']} us/req",
                    "",
                    "",
                    f"CPU {run['hourly_cpu_ratio']:.3f}",
                    f">= {run['target_ratio']:.2f} of without",
                )
            )
    inventory = results.get("inventory")
    if isinstance(inventory, dict):
        for engine in ("postgres", "sqlite"):
            run = inventory.get(engine)
            if not isinstance(run, dict) or "as_of_cutoff" not in run:
                continue
            for key, label in (("as_of_cutoff", "as of a past cutoff"), ("as_of_now", "as of now")):
                rows.append(
                    (
                        f"inventory 1M, {engine}, {label}",
                        f"{run[key]['seconds']} s, {run[key]['mib']} MiB, "
                        f"peak RSS {run['collector_peak_rss_mib']} MiB",
                        "",
                        "",
                        "",
                        f"<= {run['target_seconds']:g} s",
                    )
                )
    billing = results.get("billing")
    if isinstance(billing, dict) and "seconds" in billing:
        rows.append(
            (
                f"billing {billing.get('machines', 0):,} machines",
                f"{billing['seconds']} s, peak RSS {billing.get('peak_rss_mib')} MiB",
                "",
                "",
                "",
                f"<= {billing.get('target_seconds')} s, <= {billing.get('target_rss_mib')} MiB",
            )
        )
    pushed = results.get("push")
    if isinstance(pushed, dict) and "seconds" in pushed:
        rows.append(
            (
                f"push {pushed.get('clients', 0):,} clients to a webhook",
                f"{pushed['seconds']} s, {pushed.get('in_flight')} in flight",
                "",
                "",
                "",
                f"< {pushed.get('target_seconds')} s",
            )
        )
    agent = results.get("agent")
    if isinstance(agent, dict) and "rss_after_start_mib" in agent:
        rows.append(
            (
                "agent footprint",
                f"RSS {agent['rss_after_start_mib']} MiB, "
                f"{agent.get('cycle_cpu_ms_outside_median')} ms CPU/cycle",
                "",
                "",
                "",
                "",
            )
        )
    for name in SECTIONS:
        section = results.get(name)
        if isinstance(section, dict) and "error" in section:
            rows.append((f"{name}: FAILED", section["error"][:60], "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these")
    parser.add_argument(
        "--no-sqlite-inventory",
        action="store_true",
        help="measure the 1,000,000-machine inventory on PostgreSQL only",
    )
    args = parser.parse_args()
    chosen = args.only or list(SECTIONS)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="rmm-bench-") as scratch:
        workdir = Path(scratch)
        runs: dict[str, Callable[[], dict[str, Any]] | None] = {}
        if "heartbeats" in chosen:
            from bench import heartbeats, wrk

            wrk.wrk_binary()
            runs["heartbeats"] = lambda: heartbeats.main(workdir, log)
        if "network" in chosen:
            from bench import network, wrk

            wrk.wrk_binary()
            runs["network"] = lambda: network.main(workdir, log)
        if "inventory" in chosen:
            from bench import inventory

            runs["inventory"] = lambda: inventory.main(
                workdir, log, sqlite=not args.no_sqlite_inventory
            )
        if "billing" in chosen:
            runs["billing"] = _optional("billing_large")
        if "push" in chosen:
            runs["push"] = _optional("billing_push")
        if "agent" in chosen:
            runs["agent"] = _optional("agent_footprint")
        for name, run in runs.items():
            if run is None:
                log(f"{name}: its benchmark module is not here; skipped")
                continue
            log(f"== {name}")
            started = time.perf_counter()
            try:
                results[name] = run()
            except Exception as exc:
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"== {name} took {time.perf_counter() - started:.0f} s")
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten to {RESULTS.relative_to(HERE.parent)}")
    return 1 if any(isinstance(v, dict) and "error" in v for v in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
