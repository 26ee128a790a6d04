"""The pipeline: source batches -> transform -> load, one committed transaction per batch.

Per batch, in ONE transaction: the upsert of its rows, its rejects, its timing row and the
collection's checkpoint (the batch's resume position and running counts). A crash therefore
loses at most the batch in flight, and `--resume` re-reads exactly that batch; the upsert makes
the replay harmless. Reading runs one batch ahead in a thread so the source's latency overlaps
with the database's work. Transient failures re-run the whole batch transaction with backoff.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import psycopg
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from etl import indexes, pg, state, units
from etl.errors import EtlError, Interrupted, PermanentError, is_transient
from etl.load import Loader
from etl.mapping import load_mapping
from etl.settings import Settings
from etl.sources import open_source
from etl.sources.prefetch import prefetch
from etl.state import Checkpoint, Counts
from etl.transform import EdgeLink, Reject, Row, Transformer, Unmapped

log = logging.getLogger("etl.migrate")

EXAMPLES_PER_REASON = 5


@dataclass
class CollectionResult:
    collection: str
    status: str = "pending"  # migrated | unmapped | interrupted | failed | pending
    source_count: int = 0
    counts: Counts = field(default_factory=Counts)
    by_type: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    batches: int = 0
    seconds: float = 0.0
    nbytes: int = 0
    reject_reasons: Counter = field(default_factory=Counter)
    reject_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unmapped_reasons: Counter = field(default_factory=Counter)
    unmapped_keys: list[str] = field(default_factory=list)
    dangling: Counter = field(default_factory=Counter)
    columns_filled: Counter = field(default_factory=Counter)
    extra_fields: Counter = field(default_factory=Counter)
    batch_stats: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def asdict(self) -> dict:
        loaded = self.counts.loaded
        return {
            "collection": self.collection,
            "status": self.status,
            "source_count": self.source_count,
            "counts": self.counts.asdict(),
            # None while the collection is incomplete (interrupted, failed, not reached)
            "balanced": (
                self.source_count == loaded + self.counts.rejected + self.counts.unmapped
                if self.status in ("migrated", "unmapped")
                else None
            ),
            "by_type": {k: v.asdict() for k, v in self.by_type.items()},
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "bytes": self.nbytes,
            "docs_per_second": round(self.counts.read / self.seconds, 1) if self.seconds else None,
            "rejects_by_reason": [
                {"reason": r, "count": n, "examples": self.reject_examples.get(r, [])}
                for r, n in self.reject_reasons.most_common()
            ],
            "unmapped_by_reason": [
                {"reason": r, "count": n} for r, n in self.unmapped_reasons.most_common()
            ],
            "unmapped_keys": self.unmapped_keys,
            "dangling_references": dict(self.dangling),
            "field_coverage": {
                "columns_filled": dict(self.columns_filled),
                "kept_in_metadata_extra": dict(self.extra_fields),
            },
            "batch_stats": self.batch_stats,
            "warnings": self.warnings,
        }


@dataclass
class RunSummary:
    run_id: str
    command: str
    dry_run: bool
    state: str
    started_at: str
    finished_at: str | None
    source: str
    target: str
    schema_version: str | None
    server_version: str | None
    mapping_version: str | None
    batch_size: int
    collections: list[CollectionResult]
    estimated_seconds: float | None = None
    error: str | None = None
    index_builds: list[dict] = field(default_factory=list)

    @property
    def has_findings(self) -> bool:
        return any(c.counts.rejected for c in self.collections)

    def asdict(self) -> dict:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "dry_run": self.dry_run,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "source": self.source,
            "target": self.target,
            "schema_version": self.schema_version,
            "server_version": self.server_version,
            "mapping_version": self.mapping_version,
            "batch_size": self.batch_size,
            "estimated_seconds": self.estimated_seconds,
            "error": self.error,
            "index_builds": self.index_builds,
            "collections": [c.asdict() for c in self.collections],
        }


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Migration:
    """One `etl migrate` run (or dry run). Use run() once."""

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
        on_progress: Callable[[str, int, int | None], None] | None = None,
        on_collection: Callable[[str, int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        retry_wait: Callable | None = None,
    ):
        self.settings = settings
        self.requested = collections or []
        self.all = all_
        self.source_spec = source
        self.batch_size = batch_size or settings.migrate.batch_size
        self.resume = resume
        self.dry_run = dry_run
        self.limit = limit
        self.since_key = since_key
        self.on_progress = on_progress or (lambda c, n, total: None)
        self.on_collection = on_collection or (lambda c, total: None)
        self.should_stop = should_stop
        self.retry_wait = retry_wait or wait_random_exponential(multiplier=0.5, max=20)
        self.mapping = load_mapping(settings.migrate.mapping)
        self._index_builder = None

    # -- set-up ----------------------------------------------------------------------------
    def _collections(self, source) -> list[str]:
        order = list(self.mapping.collections_in_order())
        if self.all:
            known = {c.name for c in source.collections()}
            names = [c for c in order if c in known]
            # collections the source has but the mapping does not name: reported as unmapped
            names += sorted(known - set(order))
            return names
        if not self.requested:
            raise PermanentError("name a collection (--collection NAME) or use --all")
        for name in self.requested:
            source.collection(name)  # PermanentError listing what exists
        # keep dependency order whatever order the flags came in
        rank = {c: i for i, c in enumerate(order)}
        return sorted(dict.fromkeys(self.requested), key=lambda c: rank.get(c, len(rank)))

    def _connect(self) -> psycopg.Connection:
        # synchronous_commit stays on: with it off, a server crash loses the last commits while
        # this process, which saw them succeed, reconnects and goes on after them: a checkpoint
        # ahead of its data (the soak's PostgreSQL restart -m immediate trial lost 2 batches).
        return pg.connect(self.dsn)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        self.dsn = pg.resolve_dsn(self.settings)
        conn = self._connect()
        state.require_schema(conn)
        run_id, checkpoints = self._run_identity(conn)
        self.run_id = run_id
        source = open_source(self.source_spec, self.settings)
        lock_conn = None
        summary = RunSummary(
            run_id=run_id,
            command="migrate",
            dry_run=self.dry_run,
            state="running",
            started_at=_now(),
            finished_at=None,
            source=source.description,
            target=pg.target_label(self.settings, self.dsn),
            schema_version=pg.schema_version(conn),
            server_version=pg.server_version(conn),
            mapping_version=str(self.mapping.version),
            batch_size=self.batch_size,
            collections=[],
        )
        conn.commit()
        try:
            names = self._collections(source)
            lock_conn = self._lock_collections(names)
            if not self.dry_run:
                state.start_run(
                    conn,
                    run_id,
                    "migrate",
                    source=source.description,
                    target=summary.target,
                    options=self._options(names),
                )
                conn.commit()
            tables = list(self._writers(names))  # every table this run writes
            if self.dry_run:
                # everything, index drops and builds included, inside one transaction rolled back
                with conn.transaction():
                    self._deferred = self._defer_indexes(conn, tables)
                    self._run_collections(conn, source, names, checkpoints, summary)
                    indexes.rebuild(conn)
                    raise psycopg.Rollback()
            else:
                indexes.rebuild(conn)  # what a crashed run left behind, before anything else
                self._deferred = self._defer_indexes(conn, tables)
                self._index_builder = (
                    indexes.BackgroundBuilder(self.dsn) if self._deferred else None
                )
                self._run_collections(conn, source, names, checkpoints, summary)
            summary.state = "finished"
        except Interrupted:
            summary.state = "interrupted"
            raise
        except EtlError as exc:
            summary.state = "failed"
            summary.error = str(exc)
            raise
        except BaseException as exc:
            summary.state = "failed"
            summary.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            # Without its locks (refused: another migrate runs) this process changed nothing and
            # must not: neither the other run's row (--resume names it) nor its deferred indexes.
            locked = lock_conn is not None
            if locked:
                conn = self._rebuild_indexes(conn, summary)
            summary.finished_at = _now()
            if self.dry_run:
                total_rate = _rate(summary)
                total_docs = sum(c.source_count for c in summary.collections)
                summary.estimated_seconds = (
                    round(total_docs / total_rate, 1) if total_rate else None
                )
            self.summary = summary
            if summary.collections:
                from etl.report import write_reports

                self.report_paths = write_reports(
                    summary.asdict(), self.settings.migrate.reports_dir
                )
            if locked:
                self._finish(conn, summary)
            else:
                conn.close()
            source.close()
            if lock_conn is not None:
                lock_conn.close()
        return summary

    def _rebuild_indexes(self, conn, summary: RunSummary):
        """Finished, failed or interrupted: the deferred indexes come back now (after a crash,
        at the start of the next run). Returns the connection to go on with."""
        if self.dry_run:
            return conn
        conn = getattr(self, "_conn", conn)
        built = self._index_builder.wait() if self._index_builder is not None else []
        try:
            if conn.broken or conn.closed:
                conn = self._connect()
            conn.rollback()
            built += indexes.rebuild(conn)
            summary.index_builds = [{"index": n, "seconds": round(t, 3)} for n, t in built]
        except psycopg.Error as exc:
            log.error(
                "could not build the deferred indexes (etl_deferred_indexes keeps them; the next "
                "etl migrate builds them): %s",
                exc,
            )
        return conn

    def _finish(self, conn, summary: RunSummary) -> None:
        if self.dry_run:
            conn.close()
            return
        try:
            if conn.broken or conn.closed:
                conn = self._connect()
            conn.rollback()
            paths = getattr(self, "report_paths", None)
            state.finish_run(
                conn,
                summary.run_id,
                summary.state,
                summary=_summary_counts(summary),
                error=summary.error,
                report_path=str(paths["json"]) if paths else None,
            )
            conn.commit()
        except psycopg.Error as exc:  # the report still gets written; the run stays resumable
            log.warning("could not record the end of run %s: %s", summary.run_id, exc)
        finally:
            conn.close()

    def _defer_indexes(self, conn, tables: list[str]) -> list[str]:
        if not self.settings.migrate.defer_indexes:
            return []
        return indexes.defer(conn, self.run_id, tables)

    def _run_identity(self, conn) -> tuple[str, dict[str, Checkpoint]]:
        if not self.resume:
            return state.new_run_id("dryrun" if self.dry_run else "migrate"), {}
        prev = state.latest_resumable_run(conn)
        conn.commit()
        if prev is None:
            raise PermanentError(
                "nothing to resume: no interrupted or failed migrate run",
                hint="start a new run without --resume",
            )
        opts = prev["options"] or {}
        if not self.requested and not self.all:
            self.requested = opts.get("collections", [])
        if self.source_spec == "arangodb" and opts.get("source_spec"):
            self.source_spec = opts["source_spec"]
        if opts.get("batch_size") and self.batch_size == self.settings.migrate.batch_size:
            self.batch_size = opts["batch_size"]
        cps = state.load_checkpoints(conn, prev["run_id"])
        conn.commit()
        log.info("resuming run %s (%s)", prev["run_id"], prev["state"])
        return prev["run_id"], cps

    def _options(self, names: list[str]) -> dict:
        return {
            "collections": names,
            "source_spec": self.source_spec,
            "batch_size": self.batch_size,
            "limit": self.limit,
            "since_key": self.since_key,
            "mapping": self.settings.migrate.mapping,
        }

    def _lock_collections(self, names: list[str]):
        """A session advisory lock per collection: a second migrate of the same collection
        refuses at once instead of interleaving checkpoints."""
        lock_conn = pg.connect(self.dsn, autocommit=True, application_name="etl-lock")
        for name in names:
            got = lock_conn.execute(
                "select pg_try_advisory_lock(hashtextextended(%s, 0))", (f"etl.migrate:{name}",)
            ).fetchone()[0]
            if not got:
                lock_conn.close()
                raise PermanentError(
                    f"another etl migrate is running on collection {name!r}",
                    hint="wait for it to finish (etl status shows it)",
                )
        return lock_conn

    def _writers(self, names: list[str]) -> dict[str, str]:
        """table -> the last collection of this run that writes it (edges update research)."""
        last = {}
        for name in names:
            cm = self.mapping.for_collection(name)
            if cm is None:
                continue
            for target in cm.targets():
                last[target.table] = name
            if cm.edge is not None:
                last[self.mapping.table(cm.edge.to_document_type)] = name
        return last

    def _run_collections(self, conn, source, names, checkpoints, summary: RunSummary) -> None:
        writers = self._writers(names)
        for name in names:
            # a retried batch may have replaced the connection: go on with the current one
            self._migrate_one(getattr(self, "_conn", conn), source, name, checkpoints, summary)
            done_tables = [t for t, last in writers.items() if last == name]
            if self._index_builder is not None and done_tables and getattr(self, "_deferred", None):
                self._index_builder.submit(done_tables)

    def _migrate_one(self, conn, source, name, checkpoints, summary: RunSummary) -> None:
        result = CollectionResult(name)
        summary.collections.append(result)
        mapped = self.mapping.for_collection(name) is not None
        info = source.collection(name)
        result.source_count = info.count
        if not mapped:
            result.status = "unmapped"
            result.counts.unmapped = info.count
            result.unmapped_reasons["not migrated (no mapping)"] = info.count
            return
        cp = checkpoints.get(name) or Checkpoint(name)
        if cp.done:
            result.status = "migrated"
            result.counts = cp.counts
            result.batches = cp.batches
            return
        if cp.position is None and self.since_key is not None:
            cp.position = self.since_key
        self._migrate_collection(conn, source, name, cp, result)

    def _migrate_collection(
        self, conn, source, name: str, cp: Checkpoint, result: CollectionResult
    ):
        self._conn = conn
        transformer = Transformer(self.mapping, self.run_id, _now())
        result.counts = Counts(**vars(cp.counts))
        result.batches = cp.batches
        self.on_collection(name, result.source_count)
        self.on_progress(name, result.counts.read, result.source_count)
        remaining_limit = self.limit
        until = getattr(cp, "until", None)
        batches = (
            source.batches(name, self.batch_size, after=cp.position)
            if until is None
            else source.batches(name, self.batch_size, after=cp.position, until=until)
        )
        loader = Loader(conn, self.run_id)
        t_collection = last_done = time.perf_counter()
        # Batch N+1 is transformed here while one committer thread loads batch N: psycopg
        # releases the GIL while PostgreSQL works. One committer keeps checkpoints in order; a
        # transformed batch that was never submitted is simply read again on resume.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-commit") as committer:
            in_flight = None
            for batch in prefetch(batches):
                docs = batch.docs
                if remaining_limit is not None:
                    docs = docs[:remaining_limit]
                    remaining_limit -= len(docs)
                started = datetime.now(UTC)
                t0 = time.perf_counter()
                outcome = self._transform(transformer, name, docs, result)
                if in_flight is not None:
                    conn, loader, last_done = self._absorb(in_flight, name, result, last_done)
                    in_flight = None
                    self._stop_if_requested(name, cp, result)
                in_flight = (
                    committer.submit(
                        self._commit_batch,
                        conn,
                        loader,
                        name,
                        batch,
                        cp,
                        outcome,
                        started,
                        t0,
                        result,
                    ),
                    batch,
                    len(docs),
                )
                if remaining_limit is not None and remaining_limit <= 0:
                    break
            if in_flight is not None:
                conn, loader, last_done = self._absorb(in_flight, name, result, last_done)
                self._stop_if_requested(name, cp, result)
        if not isinstance(
            cp, units.UnitCheckpoint
        ):  # a range unit leaves this to its 'finish' unit
            self.relink_forward_refs(name, result)
        result.seconds += time.perf_counter() - t_collection
        if not self.dry_run and (remaining_limit is None or remaining_limit > 0):
            cp.done = True
            cp.counts = result.counts

            def mark_done(c):
                with c.transaction():
                    self._save_checkpoint(c, cp)

            self._retrying(mark_done, self._conn)
        result.status = "migrated"

    def _save_checkpoint(self, c, cp: Checkpoint) -> None:
        if isinstance(cp, units.UnitCheckpoint):
            units.hold(c, cp, self.run_id)
            units.save(c, self.run_id, cp)
        else:
            state.save_checkpoint(c, self.run_id, cp)

    def relink_forward_refs(self, name: str, result: CollectionResult) -> None:
        """References to a parent that came later in the collection, set now (own transaction)."""

        def relink(c):
            with c.transaction():
                return self.relink_pending(c, name)

        count_relinked(result, self._retrying(relink, self._conn))

    def relink_pending(self, c, name: str) -> dict[str, int]:
        """In the caller's transaction: set the references to a parent that was not loaded yet
        when its child was (later in the stream, or in another worker's range), as the batches
        kept them in etl_pending_links; then forget them. Returns links set per document type."""
        cm = self.mapping.for_collection(name)
        linked: dict[str, int] = {}
        for document_type in sorted({t.document_type for t in cm.targets()} if cm else ()):
            table = self.mapping.table(document_type)
            refs = c.execute(
                "select child_id::text, parent_id::text from etl_pending_links"
                " where run_id = %s and table_name = %s",
                (self.run_id, table),
            ).fetchall()
            if not refs:
                continue
            linked[document_type] = Loader(c, self.run_id).relink_parents(table, refs)
            c.execute(
                "delete from etl_pending_links where run_id = %s and table_name = %s",
                (self.run_id, table),
            )
            log.info(
                "%s: linked %d of %d references to parents that came later",
                name,
                linked[document_type],
                len(refs),
            )
        return linked

    def _absorb(self, in_flight, name: str, result: CollectionResult, last_done: float):
        """Wait for the batch being committed; fold its counts into the result."""
        future, batch, ndocs = in_flight
        batch_counts, conn, loader = future.result()  # re-raises the commit's error here
        now = time.perf_counter()
        result.counts.add(batch_counts)
        result.batches += 1
        result.nbytes += batch.nbytes
        result.warnings.extend(batch.warnings)
        # seconds between two committed batches: the pipeline's throughput, as the chart shows it
        result.batch_stats.append(
            {
                "seq": result.batches,
                "docs": ndocs,
                "bytes": batch.nbytes,
                "seconds": round(now - last_done, 4),
            }
        )
        self.on_progress(name, result.counts.read, result.source_count)
        return conn, loader, now

    def _stop_if_requested(self, name: str, cp: Checkpoint, result: CollectionResult) -> None:
        if self.should_stop():
            result.status = "interrupted"
            raise Interrupted(
                f"stopped after batch {cp.batches} of {name}; run {self.run_id} is resumable",
                hint="continue with `etl migrate --resume`",
            )

    def _transform(self, transformer, name, docs, result: CollectionResult):
        rows: dict[str, list[Row]] = defaultdict(list)
        edges: list[EdgeLink] = []
        rejects: list[tuple] = []  # (collection, key, doc, reason, stage)
        for doc in docs:
            out = transformer.transform(name, doc)
            if isinstance(out, Row):
                rows[out.document_type].append(out)
                # field coverage: which columns got a value, which attributes went to extra
                result.columns_filled.update(k for k, v in out.values.items() if v is not None)
                extra = (out.values.get("metadata") or {}).get("extra") or {}
                result.extra_fields.update(extra.keys())
            elif isinstance(out, EdgeLink):
                edges.append(out)
            elif isinstance(out, Reject):
                rejects.append((name, out.key, doc, out.reason, "transform"))
            elif isinstance(out, Unmapped):
                rejects.append((name, out.key, doc, out.reason, "unmapped"))
        return rows, edges, rejects

    def _commit_batch(
        self, conn, loader, name, batch, cp: Checkpoint, outcome, started, t0, result
    ):
        """Load one batch and its bookkeeping in one transaction, retried as a whole."""
        rows, edges, transform_rejects = outcome
        docs_by_key = {d.get("_key"): d for d in batch.docs if isinstance(d, dict)}

        def attempt(c):
            nonlocal loader
            if loader.conn is not c:
                loader = Loader(c, self.run_id)
            counts = Counts()
            by_type: dict[str, Counts] = {}
            rejects = list(transform_rejects)
            with c.transaction():  # a savepoint of the run-wide transaction in a dry run
                if isinstance(cp, units.UnitCheckpoint) and not self.dry_run:
                    units.hold(c, cp, self.run_id)  # first: the unit row stays locked until commit
                c.execute("select set_config('etl.run_id', %s, true)", (self.run_id,))
                for document_type, typed_rows in rows.items():
                    lo = loader.load(document_type, typed_rows)
                    tc = Counts(
                        read=len(typed_rows),
                        inserted=lo.inserted,
                        updated=lo.updated,
                        unchanged=lo.unchanged - len(lo.rejected),
                        rejected=len(lo.rejected),
                        dangling=lo.dangling,
                    )
                    counts.add(tc)
                    by_type[document_type] = tc
                    for row, reason in lo.rejected:
                        rejects.append(
                            (name, row.key, docs_by_key.get(row.key, row.values), reason, "load")
                        )
                    if lo.forward_refs:
                        _keep_pending_links(
                            c, self.run_id, self.mapping.table(document_type), lo.forward_refs
                        )
                if edges:
                    lk = loader.link_edges(edges)
                    tc = Counts(
                        read=len(edges),
                        updated=lk.linked,
                        unchanged=lk.unchanged,
                        rejected=len(lk.dangling),
                    )
                    counts.add(tc)
                    by_type["edge"] = tc
                    for link in lk.dangling:
                        rejects.append(
                            (
                                name,
                                link.key,
                                docs_by_key.get(link.key, link.edge),
                                "dangling_edge: an end of the edge is not in the target",
                                "link",
                            )
                        )
                n_rejected = sum(1 for r in transform_rejects if r[4] == "transform")
                n_unmapped = len(transform_rejects) - n_rejected
                counts.add(
                    Counts(read=len(transform_rejects), rejected=n_rejected, unmapped=n_unmapped)
                )
                state.write_rejects(c, self.run_id, rejects)
                new_cp = replace(
                    cp,
                    position=batch.position,
                    done=False,
                    batches=cp.batches + 1,
                    counts=Counts(**vars(cp.counts)),
                )
                new_cp.counts.add(counts)
                if not self.dry_run:
                    self._save_checkpoint(c, new_cp)
                    state.record_batch(
                        c,
                        self.run_id,
                        name,
                        new_cp.batches,
                        counts.read,
                        batch.nbytes,
                        started,
                        time.perf_counter() - t0,
                        unit=getattr(cp, "unit_id", None),
                    )
            return counts, by_type, rejects, new_cp

        counts, by_type, rejects, new_cp = self._retrying(attempt, conn)
        cp.position, cp.batches, cp.counts = new_cp.position, new_cp.batches, new_cp.counts
        for document_type, tc in by_type.items():
            result.by_type[document_type].add(tc)
        _record_findings(result, rejects)
        return counts, self._conn, loader

    def _retrying(self, fn, conn):
        """Run fn(conn) in a transaction; on a transient error reconnect and try again."""
        self._conn = conn
        for attempt in Retrying(
            retry=retry_if_exception(is_transient),
            # a dry run cannot reconnect: its run-wide transaction would be lost
            stop=stop_after_attempt(1 if self.dry_run else self.settings.postgres.retry_attempts),
            wait=self.retry_wait,
            reraise=True,
            before_sleep=_log_retry,
        ):
            with attempt:
                if self._conn.closed or self._conn.broken:
                    # no statement here: on this (non-autocommit) connection it would open a
                    # transaction, and fn's transaction() would then be a mere savepoint of it,
                    # never committed
                    self._conn = self._connect()
                return fn(self._conn)


def count_relinked(result: CollectionResult, linked: dict[str, int]) -> None:
    """Links set after the fact are no longer dangling."""
    for document_type, n in linked.items():
        result.counts.dangling -= n
        result.by_type[document_type].dangling -= n


def _keep_pending_links(c, run_id: str, table: str, refs) -> None:
    with c.cursor() as cur:
        cur.executemany(
            "insert into etl_pending_links (run_id, table_name, child_id, parent_id)"
            " values (%s, %s, %s, %s) on conflict (run_id, table_name, child_id)"
            " do update set parent_id = excluded.parent_id",
            [(run_id, table, child, parent) for child, parent in refs],
        )


def _record_findings(result: CollectionResult, rejects) -> None:
    for _col, key, _doc, reason, stage in rejects:
        if stage == "unmapped":
            result.unmapped_reasons[reason] += 1
            if len(result.unmapped_keys) < 1000:
                result.unmapped_keys.append(key)
        else:
            code = reason.split(":", 1)[0]
            result.reject_reasons[code] += 1
            examples = result.reject_examples[code]
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append(f"{key}: {reason}")


def _log_retry(retry_state) -> None:
    exc = retry_state.outcome.exception()
    log.warning(
        "transient error, attempt %d failed, retrying in %.1fs: %s",
        retry_state.attempt_number,
        retry_state.next_action.sleep if retry_state.next_action else 0,
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )


def _rate(summary: RunSummary) -> float:
    docs = sum(c.counts.read for c in summary.collections)
    secs = sum(c.seconds for c in summary.collections)
    return docs / secs if secs else 0.0


def _summary_counts(summary: RunSummary) -> dict:
    return {
        c.collection: {"status": c.status, "source_count": c.source_count, **c.counts.asdict()}
        for c in summary.collections
    }
