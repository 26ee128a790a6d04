"""One `etl reconcile` run: its lifecycle (run id, etl_runs start and finish, report files, the
audit entries) and the check of each collection, in dependency order (referenced collections
first)."""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psycopg

from etl import pg
from etl.errors import PermanentError
from etl.mapping import load_mapping
from etl.owners import live_migrate_of
from etl.reconcile.audit import write_audit
from etl.reconcile.buckets import N_BUCKETS, in_sample, sample_buckets
from etl.reconcile.compare import type_specs
from etl.reconcile.context import CheckContext
from etl.reconcile.documents import check_documents, ensure_exists
from etl.reconcile.edges import check_edges
from etl.reconcile.report import render_markdown
from etl.reconcile.results import NOT_IN_SOURCE, CollectionReconcile, ReconcileSummary
from etl.reconcile.workers import CollectionReader
from etl.runs import Run, collection_names, missing_collections, select_collections
from etl.settings import Settings
from etl.sources import open_source
from etl.sources.base import Source
from etl.summary import outcome

log = logging.getLogger("etl.reconcile")


class Reconciliation:
    """One `etl reconcile` run. Use run() once."""

    def __init__(
        self,
        settings: Settings,
        *,
        collections: list[str] | None = None,
        all_: bool = False,
        source: str = "arangodb",
        sample: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        on_progress: Callable[[str, int, int | None], None] | None = None,
        workers: int = 1,
        allow_missing: bool = False,
        while_running: bool = False,
    ):
        if sample is not None and not (0 < sample <= 100):
            raise PermanentError(f"--sample {sample}: expected a percentage in (0, 100]")
        if not isinstance(workers, int) or workers < 1:
            raise PermanentError(f"--workers {workers}: expected a whole number >= 1")
        self.workers = workers
        self.allow_missing = allow_missing  # --allow-missing: mapped collections the source lacks
        self.while_running = while_running  # --while-running: beside a live migrate of them
        self.settings = settings
        self.requested = collections or []
        self.all = all_
        self.source_spec = source
        self.sample = sample
        self.seed = (
            seed
            if seed is not None
            else (random.SystemRandom().getrandbits(32) if sample else None)
        )
        self.batch_size = batch_size or settings.migrate.batch_size
        self.on_progress = on_progress or (lambda c, n, total: None)
        self.mapping = load_mapping(settings.migrate.mapping)
        self.sampled: set[int] | None = (
            sample_buckets(sample, self.seed) if sample is not None else None
        )
        # ids (16 bytes) of the source documents that are rows in the target, per document type
        self.exists: dict[str, set[bytes]] = defaultdict(set)
        # set by run(): the run's id, its working connection and source, the summary, the
        # report files, the compare specs and the context the checks share
        self.run_id: str | None = None
        self.conn: psycopg.Connection
        self.source: Source
        self.summary: ReconcileSummary | None = None
        self.report_paths: dict[str, Path] | None = None
        self.report_error: str | None = None  # why the reports could not be written
        self.specs: dict = {}
        self.ctx: CheckContext

    def run(self) -> ReconcileSummary:
        run = Run.new(self.settings, "reconcile")
        self.run_id = run.run_id
        self.conn = pg.connect(run.dsn)
        self.source = open_source(self.source_spec, self.settings)
        summary = self._summary(run)
        try:
            names = select_collections(
                self.mapping,
                self.source,
                self.requested,
                self.all,
                allow_missing=self.allow_missing,
            )
            if not self.while_running:
                self._refuse_moving_target(names)
            run.start(
                self.conn,
                source=summary.source,
                target=summary.target,
                options={
                    "collections": names,
                    "source_spec": self.source_spec,
                    "sample": self.sample,
                    "seed": self.seed,
                },
            )
            self.conn.commit()
            self._check(names, summary, run.run_id)
            known = set(collection_names(self.source))
            for name in missing_collections(self.mapping, known, self.requested, self.all):
                # --allow-missing: named in the report as not read, never as a match
                summary.collections.append(
                    CollectionReconcile(name, kind="missing", status=NOT_IN_SOURCE)
                )
            summary.end(*outcome(None))
        except BaseException as exc:
            summary.end(*outcome(exc))
            raise
        finally:
            self.conn.close()

            def audit(conn):
                if summary.state == "finished":
                    write_audit(conn, run.run_id, summary)

            run.conclude(
                summary,
                markdown=render_markdown,
                # not for a usage error
                report=bool(summary.collections) or summary.state == "finished",
                also=audit,
            )
            self.report_paths, self.report_error = run.report_paths, run.report_error
            self.source.close()
            run.close()
        return summary

    def _summary(self, run: Run) -> ReconcileSummary:
        """The run's summary, state running."""
        self.summary = ReconcileSummary(
            run_id=run.run_id,
            source=self.source.description,
            target=pg.target_label(self.settings, run.dsn),
            schema_version=pg.schema_version(self.conn),
            server_version=pg.server_version(self.conn),
            mapping_version=str(self.mapping.version),
            sample_percent=self.sample,
            sample_seed=self.seed,
            buckets_total=N_BUCKETS,
            buckets_checked=len(self.sampled) if self.sampled is not None else N_BUCKETS,
            collections=[],
        )
        self.conn.commit()
        return self.summary

    def _refuse_moving_target(self, names: list[str]) -> None:
        """A live `etl migrate` of these collections changes the target while it is compared:
        refuse, naming the run (etl/owners.py says what live is)."""
        live = live_migrate_of(self.conn, names)
        if live is not None:
            run_id, owner, shared = live
            raise PermanentError(
                f"etl migrate run {run_id} is loading {', '.join(shared)} now ({owner.label()}):"
                " a reconcile would compare a moving target",
                hint="wait for it to finish (etl status), or --while-running to compare anyway",
            )

    # -- the collections --------------------------------------------------------------------
    def _check(self, names: list[str], summary: ReconcileSummary, run_id: str) -> None:
        """Check every collection in `names`, in order, appending its result to the summary."""
        self.specs = type_specs(self.conn, self.mapping)
        self.conn.commit()
        self.ctx = CheckContext(
            mapping=self.mapping,
            run_id=run_id,
            conn=self.conn,
            reader=CollectionReader(
                self.source,
                source_spec=self.source_spec,
                settings=self.settings,
                batch_size=self.batch_size,
                workers=self.workers,
                on_progress=self.on_progress,
            ),
            specs=self.specs,
            sampled=self.sampled,
            exists=self.exists,
        )
        for name in names:
            result = CollectionReconcile(name)
            summary.collections.append(result)
            t0 = time.perf_counter()
            self._collection(name, result)
            result.seconds = time.perf_counter() - t0

    def _collection(self, name: str, result: CollectionReconcile) -> None:
        ctx = self.ctx
        info = self.source.collection(name)
        result.source_count = info.count
        cm = self.mapping.for_collection(name)
        if cm is None:
            result.kind = result.status = "unmapped"
            result.unmapped = result.checked = (
                self._count_sampled(name) if self.sampled is not None else info.count
            )
            return
        if cm.edge is not None:
            result.kind = "edge"
            for dep in (cm.edge.from_collection, cm.edge.to_collection):
                ensure_exists(ctx, dep)
            check_edges(ctx, name, cm, result)
        else:
            for t in cm.targets():
                for f in t.references:
                    if f.collection is not None and f.collection != name:
                        ensure_exists(ctx, f.collection)
            if cm.generic is not None and cm.generic.edge:  # the ends the graphs name
                for dep in (*cm.generic.from_collections, *cm.generic.to_collections):
                    if dep != name:
                        ensure_exists(ctx, dep)
            check_documents(ctx, name, cm, result)
        result.status = "match" if (result.differences == 0 and result.balanced) else "differences"

    def _count_sampled(self, name: str) -> int:
        return sum(1 for d in self.ctx.reader.docs(name) if in_sample(self.sampled, name, d))
