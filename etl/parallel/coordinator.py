"""`etl migrate --workers N` (ParallelMigration) and `etl worker --run ID` (join): start or
reopen a run, run local workers, and the run's summary from what every worker committed.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from etl import indexes, pg, units
from etl.errors import Interrupted, PermanentError
from etl.migrate import Migration, writers
from etl.parallel.plan import plan_units
from etl.parallel.summary import summary_from_db
from etl.parallel.worker import Coordination, Supervisor, Worker
from etl.results import (
    RunSummary,
)
from etl.runs import Run, select_collections
from etl.sources import open_source

log = logging.getLogger("etl.parallel")


def with_dsn(settings, dsn: str):
    """The settings with the DSN this process resolved: worker processes then reach the same
    server (an embedded one included) without resolving it again."""
    postgres = settings.postgres.model_copy(update={"dsn": SecretStr(dsn)})
    return settings.model_copy(update={"postgres": postgres})


@dataclass
class Joined:
    """What `etl worker` reports when its workers stop."""

    state: str
    report_path: str | None
    progress: units.RunProgress
    done: int  # units this process completed (one worker in this process)


def join(settings, run_id: str, *, workers: int, lease_seconds: float, should_stop) -> Joined:
    """`etl worker --run ID`: work on a parallel run from this machine, in this process
    (workers=1) or in `workers` processes, until no unit is left for it."""
    dsn = pg.resolve_dsn(settings)
    done = 0
    if workers == 1:
        done = Worker(settings, run_id, lease_seconds=lease_seconds, should_stop=should_stop).run()
    else:
        Run.join(settings, run_id)  # one line now for a wrong run id, not one per process
        coord = Coordination(dsn, settings.postgres.retry_attempts)
        try:
            Supervisor(
                with_dsn(settings, dsn), run_id, workers, lease_seconds, should_stop, lambda p: None
            ).run(coord)
        finally:
            coord.close()
    coord = Coordination(dsn, settings.postgres.retry_attempts)
    try:
        prog = coord.call(units.progress, run_id)
        row = coord.call(
            lambda c: c.execute(
                "select state, report_path from etl_runs where run_id = %s", (run_id,)
            ).fetchone()
        )
    finally:
        coord.close()
    return Joined(row[0] if row else "?", row[1] if row else None, prog, done)


# -- the coordinator -------------------------------------------------------------------------
class ParallelMigration:
    """`etl migrate --workers N`: plans the run (or resumes it), starts N local workers, and
    reports the outcome. The Migration the CLI built gives the options, the hooks and the set-up
    a single run would use."""

    def __init__(self, migration: Migration, workers: int, lease_seconds: float):
        self.m = migration
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.summary: RunSummary | None = None
        self.report_paths: dict | None = None
        self.report_error: str | None = None  # why the reports could not be written
        self.pinner = None  # renews the run's WAL registration while it copies

    def run(self) -> RunSummary:
        m = self.m
        if m.dry_run:
            raise PermanentError(
                "--dry-run is one transaction rolled back at the end; it cannot be split "
                "across workers",
                hint="run the dry run without --workers",
            )
        if m.limit is not None or m.since_key is not None:
            raise PermanentError(
                "--limit and --since-key are for single-process trials",
                hint="drop --workers, or drop --limit/--since-key",
            )
        run = m.open_run()
        try:
            total, label = self._plan(run)
            m.on_collection(label, total)
            sup = Supervisor(
                with_dsn(m.settings, run.dsn),
                run.run_id,
                self.workers,
                self.lease_seconds,
                m.should_stop,
                lambda prog: m.on_progress(label, prog.read, total),
            )
            coord = Coordination(run.dsn, m.settings.postgres.retry_attempts, "etl-coordinator")
            try:
                prog = sup.run(coord)
                self.summary = coord.call(lambda c: self._record_outcome(c, run, prog))
            finally:
                coord.close()
        finally:
            if self.pinner is not None:
                self.pinner.stop()
            run.close()
        return self._outcome(run.run_id, prog)

    def _plan(self, run: Run) -> tuple[int, str]:
        """Lock the collections, then plan the units (a new run) or reopen them (--resume).
        Returns the documents to read and the progress label."""
        m = self.m
        source = open_source(m.source_spec, m.settings)
        try:
            names = select_collections(
                m.mapping, source, m.requested, m.all, allow_missing=m.allow_missing
            )
            run.lock(names)
            with pg.connect(run.dsn, autocommit=True, application_name="etl-coordinator") as conn:
                if m.resume:
                    self._reopen(conn, run)
                else:
                    self._start(conn, run, source, names)
                counts = pg.scalar(
                    conn,
                    "select options -> 'source_counts' from etl_runs where run_id = %s",
                    (run.run_id,),
                )
        finally:
            source.close()
        return sum((counts or {}).values()), f"{len(names)} collection(s), {self.workers} workers"

    def _reopen(self, conn, run: Run) -> None:
        if not units.has_units(conn, run.run_id):
            raise PermanentError(
                f"run {run.run_id} was started without --workers",
                hint="resume it without --workers",
            )
        units.retry_failed(conn, run.run_id)
        # not a run that finished meanwhile: its workers (orphans of a coordinator that died,
        # or on other machines) may complete it between the lookup and this update
        conn.execute(
            "update etl_runs set state = 'running', finished_at = null, error = null,"
            " heartbeat_at = now(), host = %s, pid = %s where run_id = %s and state <> 'finished'",
            (socket.gethostname(), os.getpid(), run.run_id),
        )
        run.beat()  # this process owns the run now: etl status must not call it interrupted

    def _start(self, conn, run: Run, source, names: list[str]) -> None:
        m = self.m
        counts = {n: source.collection(n).count for n in names}
        # the spec, and what the source held at the start (the progress totals)
        options = {**m.spec(names, self.workers).to_options(), "source_counts": counts}
        with conn.transaction():
            run.start(
                conn,
                source=source.description,
                target=pg.target_label(m.settings, run.dsn),
                options=options,
            )
            self.pinner = m.record_wal_start(conn, run.run_id, source)
        indexes.rebuild(conn)  # what a crashed run left behind, before anything else
        by_table = writers(m.mapping, names)
        deferred = m.defer_indexes(conn, run.run_id, list(by_table))
        deferred_tables = {t: by_table[t] for t in _tables_of(conn, deferred)}
        planned = plan_units(m.mapping, source, names, self.workers, deferred_tables)
        with conn.transaction():
            units.plan(conn, run.run_id, planned)

    def _record_outcome(self, conn, run: Run, prog: units.RunProgress) -> RunSummary:
        """After the local workers stopped: the run's state if they did not finish it, the
        summary, and the report (the final unit wrote it if it ran on this machine)."""
        with conn.transaction():
            if not prog.finished:
                st = "failed" if prog.failed else "interrupted"
                error = (
                    prog.errors[0]
                    if prog.errors
                    else (
                        None
                        if st == "interrupted"
                        else "the workers stopped before the run was complete"
                    )
                )
                conn.execute(
                    "update etl_runs set state = %s, finished_at = now(), error = %s"
                    " where run_id = %s and state = 'running'",
                    (st, error, run.run_id),
                )
            summary = summary_from_db(conn, self.m.mapping, run.run_id)
            report_path = pg.scalar(
                conn, "select report_path from etl_runs where run_id = %s", (run.run_id,)
            )
        if report_path and Path(report_path).exists():
            p = Path(report_path)
            self.report_paths = {
                "json": p,
                "md": p.with_suffix(".md"),
                "html": p.with_suffix(".html"),
            }
        else:
            # the end row is the workers' (or the update above): only the reports here
            run.conclude(summary, record=False)
            self.report_paths, self.report_error = run.report_paths, run.report_error
        return summary

    def _outcome(self, run_id: str, prog: units.RunProgress) -> RunSummary:
        if prog.finished:
            assert self.summary is not None  # recorded by _record_outcome
            return self.summary
        if prog.failed:
            raise PermanentError(
                f"run {run_id} stopped: {prog.errors[0] if prog.errors else 'a unit failed'}",
                hint="fix the cause, then `etl migrate --resume --workers N`",
            )
        if self.m.should_stop():
            raise Interrupted(
                f"run {run_id} stopped; its units keep their positions",
                hint="continue with `etl migrate --resume --workers N`",
            )
        raise PermanentError(
            f"run {run_id}: the worker processes ended before the run was complete",
            hint="see their messages above; continue with `etl migrate --resume --workers N`",
        )


def _tables_of(conn, index_names: list[str]) -> list[str]:
    if not index_names:
        return []
    return [
        t
        for (t,) in conn.execute(
            "select distinct table_name from etl_deferred_indexes"
            " where index_name = any(%s) order by 1",
            (index_names,),
        )
    ]
