"""`etl migrate` in one process: the run's collections one after another through the pipeline,
with the deferred index builds around them and the report at the end (or a dry run of all of
it inside one transaction rolled back). `etl migrate --workers N` is etl/parallel/."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from etl import fastpath, foreign, indexes, pg, target
from etl.errors import EtlError
from etl.fastpath import FastPath
from etl.mapping import load_mapping
from etl.pipeline import Pipeline
from etl.results import CollectionResult, RunSummary, rate
from etl.runs import Run, select_collections
from etl.settings import Settings
from etl.sources import open_source
from etl.sources.arango import ArangoSource
from etl.spec import MigrateSpec
from etl.state import Checkpoint, CollectionCheckpoints
from etl.summary import outcome
from etl.sync import start as sync_start

log = logging.getLogger("etl.migrate")


def writers(mapping, names: list[str]) -> dict[str, list[str]]:
    """table -> the collections of this run that write it, in run order (rows, or edges that
    update rows)."""
    out: dict[str, list[str]] = {}
    for name in names:
        cm = mapping.for_collection(name)
        if cm is None:
            continue
        tables = [t.table for t in cm.targets()]
        if cm.edge is not None:
            tables.append(mapping.table(cm.edge.to_document_type))
        for table in dict.fromkeys(tables):
            out.setdefault(table, []).append(name)
    return out


class Migration:
    """One `etl migrate` run (or dry run). Use run() once; or, for a parallel run, open_run()
    and the options it settles (etl/parallel/)."""

    def __init__(
        self,
        settings: Settings,
        *,
        collections: list[str] | None = None,
        all_: bool = False,
        source: str = "arangodb",
        batch_size: int | None = None,
        resume: bool = False,
        dry_run: bool = False,
        limit: int | None = None,
        since_key: str | None = None,
        from_tick: int | None = None,
        on_progress: Callable[[str, int, int | None], None] | None = None,
        on_collection: Callable[[str, int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        retry_wait: Callable | None = None,
        allow_missing: bool = False,
    ):
        self.settings = settings
        self.requested = collections or []
        self.all = all_
        self.source_spec = source
        self.batch_flag = batch_size  # --batch; None: the resumed run's, else the settings'
        self.batch_size = batch_size or settings.migrate.batch_size
        self.resume = resume
        self.dry_run = dry_run
        self.limit = limit
        self.since_key = since_key
        self.from_tick = from_tick  # --from-tick: the WAL position of a dump source
        self.on_progress = on_progress or (lambda c, n, total: None)
        self.on_collection = on_collection or (lambda c, total: None)
        self.should_stop = should_stop
        self.retry_wait = retry_wait
        self.allow_missing = allow_missing  # --allow-missing: mapped collections the source lacks
        self.mapping = load_mapping(settings.migrate.mapping)
        self.run_id: str | None = None  # known once run() started
        self.summary: RunSummary | None = None
        self.report_paths: dict | None = None
        self.report_error: str | None = None  # why the reports could not be written

    # -- set-up ------------------------------------------------------------------------------
    def open_run(self) -> Run:
        """A new run, or the one to resume; on resume what the command line leaves open
        (collections, source, batch size) comes from the interrupted run."""
        if not self.resume:
            return Run.new(self.settings, "migrate", dry_run=self.dry_run)
        run = Run.resume(self.settings, "migrate")
        before = MigrateSpec.from_options(run.options)
        if not self.requested and not self.all:
            self.requested = list(before.collections)
        if self.source_spec == "arangodb":
            self.source_spec = before.source_spec
        self.batch_size = self.batch_flag or before.batch_size or self.batch_size
        return run

    def spec(self, names: list[str], workers: int | None = None) -> MigrateSpec:
        """What the operator asked of this run, as etl_runs keeps it (MigrateSpec)."""
        return MigrateSpec(
            collections=tuple(names),
            source_spec=self.source_spec,
            batch_size=self.batch_size,
            limit=self.limit,
            since_key=self.since_key,
            mapping=self.settings.migrate.mapping,
            workers=workers,
        )

    def options(self, names: list[str]) -> dict:
        """What etl_runs keeps of this run, for --resume and for joining workers."""
        return self.spec(names).to_options()

    def record_wal_start(self, conn, run_id: str, source):
        """The run's WAL position for `etl sync` (etl/sync/start.py), in the caller's
        transaction; a Pinner renewing it while the copy runs, or None. Without WAL access
        (a non-admin user, a cluster) the copy goes on: sync will say it cannot follow it."""
        try:
            p = sync_start.record_migrate_start(
                conn, run_id, source, from_tick=self.from_tick, resumed=self.resume
            )
        except EtlError as exc:
            if self.from_tick is not None:
                raise
            log.warning("no WAL position recorded, `etl sync` cannot follow this copy: %s", exc)
            return None
        if p is None or p.syncer_id is None or not isinstance(source, ArangoSource):
            return None  # nothing to pin (a dump; a --from-tick position has no syncer id)
        return sync_start.Pinner(self.settings.arango, p).start()

    def defer_indexes(self, conn, run_id: str, tables: list[str]) -> list[str]:
        """Drop the secondary indexes of the EMPTY tables among `tables` (kept to be rebuilt)."""
        if not self.settings.migrate.defer_indexes:
            return []
        return indexes.defer(conn, run_id, tables)

    def fast_path(self, conn, names: list[str]) -> FastPath | None:
        """The empty-table fast path for the document types whose tables hold no row now, at
        the start of a run that is not a resume (etl/fastpath.py); None when none qualifies."""
        if self.resume or not fastpath.lever_on("fastpath"):
            return None
        tables = {  # the curated tables (a generic table's merge is etl/generic/load.py)
            t.document_type: t.table
            for name in names
            if (cm := self.mapping.for_collection(name)) is not None
            for t in cm.targets()
            if t.document_type in target.DOCUMENT_TYPES
        }
        with conn.transaction():
            empty = fastpath.empty_tables(conn, sorted(set(tables.values())))
        types = {dt for dt, table in tables.items() if table in empty}
        if not types:
            return None
        log.info("empty tables, loaded by COPY without the merge: %s", ", ".join(sorted(empty)))
        return FastPath(types)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        run = self.open_run()
        self.run_id = run.run_id
        source = open_source(self.source_spec, self.settings)
        pipeline = Pipeline(
            self.settings,
            self.mapping,
            run.run_id,
            run.dsn,
            batch_size=self.batch_size,
            dry_run=self.dry_run,
            on_progress=self.on_progress,
            should_stop=self.should_stop,
            retry_wait=self.retry_wait,
        )
        pipeline.whole_collection = self.since_key is None
        conn = pipeline.conn
        summary = RunSummary(
            run_id=run.run_id,
            command="migrate",
            dry_run=self.dry_run,
            source=source.description,
            target=pg.target_label(self.settings, run.dsn),
            schema_version=pg.schema_version(conn),
            server_version=pg.server_version(conn),
            mapping_version=str(self.mapping.version),
            batch_size=self.batch_size,
            collections=[],
        )
        conn.commit()
        builder = pinner = None
        by_table: dict[str, list[str]] = {}
        try:
            names = select_collections(
                self.mapping, source, self.requested, self.all, allow_missing=self.allow_missing
            )
            run.lock(names)
            by_table = writers(self.mapping, names)
            pipeline.fast = self.fast_path(conn, names)
            if self.dry_run:
                # everything, index drops and builds included, inside one transaction rolled back
                with conn.transaction():
                    self.defer_indexes(conn, run.run_id, list(by_table))
                    self._collections(pipeline, source, names, run.checkpoints, summary, None)
                    indexes.rebuild(conn)
                    raise psycopg.Rollback()
            else:
                run.start(
                    conn,
                    source=source.description,
                    target=summary.target,
                    options=self.options(names),
                )
                pinner = self.record_wal_start(conn, run.run_id, source)
                conn.commit()
                if not self.resume:
                    foreign.say_foreign_rows(conn, list(by_table))
                indexes.rebuild(conn)  # what a crashed run left behind, before anything else
                if self.defer_indexes(conn, run.run_id, list(by_table)):
                    builder = indexes.BackgroundBuilder(
                        run.dsn,
                        indexes.BUILD_CONNECTIONS if fastpath.lever_on("parallel_index") else 1,
                    )
                self._collections(pipeline, source, names, run.checkpoints, summary, builder)
            summary.end(*outcome(None))
        except BaseException as exc:
            summary.end(*outcome(exc))
            raise
        finally:
            # Without its locks (refused: another migrate runs) this process changed nothing and
            # must not: neither the other run's row (--resume names it) nor its deferred indexes.
            if run.locked and not self.dry_run:
                self._build_deferred_indexes(pipeline, builder, summary)
                if summary.state == "finished":
                    self._analyze(pipeline, list(by_table))
            pipeline.close()
            if pinner is not None:
                pinner.stop()
            summary.stamp()
            if self.dry_run:
                docs_per_second = rate(summary)
                total = sum(c.source_count for c in summary.collections)
                summary.estimated_seconds = (
                    round(total / docs_per_second, 1) if docs_per_second else None
                )
            self.summary = summary
            run.conclude(
                summary,
                report=bool(summary.collections),
                record=run.locked and not self.dry_run,
            )
            self.report_paths, self.report_error = run.report_paths, run.report_error
            source.close()
            run.close()
        return summary

    def _collections(self, pipeline, source, names, checkpoints, summary, builder) -> None:
        last_writer = {table: ws[-1] for table, ws in writers(self.mapping, names).items()}
        for name in names:
            result = CollectionResult(name)
            summary.collections.append(result)
            self._collection(pipeline, source, name, checkpoints.get(name), result)
            done_tables = [t for t, last in last_writer.items() if last == name]
            if builder is not None and done_tables:
                builder.submit(done_tables)  # while the next collections load

    def _collection(self, pipeline, source, name, cp: Checkpoint | None, result) -> None:
        result.source_count = source.collection(name).count
        if self.mapping.for_collection(name) is None:
            result.status = "unmapped"
            result.counts.unmapped = result.source_count
            result.unmapped_reasons["not migrated (no mapping)"] = result.source_count
            return
        cp = cp or Checkpoint(name)
        if cp.done:
            result.status, result.counts, result.batches = "migrated", cp.counts, cp.batches
            return
        if cp.position is None and self.since_key is not None:
            cp.position = self.since_key
        self.on_collection(name, result.source_count)
        store = CollectionCheckpoints(pipeline.run_id)
        pipeline.load_range(source, name, store, cp, result, limit=self.limit)

    def _analyze(self, pipeline, tables: list[str]) -> None:
        """The planner's statistics of a finished load (etl sync plans on them next)."""
        try:
            conn = pipeline.conn
            conn.rollback()
        except (EtlError, psycopg.Error) as exc:  # the rows are in: autovacuum analyzes later
            log.warning("could not gather planner statistics (run ANALYZE): %s", exc)
            return
        indexes.analyze(conn, tables)

    def _build_deferred_indexes(self, pipeline, builder, summary: RunSummary) -> None:
        """Finished, failed or interrupted: the deferred indexes come back now (after a crash,
        at the start of the next run)."""
        built = []
        if builder is not None and fastpath.lever_on("parallel_index"):
            # nothing of the run may hold a lock the builds wait for (a failed batch's
            # transaction): its connection goes, and the rest is built on the builder's
            pipeline.close()
            built = builder.finish()
        elif builder is not None:
            built = builder.wait()
        try:
            conn = pipeline.conn
            conn.rollback()
            built += indexes.rebuild(conn)  # what the builder could not build
            summary.index_builds = [{"index": n, "seconds": round(t, 3)} for n, t in built]
        except EtlError as exc:
            log.error("could not reconnect to build the deferred indexes: %s", exc)
        except psycopg.Error as exc:
            log.error(
                "could not build the deferred indexes (etl_deferred_indexes keeps them; the next "
                "etl migrate builds them): %s",
                exc,
            )
