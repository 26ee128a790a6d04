"""The engine every run uses: read a key range, transform, load, checkpoint; one committed
transaction per batch, and the one place where a batch's counts are made.

A single migrate, a parallel worker's range unit and (later) change capture all call
`Pipeline.load_range()` with a checkpoint store that says where the range's position lives.
See docs/design.md ("The pipeline") for the transaction and crash guarantees.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from tenacity import RetryCallState

from etl import derived, links, state
from etl.errors import Interrupted
from etl.fastpath import FastPath, lever_on, lz4_available
from etl.generic import load as generic_load
from etl.load import DANGLING_EDGE, LinkOutcome, Loader, LoadOutcome
from etl.mapping import Mapping
from etl.results import (
    CollectionResult,
    count_relinked,
    now_iso,
    record_edge_ends,
    record_findings,
)
from etl.settings import Settings
from etl.sources.base import Batch, Source
from etl.sources.prefetch import prefetch
from etl.state import Checkpoint, Counts
from etl.transform import EdgeLink, Reject, Row, Transformer, Unmapped, not_a_row
from etl.writer import Writer

log = logging.getLogger("etl.pipeline")


class CheckpointStore(Protocol):
    """Where one range's position and counts are kept: a collection's etl_checkpoints row
    (state.CollectionCheckpoints) or a parallel run's unit row (units.UnitCheckpoints)."""

    # read-only (properties): a store may narrow them (a unit's unit_id is always an int)
    @property
    def until(self) -> str | None:
        """The range's last key, None: to the end of the collection."""

    @property
    def unit_id(self) -> int | None:
        """Recorded with each batch of a parallel run."""

    @property
    def ends_collection(self) -> bool:
        """The end of this range is the end of its collection."""

    def take(self, conn: psycopg.Connection) -> None:
        """First statement of every batch transaction (a unit re-takes its lease here)."""

    def save(self, conn: psycopg.Connection, cp: Checkpoint) -> None:
        """The range's checkpoint, in the batch's transaction."""


# a document that is no row: (collection, key, document, reason, stage transform|unmapped|load|link)
NotRow = tuple[str, str | None, Any, str, str]
# what a committed batch reports: counts, counts per document type, rejects, generic edge ends
BatchResult = tuple[Counts, dict[str, Counts], list[NotRow], list[dict[str, Any]]]


