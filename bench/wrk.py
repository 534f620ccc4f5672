"""Running wrk (Debian's package) with the heartbeat script against one or more servers."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("heartbeat.lua")


class WrkMissing(RuntimeError):
    pass


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return path


@dataclass(frozen=True, slots=True)
class WrkRun:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "per_second": round(self.rate),
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def _one(
    url: str,
    tokens: Path,
    body: Path,
    *,
    threads: int,
    connections: int,
    seconds: float,
    extra: list[str],
) -> dict[str, object]:
    command = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(tokens),
        str(body),
        *extra,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    last = [line for line in out.splitlines() if line.startswith("{")][-1]
    return json.loads(last)  # type: ignore[no-any-return]


def run(
    urls: list[str],
    tokens: Path,
    body: Path,
    *,
    seconds: float,
    connections: int = 64,
    threads: int = 1,
    new_connection: bool = False,
    once: bool = False,
    every: tuple[int, Path] | None = None,
) -> WrkRun:
    """One wrk per URL, all at once; rates add up, latency is the worst of them. `every`
    (n, body) sends that body instead on every nth request of each thread."""
    extra = (
        (["close"] if new_connection else [])
        + ([f"once={threads}"] if once else [])
        + ([f"every={every[0]}:{every[1]}"] if every else [])
    )
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        results = list(
            pool.map(
                lambda url: _one(
                    url,
                    tokens,
                    body,
                    threads=threads,
                    connections=connections,
                    seconds=seconds,
                    extra=extra,
                ),
                urls,
            )
        )
    requests = sum(int(r["requests"]) for r in results)  # type: ignore[call-overload]
    duration = max(int(r["duration_us"]) for r in results) / 1e6  # type: ignore[call-overload]
    errors = sum(sum(r["errors"].values()) for r in results)  # type: ignore[attr-defined]
    latency = [r["latency_us"] for r in results]

    def worst(name: str) -> float:
        return round(max(float(x[name]) for x in latency) / 1000, 2)  # type: ignore[index]

    return WrkRun(
        requests=requests,
        seconds=duration,
        errors=errors,
        p50_ms=worst("p50"),
        p90_ms=worst("p90"),
        p99_ms=worst("p99"),
        max_ms=worst("max"),
    )
