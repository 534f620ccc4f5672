"""Prometheus instruments of one collector app (a registry per app: tests never share them)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from collector.store.base import MachineState


class _HeartbeatCount(Collector):
    """`rmm_heartbeats_total`, read from a plain integer when scraped: the heartbeat path adds one
    to an attribute instead of taking a `Counter`'s lock on every request."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "rmm_heartbeats", "Heartbeats accepted", value=self._metrics.heartbeats_total
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.heartbeats_total = 0
        self.registry.register(_HeartbeatCount(self))
        self.enrollments = Counter(
            "rmm_enrollments", "Enrollments accepted", registry=self.registry
        )
        self.rejected = Counter(
            "rmm_rejected_requests",
            "Requests refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.machines = Gauge(
            "rmm_machines", "Machines by state", ["state"], registry=self.registry
        )
        self.flush_seconds = Histogram(
            "rmm_last_seen_flush_seconds",
            "Time to write one batch of buffered heartbeats",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.flush_batch = Gauge(
            "rmm_last_seen_flush_batch",
            "Machines written by the latest flush",
            registry=self.registry,
        )
        self.flush_failures = Counter(
            "rmm_last_seen_flush_failures",
            "Flushes that failed and were retried",
            registry=self.registry,
        )
        self.expired = Counter(
            "rmm_machines_expired",
            "Machines recorded as expired by the sweep",
            registry=self.registry,
        )

        self.commands_delivered = Counter(
            "rmm_commands_delivered",
            "Signed commands handed to agents (re-deliveries too)",
            registry=self.registry,
        )
        self.security_events = Counter(
            "rmm_security_events",
            "Refused commands reported by agents and results sent for another agent's command",
            ["kind"],
            registry=self.registry,
        )

        self.clock_skewed = Gauge(
            "rmm_machines_clock_skewed",
            "Machines whose agent's clock is more than a minute from the collector's",
            registry=self.registry,
        )
        self.last_write_age = Gauge(
            "rmm_last_successful_write_age_seconds",
            "Seconds since the database last took a write (a flush or an idle probe)",
            registry=self.registry,
        )

    def set_machine_counts(self, counts: dict[MachineState, int]) -> None:
        for state, count in counts.items():
            self.machines.labels(state=state).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
