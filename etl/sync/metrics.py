"""Prometheus metrics of a running `etl sync` (--metrics-port): lag (in ticks, and per change
from its commit in ArangoDB to its row in PostgreSQL as a histogram), applied changes by
collection and operation, rejects, the last time a change was applied."""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter


class SyncMetrics:
    def __init__(self, port: int, addr: str = "127.0.0.1"):
        self.registry = CollectorRegistry()
        r = self.registry
        self.lag_ticks = Gauge(
            "etl_sync_lag_ticks", "server's last tick - sync position", registry=r
        )
        self.lag_seconds = Gauge(
            "etl_sync_lag_seconds", "seconds since sync last read everything there was", registry=r
        )
        self.position = Gauge("etl_sync_position_tick", "the sync position (WAL tick)", registry=r)
        self.server_tick = Gauge("etl_sync_server_tick", "the server's last tick", registry=r)
        self.applied_total = PromCounter(
            "etl_sync_applied_changes",
            "changes applied, by collection and operation",
            ["collection", "operation"],
            registry=r,
        )
        self.rejects_total = PromCounter(
            "etl_sync_rejects", "changes kept in etl_rejects instead of a row", registry=r
        )
        self.last_applied = Gauge(
            "etl_sync_last_applied_timestamp_seconds",
            "unix time of the last applied change",
            registry=r,
        )
        self.change_lag = Histogram(
            "etl_sync_change_lag_seconds",
            "per change: its commit in ArangoDB (the _rev clock) to its row committed in "
            "PostgreSQL",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self._caught_up_at = time.time()
        self.server, self.thread = start_http_server(port, addr=addr, registry=r)

    def observe(self, outcome, caught_up: bool) -> None:
        now = time.time()
        if caught_up:
            self._caught_up_at = now
        self.lag_ticks.set(outcome.lag_ticks)
        self.lag_seconds.set(0 if caught_up else now - self._caught_up_at)
        self.position.set(outcome.from_tick)
        self.server_tick.set(outcome.server_tick)

    def applied(self, counts: Counter) -> None:
        for (collection, operation), n in counts.items():
            if operation == "reject":
                self.rejects_total.inc(n)
            self.applied_total.labels(collection, operation).inc(n)
        if counts:
            self.last_applied.set_to_current_time()

    def lag(self, seconds: list[float]) -> None:
        for s in seconds:
            self.change_lag.observe(s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
