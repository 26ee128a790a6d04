"""An `etl sync` run: its etl_runs row, its lock (one follower at a time), the follower, its
metrics endpoint and its report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from etl import pg
from etl.mapping import load_mapping
from etl.runs import Run
from etl.sources.arango import ArangoSource
from etl.sources.wal import WalReader
from etl.summary import DocSummary, concluded
from etl.sync.follow import Follower, SyncOutcome

if TYPE_CHECKING:
    from etl.sync.metrics import SyncMetrics

log = logging.getLogger("etl.sync")


def outcome_summary(out: SyncOutcome) -> dict:
    applied: dict[str, dict[str, int]] = {}
    for (collection, operation), n in sorted(out.applied.items()):
        applied.setdefault(collection, {})[operation] = n
    return {
        "position_tick": out.from_tick,
        "last_scanned": out.last_scanned,
        "server_tick": out.server_tick,
        "lag_ticks": out.lag_ticks,
        "caught_up": out.caught_up,
        "polls": out.polls,
        "changes_read": out.changes,
        "changes_per_second": round(out.changes / out.seconds, 1) if out.seconds else None,
        "transactions_aborted": out.transactions_aborted,
        "batches": dict(out.batches),
        "seconds": round(out.seconds, 3),
        "applied": applied,
    }


def render_markdown(doc: dict) -> str:
    lines = [
        f"# etl {doc['command']} {doc['run_id']}",
        "",
        f"- state: **{doc['state']}**" + (f" ({doc['error']})" if doc.get("error") else ""),
        f"- started {doc['started_at']}, finished {doc.get('finished_at')}",
        f"- source: {doc.get('source')}",
        f"- target: {doc.get('target')}",
    ]
    for key in (
        "verdict",
        "no_go_reasons",
        "freeze_seconds",
        "freeze_tick",
        "final_tick",
        "freeze_held",
        "late_changes",
        "late_keys",
        "keys_verified_in_freeze",
        "differing_count",
        "reconcile_run",
        "reconcile_result",
        "last_full_reconcile",
    ):
        v = doc.get(key)
        if v in (None, [], {}):
            continue
        if isinstance(v, list):
            v = "; ".join(map(str, v))
        elif isinstance(v, dict):
            v = ", ".join(f"{k} {x}" for k, x in v.items())
        lines.append(f"- {key.replace('_', ' ')}: {v}")
    for d in doc.get("differing") or []:
        lines.append(f"  - differs: {d['collection']}/{d['key']}: {', '.join(d['fields'])}")
    if doc.get("verification"):
        lines += [
            "",
            "## Changed keys verified against ArangoDB",
            "",
            "| collection | keys verified | first | last | pending | differing |",
            "|---|---:|---|---|---:|---:|",
        ]
        for v in doc["verification"]:
            lines.append(
                f"| {v['collection']} | {v['keys_verified']} | {v['first_verified_at']} | "
                f"{v['last_verified_at']} | {v['pending']} | {v['differing']} |"
            )
    s = doc.get("sync") or {}
    if s:
        lines += [
            "",
            "## Write-ahead log",
            "",
            f"- position: tick {s['position_tick']} (server's last tick {s['server_tick']}, "
            f"lag {s['lag_ticks']} ticks); caught up: {s['caught_up']}",
            f"- {s['changes_read']} changes read in {s['polls']} polls, {s['seconds']} s "
            f"({s['changes_per_second']} changes/s); aborted transactions: "
            f"{s['transactions_aborted']}",
            "- lag, commit in ArangoDB to row in PostgreSQL: "
            + (
                f"p50 {s['lag']['p50_ms']} ms, p99 {s['lag']['p99_ms']} ms, max "
                f"{s['lag']['max_ms']} ms over {s['lag']['changes']} changes"
                if s.get("lag")
                else "no change applied"
            ),
            "",
            "| collection | operation | changes |",
            "|---|---|---:|",
        ]
        for collection, ops in s["applied"].items():
            for op, n in ops.items():
                lines.append(f"| {collection} | {op} | {n} |")
    return "\n".join(lines) + "\n"


class SyncJob:
    """`etl sync` (follow until stopped) and `etl sync --until-current`."""

    def __init__(
        self,
        settings,
        *,
        command: str = "sync",
        metrics_port: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self.settings = settings
        self.command = command
        self.metrics_port = metrics_port
        self.should_stop = should_stop
        self.mapping = load_mapping(settings.migrate.mapping)
        self.run: Run | None = None
        self.source: ArangoSource | None = None
        self.follower: Follower | None = None
        self.metrics: SyncMetrics | None = None
        self.doc = DocSummary(run_id="", command=command)
        self.report_paths: dict[str, Path] | None = None
        self.total = SyncOutcome()  # over every follow round of this run

    def open(self) -> Follower:
        """The run, its lock and a prepared follower. The run's row and report skeleton come
        first, so that a refusal (another server, a log behind the position, no copy to
        follow) is recorded as a failed run with its one-line reason."""
        self.run = run = Run.new(self.settings, self.command)
        self.source = ArangoSource(self.settings.arango)
        self.doc = DocSummary(
            run_id=run.run_id,
            command=self.command,
            source=self.source.description,
            target=pg.target_label(self.settings, run.dsn),
        )
        # sync and cutover both move the follower's position: one of them at a time
        run.lock(["follower"], scope="sync")
        run.begin(source=self.doc["source"], target=self.doc["target"], options={})
        if self.metrics_port is not None:
            from etl.sync.metrics import SyncMetrics

            self.metrics = SyncMetrics(self.metrics_port)
        self.follower = Follower(
            self.settings,
            self.mapping,
            run.dsn,
            self.source,
            run_id=run.run_id,
            should_stop=self.should_stop,
            metrics=self.metrics,
        )
        p = self.follower.prepare()
        self.doc["start"] = {
            "tick": p.from_tick,
            "base_run": p.base_run_id,
            "syncer_id": p.syncer_id,
        }
        run.begin(  # the run's options: what it follows, from where
            source=self.doc["source"],
            target=self.doc["target"],
            options={"base_run": p.base_run_id, "from_tick": p.from_tick},
        )
        return self.follower

    def server_tick(self) -> int:
        assert self.source is not None, "open() first"
        return WalReader(self.source).last_tick().tick

    def follow(self, *, until_current: bool, until: int | None = None, **kw) -> SyncOutcome:
        """One follow round: until stopped, or until the server's tick now (until_current) or
        `until`; kw go to Follower.run (the cutover's drain)."""
        follower = self.follower
        assert follower is not None, "open() first"
        if until is None and until_current:
            until = self.server_tick()
        try:
            return follower.run(until_tick=until, **kw)
        finally:
            self._add(follower.outcome)

    def _add(self, out: SyncOutcome | None) -> None:
        """The run's totals over its follow rounds (a cutover has several)."""
        if out is None:
            return
        t = self.total
        t.from_tick, t.last_scanned, t.server_tick = (
            out.from_tick,
            out.last_scanned,
            out.server_tick,
        )
        t.caught_up = out.caught_up
        t.polls += out.polls
        t.changes += out.changes
        t.applied.update(out.applied)
        t.transactions_aborted += out.transactions_aborted
        t.batches.update(out.batches)
        t.seconds += out.seconds
        t.late += out.late

    def close(self, state: str, error: str | None = None, also=None) -> None:
        if self.run is None:
            return
        if self.total.polls:
            self.doc["sync"] = outcome_summary(self.total)
            if self.follower is not None:  # commit in ArangoDB to row in PostgreSQL
                self.doc["sync"]["lag"] = self.follower.lag.percentiles()
        self.report_paths = self.run.end(
            self.doc,
            state,
            error,
            markdown=render_markdown,
            also=also,
            resources=(self.follower, self.metrics, self.source),
        )

    def execute(self, *, until_current: bool) -> DocSummary:
        with concluded(self.close):
            self.open()
            self.follow(until_current=until_current)
        return self.doc
