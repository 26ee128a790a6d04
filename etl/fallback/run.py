"""An `etl fallback` run: its etl_runs row and lock, the apply loop (until current, or following
until stopped), metrics, report."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from etl import pg
from etl.errors import Interrupted, PermanentError
from etl.fallback import capture
from etl.fallback.apply import Applier
from etl.fallback.writes import BatchResult
from etl.mapping import load_mapping
from etl.reconcile.compare import type_specs
from etl.runs import Run
from etl.sources.arango import ArangoSource
from etl.summary import DocSummary, concluded

log = logging.getLogger("etl.fallback")

BATCH = 500  # captured changes per batch
# The provenance write-back waits for rows the application holds (lock_timeout in apply.py);
# a batch is idempotent, so it is simply done again.
RETRY_BATCH = (
    psycopg.errors.LockNotAvailable,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
POLL_SECONDS = 0.5  # follow mode: wait between empty polls


def percentile(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))], 3)


class FallbackMetrics:
    """Prometheus metrics of a running `etl fallback` (--metrics-port)."""

    def __init__(self, port: int, addr: str = "127.0.0.1"):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server
        from prometheus_client import Counter as PromCounter

        r = self.registry = CollectorRegistry()
        self.pending = Gauge(
            "etl_fallback_pending_changes", "captured changes not applied yet", registry=r
        )
        self.lag_seconds = Gauge(
            "etl_fallback_lag_seconds", "age of the oldest change not applied yet", registry=r
        )
        self.applied_total = PromCounter(
            "etl_fallback_applied_changes",
            "changes applied to ArangoDB, by collection and operation",
            ["collection", "operation"],
            registry=r,
        )
        self.retained_wal = Gauge(
            "etl_fallback_slot_retained_wal_bytes",
            "WAL the replication slot keeps on the server (logical decoding capture)",
            registry=r,
        )
        self.last_applied = Gauge(
            "etl_fallback_last_applied_timestamp_seconds", "unix time of the last apply", registry=r
        )
        self.server, self.thread = start_http_server(port, addr=addr, registry=r)

    def observe(self, out: BatchResult, backlog: dict) -> None:
        self.pending.set(backlog["pending_changes"])
        self.lag_seconds.set(backlog["oldest_pending_seconds"] or 0)
        if backlog.get("retained_wal_bytes") is not None:
            self.retained_wal.set(backlog["retained_wal_bytes"])
        for (c, op), n in out.applied.items():
            self.applied_total.labels(c, op).inc(n)
        if out.changes:
            self.last_applied.set_to_current_time()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def render_markdown(doc: dict) -> str:
    lines = [
        f"# etl {doc['command']} {doc['run_id']}",
        "",
        f"- state: **{doc['state']}**" + (f" ({doc['error']})" if doc.get("error") else ""),
        f"- started {doc['started_at']}, finished {doc.get('finished_at')}",
        f"- source (PostgreSQL): {doc.get('target')}",
        f"- ArangoDB: {doc.get('source')}",
    ]
    for key in ("verdict", "freeze_seconds", "reconcile_run", "reconcile_result"):
        if doc.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: {doc[key]}")
    f = doc.get("fallback") or {}
    if f:
        lines += [
            "",
            "## Applied",
            "",
            f"- {f['changes']} changes in {f['seconds']} s ({f['changes_per_second']} changes/s);"
            f" lag p50 {f['lag_p50_seconds']} s, p99 {f['lag_p99_seconds']} s",
            f"- left to apply: {f['pending_changes']}; conflicts: {len(f['conflicts'])};"
            f" not invertible: {len(f['problems'])}",
            "",
            "| collection | operation | changes |",
            "|---|---|---:|",
        ]
        for c, ops in f["applied"].items():
            for op, n in ops.items():
                lines.append(f"| {c} | {op} | {n} |")
        for x in f["conflicts"][:100]:
            lines.append(
                f"- conflict: {x['collection']}/{x['key']} ({x['operation']}): expected _rev "
                f"{x['expected_rev']}, found {x['found_rev']}"
                + (" (overwritten)" if x["overwritten"] else "")
            )
        for p in f["problems"][:100]:
            lines.append(f"- not invertible: {p}")
    return "\n".join(lines) + "\n"


class FallbackJob:
    """`etl fallback` (follow until stopped) and `etl fallback --until-current`."""

    def __init__(
        self,
        settings,
        *,
        command: str = "fallback",
        metrics_port: int | None = None,
        on_conflict: str = "report",
        should_stop: Callable[[], bool] = lambda: False,
        batch: int = BATCH,
    ):
        self.settings = settings
        self.command = command
        self.metrics_port = metrics_port
        self.on_conflict = on_conflict
        self.should_stop = should_stop
        self.batch_size = batch
        self.mapping = load_mapping(settings.migrate.mapping)
        self.run: Run | None = None
        self.source: ArangoSource | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.applier: Applier | None = None
        self.metrics: FallbackMetrics | None = None
        self.doc = DocSummary(run_id="", command=command)
        self.report_paths: dict[str, Path] | None = None
        self.applied: Counter = Counter()
        self.conflicts: list[dict] = []
        self.problems: list[str] = []
        self.lags: list[float] = []
        self.changes = 0
        self.seconds = 0.0

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None, "open() first"
        return self._conn

    def open(self) -> None:
        self.run = run = Run.new(self.settings, self.command)
        self.doc = DocSummary(run_id=run.run_id, command=self.command)
        run.lock(["fallback"])
        self._conn = pg.connect(run.dsn)
        capture.require_tables(self.conn)
        if capture.state(self.conn) is None:
            self.conn.rollback()
            raise PermanentError(
                "the fallback is not armed: no change of PostgreSQL is captured",
                hint="`etl fallback arm` (etl cutover arms it on go)",
            )
        self.conn.rollback()
        self.source = ArangoSource(self.settings.arango)
        if self.metrics_port is not None:
            self.metrics = FallbackMetrics(self.metrics_port)
        specs = type_specs(self.conn, self.mapping)
        self.applier = Applier(
            self.mapping,
            self.conn,
            self.source.arango_db(),
            run_id=run.run_id,
            specs=specs,
            on_conflict=self.on_conflict,
            retry=self.source.retry,
        )
        self.doc.source = self.source.description
        self.doc.target = pg.target_label(self.settings, run.dsn)
        run.begin(
            source=self.doc["target"],
            target=self.source.description,
            options={"on_conflict": self.on_conflict},
        )

    def follow(self, *, until_current: bool) -> None:
        """Apply batches. until_current: everything committed when it started (and what
        commits meanwhile), then return once nothing committed is left; else until stopped."""
        t0 = time.perf_counter()
        try:
            while True:
                if self.should_stop():
                    raise Interrupted("stopped by a signal; `etl fallback` goes on from here")
                try:
                    assert self.applier is not None, "open() first"
                    out = self.applier.batch(self.batch_size)
                except RETRY_BATCH as exc:  # the application holds a row: the batch again
                    self.conn.rollback()
                    log.warning("batch not committed (%s); again", str(exc).splitlines()[0])
                    time.sleep(POLL_SECONDS)
                    continue
                self._add(out)
                if self.metrics is not None:
                    self.metrics.observe(out, capture.backlog(self.conn))
                    self.conn.rollback()
                if out.changes:
                    continue
                if until_current and not self._committed_left():
                    return
                time.sleep(POLL_SECONDS if not until_current else 0.05)
        finally:
            self.seconds += time.perf_counter() - t0

    def _committed_left(self) -> bool:
        """Committed changes still in the table (none: caught up; changes of transactions
        still running are not waited for)."""
        n = pg.scalar(self.conn, "select count(*) from etl_fallback_changes")
        self.conn.rollback()
        return n > 0

    def _add(self, out: BatchResult) -> None:
        self.applied.update(out.applied)
        self.conflicts += out.conflicts
        self.problems += out.problems
        self.lags += out.lag_seconds
        self.changes += out.changes
        for p in out.problems:
            log.warning("not applied: %s", p)
        for x in out.conflicts:
            log.warning(
                "conflict: %s/%s changed in ArangoDB after the cutover (expected _rev %s, found "
                "%s)%s",
                x["collection"], x["key"], x["expected_rev"], x["found_rev"],
                " - overwritten" if x["overwritten"] else "; left as it is",
            )  # fmt: skip

    def summary(self) -> dict:
        applied: dict[str, dict[str, int]] = {}
        for (c, op), n in sorted(self.applied.items()):
            applied.setdefault(c, {})[op] = n
        pending = None
        if self.run is not None:
            try:
                with pg.connect(self.run.dsn) as c:
                    pending = capture.backlog(c)["pending_changes"]
            except Exception:  # noqa: BLE001 - only for the report
                pending = None
        return {
            "changes": self.changes,
            "seconds": round(self.seconds, 3),
            "changes_per_second": round(self.changes / self.seconds, 1) if self.seconds else None,
            "lag_p50_seconds": percentile(self.lags, 50),
            "lag_p99_seconds": percentile(self.lags, 99),
            "pending_changes": pending,
            "applied": applied,
            "conflicts": self.conflicts,
            "problems": self.problems,
        }

    def close(self, state: str, error: str | None = None, also=None) -> None:
        if self.run is None:
            return
        if self.applier is not None:
            self.doc["fallback"] = self.summary()
        self.report_paths = self.run.end(
            self.doc,
            state,
            error,
            markdown=render_markdown,
            also=also,
            resources=(self.metrics, self.source, self._conn),
        )

    def execute(self, *, until_current: bool) -> DocSummary:
        with concluded(self.close):
            self.open()
            self.follow(until_current=until_current)
        return self.doc
