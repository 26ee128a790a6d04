"""One worker: claims units of a run and executes each through the pipeline, and the
processes that run workers on this machine (started, watched and replaced by a Supervisor).
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

import psycopg
from psycopg.types.json import Jsonb
from tenacity import wait_random_exponential

from etl import indexes, pg, state, units
from etl.errors import EtlError, Interrupted
from etl.mapping import load_mapping
from etl.migrate import writers
from etl.parallel.summary import summary_from_db
from etl.pipeline import Pipeline
from etl.results import (
    CollectionResult,
    count_relinked,
)
from etl.runs import Run
from etl.signals import GracefulStop
from etl.sources import open_source
from etl.sources.base import Source
from etl.spec import MigrateSpec
from etl.state import Checkpoint, Counts
from etl.writer import retry_policy

log = logging.getLogger("etl.parallel")

POLL_SECONDS = 0.5
RESTARTS_PER_WORKER = 3  # replacements for worker processes that died (SIGKILL, OOM)


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
        self.source: Source | None = None  # opened by the first range unit
        self.pipeline: Pipeline  # set by run()

    def run(self) -> int:
        """Returns how many units this worker completed."""
        for attempt in retry_policy(self.settings.postgres.retry_attempts):
            with attempt:  # a worker may start while the server restarts
                run = Run.join(self.settings, self.run_id)
        spec = MigrateSpec.from_options(run.options)  # what the run was started with
        self.source_spec = spec.source_spec
        self.pipeline = Pipeline(
            self.settings,
            self.mapping,
            self.run_id,
            run.dsn,
            batch_size=spec.batch_size or self.settings.migrate.batch_size,
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
        source = self.source
        assert source is not None  # opened by _execute
        cp = store.checkpoint()
        if self.mapping.for_collection(unit.collection) is None:  # counted, not read
            cp.done = True
            cp.counts = Counts(unmapped=source.collection(unit.collection).count)

            def save(c):
                store.take(c)
                store.save(c, cp)

            self.pipeline.in_transaction(save)
            return
        result = CollectionResult(unit.collection)
        self.pipeline.load_range(source, unit.collection, store, cp, result)

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
        count_relinked(result, self.pipeline.link_late_parents(c, unit.collection))
        state.forget_stale_rejects(c, self.run_id, unit.collection)  # every range was read
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
            # in a savepoint: a failure is a warning, not a run that can never finish
            indexes.analyze(
                conn, list(writers(self.mapping, [c.collection for c in summary.collections]))
            )
            summary.index_builds += [{"index": n, "seconds": round(t, 3)} for n, t in built]
            paths = run.write_reports(summary.asdict())
            state.finish_run(
                conn,
                self.run_id,
                "finished",
                summary=summary.row(),
                report_path=str(paths["json"]) if paths else None,
            )
            store.save(conn, replace(store.checkpoint(), done=True))
        log.info(
            "run %s finished; report %s", self.run_id, paths["json"] if paths else "(not written)"
        )


# -- worker processes ------------------------------------------------------------------------
def worker_main(settings, run_id: str, lease_seconds: float, log_level: int) -> None:
    """Entry point of a worker process (multiprocessing 'spawn'). Exit status as the CLI's."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the coordinator, which passes one SIGINT on
    from etl import logs

    logs.setup_inherited(log_level)  # the CLI's --log-* options, passed on in the environment
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