@dataclass
class Transformed:
    """One batch after the transform: rows per document type, edges, and the documents that
    are not rows (collection, key, document, reason, stage transform|unmapped)."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    edges: list[EdgeLink] = field(default_factory=list)
    not_rows: list[NotRow] = field(default_factory=list)

    @property
    def ndocs(self) -> int:
        return sum(map(len, self.rows.values())) + len(self.edges) + len(self.not_rows)


def batch_counts(
    t: Transformed, loads: dict[str, LoadOutcome], link: LinkOutcome | None
) -> tuple[Counts, dict[str, Counts]]:
    """The counts of one committed batch, total and per document type ('edge' for edges).

    Every document read is exactly one of inserted, updated, unchanged (a row already
    identical, or an earlier copy of a key the same batch repeats), rejected (by the transform,
    by PostgreSQL, or an edge whose ends are missing) or unmapped; this is checked here."""
    by_type: dict[str, Counts] = {}
    for document_type, lo in loads.items():
        by_type[document_type] = Counts(
            read=len(t.rows[document_type]),
            inserted=lo.inserted,
            updated=lo.updated,
            unchanged=lo.unchanged,  # the loader's count already leaves out its rejects
            rejected=len(lo.rejected),
            dangling=lo.dangling,
        )
    if link is not None:
        by_type["edge"] = Counts(
            read=len(t.edges),
            inserted=link.new,
            updated=link.linked - link.new,
            unchanged=link.unchanged,
            rejected=len(link.dangling),
        )
    total = Counts()
    for c in by_type.values():
        total.add(c)
    n_unmapped = sum(1 for r in t.not_rows if r[4] == "unmapped")
    total.add(
        Counts(read=len(t.not_rows), rejected=len(t.not_rows) - n_unmapped, unmapped=n_unmapped)
    )
    for what, c in [("batch", total), *by_type.items()]:
        if c.read != c.loaded + c.rejected + c.unmapped or min(vars(c).values()) < 0:
            raise AssertionError(f"unbalanced counts for {what}: {c.asdict()}")
    if total.read != t.ndocs:
        raise AssertionError(f"batch counts read {total.read} of {t.ndocs} documents")
    return total, by_type


class Pipeline:
    """Loads key ranges of collections into the target through one working connection."""

    def __init__(
        self,
        settings: Settings,
        mapping: Mapping,
        run_id: str,
        dsn: str,
        *,
        batch_size: int,
        dry_run: bool = False,
        on_progress: Callable[[str, int, int | None], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        retry_wait: Callable[[RetryCallState], float] | None = None,
    ) -> None:
        self.settings = settings
        self.mapping = mapping
        self.run_id = run_id
        self.dsn = dsn
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.on_progress = on_progress or (lambda c, n, total: None)
        self.should_stop = should_stop
        self.retry_wait = retry_wait
        attempts = 1 if dry_run else settings.postgres.retry_attempts
        self.writer = Writer(dsn, attempts, retry_wait)
        # document types whose tables were empty when the run started (etl/fastpath.py)
        self.fast: FastPath | None = None
        self._lz4: bool | None = None  # known at the first batch
        # False when the run starts after a key (--since-key): it does not read every key, so
        # it cannot tell which earlier rejects are of removed documents
        self.whole_collection = True
        # document types holding a column an edge sets (etl/derived.py recomputes it)
        self._edge_set_types = {
            cm.edge.to_document_type for cm in mapping.collections.values() if cm.edge
        }

    def _batch_settings(self, c: psycopg.Connection) -> str:
        """The statement that opens each batch transaction: the run id for the audit triggers
        and, where the server has it, lz4 for the TOAST compression of the rows it writes
        (SET LOCAL: nothing outlives the transaction, as PgBouncer needs)."""
        if self._lz4 is None:
            self._lz4 = lever_on("lz4") and lz4_available(c)
        lz4 = ", set_config('default_toast_compression', 'lz4', true)" if self._lz4 else ""
        return f"select set_config('etl.run_id', %s, true){lz4}"

    # -- the working connection --------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection:
        """The connection batches commit on (the Writer's); a new one when the last was lost."""
        return self.writer.conn

    def close(self) -> None:
        self.writer.close()

    def retrying(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """fn(conn), again on a new connection after a transient error. A dry run is one
        transaction on one connection: it is not retried."""
        return self.writer.retrying(fn)

    def in_transaction(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """fn(conn) inside one transaction, retried as a whole."""
        return self.writer.in_transaction(fn)

    # -- one key range -----------------------------------------------------------------------
    def load_range(
        self,
        source: Source,
        collection: str,
        store: CheckpointStore,
        cp: Checkpoint,
        result: CollectionResult,
        *,
        limit: int | None = None,
    ) -> None:
        """Read (cp.position, store.until] of `collection` in batches and load them; each
        batch commits its rows, rejects, timing and new checkpoint together. At the end the
        range is marked done (with the collection's late parent links when the store ends
        the collection). Ctrl-C stops after the batch in flight (Interrupted)."""
        transformer = Transformer(self.mapping, self.run_id, now_iso())
        result.counts = Counts(**vars(cp.counts))
        result.batches = cp.batches
        self.on_progress(collection, result.counts.read, result.source_count)
        remaining = limit
        batches = source.batches(
            collection,
            self.batch_size,
            after=cp.position,
            until=store.until,
            max_bytes=(self.settings.migrate.batch_bytes if lever_on("batch_bytes") else 0) or None,
        )
        t_range = last_done = time.perf_counter()
        # Batch N+1 is transformed here while one committer thread loads batch N: psycopg
        # releases the GIL while PostgreSQL works. One committer keeps checkpoints in order; a
        # transformed batch that was never submitted is simply read again on resume.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-commit") as committer:
            in_flight = None
            for batch in prefetch(batches):
                docs = batch.docs
                if remaining is not None:
                    docs = docs[:remaining]
                    remaining -= len(docs)
                started = datetime.now(UTC)
                t0 = time.perf_counter()
                transformed = self._transform(transformer, collection, docs, result)
                if in_flight is not None:
                    last_done = self._absorb(in_flight, collection, result, last_done)
                    in_flight = None
                    self._stop_if_requested(collection, cp, result)
                future = committer.submit(
                    self._commit_batch, collection, batch, docs, store, cp, transformed, started, t0
                )
                in_flight = (future, batch, len(docs))
                if remaining is not None and remaining <= 0:
                    break
            if in_flight is not None:
                last_done = self._absorb(in_flight, collection, result, last_done)
                self._stop_if_requested(collection, cp, result)
        result.seconds += time.perf_counter() - t_range
        # cut short by --limit: the range stays open (a later run goes on from its position)
        self._complete(collection, store, cp, result, done=remaining is None or remaining > 0)
        result.status = "migrated"

    def _complete(
        self,
        collection: str,
        store: CheckpointStore,
        cp: Checkpoint,
        result: CollectionResult,
        done: bool,
    ) -> None:
        """One transaction: the late parent links to the collection's rows (when this range
        ends it; etl/links.py) and the range marked done."""

        def attempt(c: psycopg.Connection) -> dict[str, int]:
            own = self.link_late_parents(c, collection) if store.ends_collection else {}
            if done and store.ends_collection and self.whole_collection and not self.dry_run:
                state.forget_stale_rejects(c, self.run_id, collection)
            if done and not self.dry_run:
                store.take(c)
                final = replace(cp, done=True, counts=Counts(**vars(result.counts)))
                final.counts.dangling -= sum(own.values())
                store.save(c, final)
            return own

        count_relinked(result, self.in_transaction(attempt))
        if done:
            cp.done, cp.counts = True, result.counts

    def link_late_parents(self, c: psycopg.Connection, collection: str) -> dict[str, int]:
        """In the caller's transaction, at the end of a pass over `collection`: set the
        references to its rows that were not there when the rows naming them loaded (later in
        the stream, in another worker's range, or a parent collection copied after its
        children; etl/links.py). Returns, per document type, the links of the collection's own
        rows: references this run counted dangling and no longer are (links of other
        collections' rows were counted by the runs that loaded them)."""
        linked = links.link_arrived(c, self.mapping, self.run_id, {collection: None})
        return {dt: n for (coll, dt), n in linked.items() if coll == collection}

    # -- one batch ---------------------------------------------------------------------------
    def _transform(
        self,
        transformer: Transformer,
        collection: str,
        docs: list[dict[str, Any]],
        result: CollectionResult,
    ) -> Transformed:
        out = Transformed()
        for doc in docs:
            t = transformer.transform(collection, doc)
            if isinstance(t, Row):
                out.rows[t.document_type].append(t)
                # field coverage: which columns got a value, which attributes went to extra
                result.columns_filled.update(k for k, v in t.values.items() if v is not None)
                extra = (t.values.get("metadata") or {}).get("extra") or {}
                result.extra_fields.update(extra.keys())
            elif isinstance(t, EdgeLink):
                out.edges.append(t)
            elif isinstance(t, (Reject, Unmapped)):
                out.not_rows.append(not_a_row(collection, doc, t))
        return out

    def _commit_batch(
        self,
        collection: str,
        batch: Batch,
        docs: list[dict[str, Any]],
        store: CheckpointStore,
        cp: Checkpoint,
        t: Transformed,
        started: datetime,
        t0: float,
    ) -> BatchResult:
        """Load one batch and its bookkeeping in one transaction, retried as a whole.
        Returns (counts, per-type counts, rejects, generic edge ends) once committed; cp then
        holds the new position."""
        docs_by_key = {d.get("_key"): d for d in docs if isinstance(d, dict)}
        cm = self.mapping.for_collection(collection)
        generic_edge = cm is not None and cm.generic is not None and cm.generic.edge

        def attempt(
            c: psycopg.Connection,
        ) -> tuple[Counts, dict[str, Counts], list[NotRow], list[dict[str, Any]], Checkpoint]:
            loader = Loader(c, self.run_id)
            rejects = list(t.not_rows)
            ends: list[dict[str, Any]] = []  # generic edges: ends the target does not hold
            loads: dict[str, LoadOutcome] = {}
            link = None
            if not self.dry_run:
                store.take(c)  # first: a unit's row stays locked until the commit
            c.execute(self._batch_settings(c), (self.run_id,))
            for document_type, rows in t.rows.items():
                if self.fast is not None and self.fast.applies(document_type):
                    lo = self.fast.load(loader, document_type, rows)
                else:
                    lo = loader.load(document_type, rows)
                loads[document_type] = lo
                if document_type in self._edge_set_types:  # the column an edge sets: one rule
                    refused = {id(row) for row, _ in lo.rejected}
                    derived.refresh_rows(
                        c,
                        self.mapping,
                        document_type,
                        [r.values["id"] for r in rows if id(r) not in refused],
                    )
                for row, reason in lo.rejected:
                    doc = docs_by_key.get(row.key, row.values)
                    rejects.append((collection, row.key, doc, reason, "load"))
                if generic_edge:  # loaded as they are; an end the target lacks is counted
                    refused = {id(row) for row, _ in lo.rejected}
                    loaded = [r for r in rows if id(r) not in refused]
                    mine = generic_load.edge_ends(c, self.mapping, loaded)
                    lo.dangling = len({e["key"] for e in mine if e["problem"] == "dangling"})
                    ends += mine
            if t.edges:
                es = derived.edge_set_for(self.mapping, collection)
                assert es is not None  # an EdgeLink comes only from an edge collection
                link = loader.link_edges(t.edges, es)
                for e in link.dangling:
                    doc = docs_by_key.get(e.key, e.edge)
                    rejects.append((collection, e.key, doc, DANGLING_EDGE, "link"))
            counts, by_type = batch_counts(t, loads, link)
            first: state.FirstSeen = {}
            if not self.dry_run:  # only live rejects: a key read again loses its old ones
                keys = [d.get("_key") for d in docs_by_key.values()]
                first = state.forget_rejects(c, collection, keys)
            state.write_rejects(c, self.run_id, rejects, first)
            new_cp = replace(cp, position=batch.position, done=False, batches=cp.batches + 1)
            new_cp.counts = Counts(**vars(cp.counts))
            new_cp.counts.add(counts)
            if not self.dry_run:
                store.save(c, new_cp)
                state.record_batch(
                    c,
                    self.run_id,
                    collection,
                    new_cp.batches,
                    counts.read,
                    batch.nbytes,
                    started,
                    time.perf_counter() - t0,
                    unit=store.unit_id,
                )
            return counts, by_type, rejects, ends, new_cp

        counts, by_type, rejects, ends, new_cp = self.in_transaction(attempt)
        cp.position, cp.batches, cp.counts = new_cp.position, new_cp.batches, new_cp.counts
        return counts, by_type, rejects, ends

    def _absorb(
        self,
        in_flight: tuple[Future[BatchResult], Batch, int],
        collection: str,
        result: CollectionResult,
        last_done: float,
    ) -> float:
        """Wait for the batch being committed; fold its counts and findings into the result."""
        future, batch, ndocs = in_flight
        counts, by_type, rejects, ends = future.result()  # re-raises the commit's error here
        now = time.perf_counter()
        result.counts.add(counts)
        for document_type, c in by_type.items():
            result.by_type[document_type].add(c)
        record_findings(result, rejects)
        record_edge_ends(result, ends)
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
        self.on_progress(collection, result.counts.read, result.source_count)
        return now

    def _stop_if_requested(self, collection: str, cp: Checkpoint, result: CollectionResult) -> None:
        if self.should_stop():
            result.status = "interrupted"
            raise Interrupted(
                f"stopped after batch {cp.batches} of {collection}; run {self.run_id} is resumable",
                hint="continue with `etl migrate --resume`",
            )
