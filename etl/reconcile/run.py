"""`etl reconcile`: prove the target holds exactly what the source says, and name every difference.

Per collection of the mapping, in dependency order (referenced collections first):

Counts. source count = loaded + rejected + unmapped, per collection and document type. `loaded`
is what the target holds for the collection (rows whose metadata.arango.collection is it;
rows of the table with no or a foreign arango collection are counted, and reported as extra,
under the first collection that feeds the table); `rejected` = documents the transform rejects
now + Rows whose key the database refused at load time (etl_rejects stage 'load', key not in the
target) + edges whose ends are not in the target; `unmapped` = the transform's Unmapped, or the
whole collection when the mapping does not migrate it.

Content. Each source document is transformed again (etl.transform, the same code migrate uses)
and its *compare object* is digested: the canonical row with
  - metadata without 'etl' (run id, time) and 'edges' (the job_research check covers those),
  - timestamps as to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  - the merge core's defaults for NULL columns (read from the catalog, as sql/007 does; the
    resume filename 'unknown'); a NULL column whose default is volatile (created_at now()) is
    compared as the marker "(table default)" on both sides: the ids are sent to the server,
  - references (resume_id, job_id, parent_optimization_id) NULL when the referenced document
    is not a loaded row of the source (the core nulls those: counted as dangling),
  - for a column an edge collection sets (research job_id), the column only when the document
    has its own reference attribute (metadata.extra.job_id); the edge check covers the rest.
The server computes the same object from the stored row (jsonb_build_object(...)::text) and the
same digest (etl.canonical.digest_sql). Python's text equals the server's byte for byte
(etl.canonical), so equal rows have equal digests.

Key ranges. Rows are bucketed by the first 3 hex digits of their id (4096 buckets; the id is
uuid5 of "<collection>/<_key>", which both sides know). Python streams the source and keeps only
(count, sum of digests mod 2^64) per bucket; the server returns the same per bucket in one
GROUP BY. Equal buckets are settled. For unequal ones (the drill-down, as data-diff bisects
mismatching segments), the server returns each row's digest in those buckets (index range
scans on the primary key), a second pass over the source compares row by row, and only rows
whose digests differ are fetched whole and compared field by field: missing keys (source, not
target, not rejected), extra keys (target, not source) and differing keys with every differing
column and, inside parsed_data/metadata, the JSON paths (parsed_data.work_experience[0].company).

Edges. Each job_research edge (kind = edge in the mapping) is expected in its research row's
metadata.edges[<edge key>] (equal to the edge document) and that row's job_id equal to the
edge's _from. When several edges point at one row, the last one read is expected to have set
job_id; the loader applies them per batch, the greatest key winning within one batch, so the
two can disagree only for several edges to one row inside one batch in descending key order.
Same buckets (by the research row id), same drill-down.

Sampling. `sample=P` checks only the keys whose id falls in a random P% of the buckets
(random.Random(seed); the seed is in the report); documents outside them are not transformed.
Existence of referenced documents is then taken from the source keys without transforming them.

Workers. `workers=N` (etl reconcile --workers N) runs pass 1 of a document collection (the
transform and the digest of every source document: the CPU-heavy part) in N processes, one key
range at a time. The ranges come from the source's own key order (ArangoSource.split_points: AQL
over the primary index; keys are never compared in Python): up to 2N ranges per collection, at
least RANGE_MIN_DOCS documents each, so a small collection stays one range. Each range yields a
_Pass1 (counts and digest sums per bucket and type, ids of the rows, masks, dangling counts,
reject reasons, documents neither loaded nor kept, and the rows that reference this same
collection, whose compare needs every id of it); the parent adds them up in range order (sums
are additive mod 2^64, and the ranges' concatenation is the full key order, so every list and
every dict's order is the one workers=1 gives), finishes the deferred rows, then does the
server side and the drill-down itself, as with one worker. The children are forked (Linux;
multiprocessing 'fork' context) after the parent has filled what they read: self.exists (the ids
of referenced collections), the load-rejected and recorded key sets, the type specs; they see
those without a copy (copy-on-write). A child never touches the parent's PostgreSQL connection
or source: it opens its own source (open_source) and only reads it. A child's exception reaches
the parent as the same exception (an EtlError keeps its class and its one-line message); a child
that dies (killed, out of memory) fails the run with an EtlError; the remaining children are
killed. Sources without key ranges (dumps, jsonl) read each collection in one process, as
workers=1 does (logged once). _ensure_exists (ids of a referenced collection that this run does
not reconcile) is split the same way. Edge collections and the drill-down's second pass (which
transforms only the documents of mismatching buckets) stay in the parent process.

Writes. An etl_runs row (command 'reconcile'; summary jsonb {collection: {status: match |
differences | unmapped, differences: n, ...}}, which `etl status` shows), and in
document_audit_log (action 'reconcile', run_id): one summary entry per collection and document
type with document_id = the nil uuid (00000000-0000-0000-0000-000000000000) and the counts in
`changes`, plus one entry per finding (missing, extra, differing) with document_id = the row id
and the finding in `changes`. Reports reports/<run id>.{json,md} list every finding.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from etl import pg, state
from etl.canonical import canonical, digest, loads_exact
from etl.errors import EtlError, PermanentError
from etl.mapping import CollectionMapping, load_mapping
from etl.mapping import table as table_of
from etl.reconcile.audit import run_summary, write_audit
from etl.reconcile.buckets import (
    MOD,
    N_BUCKETS,
    bucket_join,
    bucket_of,
    bucket_sql,
    collection_scope,
    differing_buckets,
    in_sample,
    sample_buckets,
    server_buckets,
    server_compare_texts,
    server_row_digests,
)
from etl.reconcile.compare import (
    create_mask_table,
    diff_paths,
    digest_of,
    store_masks,
    type_specs,
)
from etl.reconcile.rejects import (
    LOAD_REFUSED,
    count_not_a_row,
    load_rejected_keys,
    recorded_keys,
    target_of,
    unrecorded,
)
from etl.reconcile.report import write_reports
from etl.reconcile.results import CollectionReconcile, ReconcileSummary, TypeCounts, utc_now
from etl.reconcile.workers import CollectionReader
from etl.settings import Settings
from etl.sources import open_source
from etl.transform import EdgeLink, Reject, Row, Transformer, Unmapped, row_id

log = logging.getLogger("etl.reconcile")

# -- pass 1 ------------------------------------------------------------------------------------


@dataclass
class _Pass1:
    """What pass 1 learns from one run of source documents (a key range, or the whole collection).
    Partials add up (merge, in key order) to what one pass over the collection gives."""

    read: int = 0  # documents read
    checked: int = 0
    rejected: int = 0
    unmapped: int = 0
    by_type: dict[str, TypeCounts] = field(
        default_factory=lambda: defaultdict(TypeCounts)
    )  # source_rows, rejected
    counts: dict[str, list[int]] = field(default_factory=dict)  # type -> documents per bucket
    sums: dict[str, list[int]] = field(
        default_factory=dict
    )  # type -> digest sum per bucket (mod 2^64)
    ids: dict[str, bytearray] = field(
        default_factory=lambda: defaultdict(bytearray)
    )  # type -> 16-byte ids
    masks: list[tuple[str, str]] = field(
        default_factory=list
    )  # (row id, column) compared as DEFAULT_MARK
    masked: dict[str, set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )  # table -> masked columns
    dangling: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reject_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missing: list[dict] = field(default_factory=list)  # neither loaded nor in etl_rejects
    deferred: list[tuple[str, int, dict]] = field(
        default_factory=list
    )  # rows referencing this collection

    def merge(self, other: _Pass1) -> None:
        self.read += other.read
        self.checked += other.checked
        self.rejected += other.rejected
        self.unmapped += other.unmapped
        for dt, tc in other.by_type.items():
            mine = self.by_type[dt]
            mine.source_rows += tc.source_rows
            mine.rejected += tc.rejected
        for dt, counts in other.counts.items():
            if dt not in self.counts:
                self.counts[dt], self.sums[dt] = list(counts), list(other.sums[dt])
                continue
            mc, ms, os_ = self.counts[dt], self.sums[dt], other.sums[dt]
            for b in range(N_BUCKETS):
                if counts[b]:
                    mc[b] += counts[b]
                    ms[b] = (ms[b] + os_[b]) % MOD
        for dt, ids in other.ids.items():
            self.ids[dt] += ids
        self.masks += other.masks
        for t, cols in other.masked.items():
            self.masked[t] |= cols
        for d_from, d_to in (
            (other.dangling, self.dangling),
            (other.reject_reasons, self.reject_reasons),
        ):
            for k, n in d_from.items():
                d_to[k] += n
        self.missing += other.missing
        self.deferred += other.deferred


# -- the run ------------------------------------------------------------------------------------


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
    ):
        if sample is not None and not (0 < sample <= 100):
            raise PermanentError(f"--sample {sample}: expected a percentage in (0, 100]")
        if not isinstance(workers, int) or workers < 1:
            raise PermanentError(f"--workers {workers}: expected a whole number >= 1")
        self.workers = workers
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
        self.sampled: set[int] | None = None
        if sample is not None:
            self.sampled = sample_buckets(sample, self.seed)
        # ids (16 bytes) of the source documents that are rows in the target, per document type
        self.exists: dict[str, set[bytes]] = defaultdict(set)
        self._exists_done: set[str] = set()
        self._masked: dict[str, set[str]] = defaultdict(set)  # table -> masked columns

    # -- set-up -----------------------------------------------------------------------------
    def _collections(self, source) -> list[str]:
        order = list(self.mapping.collections_in_order())
        known = {c.name for c in source.collections()}
        if self.all:
            names = [c for c in order if c in known]
            return names + sorted(known - set(order))
        if not self.requested:
            raise PermanentError("name a collection (--collection NAME) or use --all")
        for name in self.requested:
            source.collection(name)
        rank = {c: i for i, c in enumerate(order)}
        return sorted(dict.fromkeys(self.requested), key=lambda c: rank.get(c, len(rank)))

    def run(self) -> ReconcileSummary:
        self.dsn = pg.resolve_dsn(self.settings)
        conn = pg.connect(self.dsn)
        self.conn = conn
        state.require_schema(conn)
        self.run_id = state.new_run_id("reconcile")
        source = open_source(self.source_spec, self.settings)
        self.source = source
        self.reader = CollectionReader(
            source,
            source_spec=self.source_spec,
            settings=self.settings,
            batch_size=self.batch_size,
            workers=self.workers,
            on_progress=self.on_progress,
        )
        target = pg.target_label(self.settings, self.dsn)
        summary = ReconcileSummary(
            run_id=self.run_id,
            state="running",
            started_at=utc_now(),
            finished_at=None,
            source=source.description,
            target=target,
            schema_version=pg.schema_version(conn),
            server_version=pg.server_version(conn),
            mapping_version=str(self.mapping.version),
            sample_percent=self.sample,
            sample_seed=self.seed,
            buckets_total=N_BUCKETS,
            buckets_checked=len(self.sampled) if self.sampled is not None else N_BUCKETS,
            collections=[],
        )
        self.summary = summary
        conn.commit()
        try:
            names = self._collections(source)
            state.start_run(
                conn,
                self.run_id,
                "reconcile",
                source=source.description,
                target=target,
                options={
                    "collections": names,
                    "source_spec": self.source_spec,
                    "sample": self.sample,
                    "seed": self.seed,
                },
            )
            conn.commit()
            self.specs = type_specs(conn, self.mapping)
            create_mask_table(conn)
            conn.commit()
            for name in names:
                result = CollectionReconcile(name)
                summary.collections.append(result)
                t0 = time.perf_counter()
                self._collection(name, result)
                result.seconds = time.perf_counter() - t0
            summary.state = "finished"
        except EtlError as exc:
            summary.state = "failed"
            summary.error = str(exc)
            raise
        except KeyboardInterrupt:
            summary.state = "interrupted"
            summary.error = "interrupted by the user"
            raise
        except BaseException as exc:
            summary.state = "failed"
            summary.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            summary.finished_at = utc_now()
            self.report_paths = None
            if summary.collections or summary.state == "finished":  # not for a usage error
                try:
                    self.report_paths = write_reports(
                        summary.asdict(), self.settings.migrate.reports_dir
                    )
                except OSError as exc:  # the database record still gets written
                    log.warning("could not write the reconcile report: %s", exc)
            self._finish(summary)
            source.close()
        return summary

    def _finish(self, summary: ReconcileSummary) -> None:
        conn = self.conn
        try:
            if conn.broken or conn.closed:
                conn = pg.connect(self.dsn)
            conn.rollback()
            with conn.transaction():
                if summary.state == "finished":
                    write_audit(conn, self.run_id, summary)
                paths = getattr(self, "report_paths", None)
                state.finish_run(
                    conn,
                    self.run_id,
                    summary.state,
                    summary=run_summary(summary),
                    error=summary.error,
                    report_path=str(paths["json"]) if paths else None,
                )
        except psycopg.Error as exc:
            log.warning("could not record the end of reconcile run %s: %s", self.run_id, exc)
        finally:
            conn.close()

    # -- one collection ---------------------------------------------------------------------
    def _collection(self, name: str, result: CollectionReconcile) -> None:
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
                self._ensure_exists(dep)
            self._edges(name, cm, result)
        else:
            for t in cm.targets():
                for f in t.references:
                    if f.collection != name:
                        self._ensure_exists(f.collection)
            self._documents(name, cm, result)
        result.status = "match" if (result.differences == 0 and result.balanced) else "differences"

    def _count_sampled(self, name: str) -> int:
        return sum(1 for d in self.reader.docs(name) if in_sample(self.sampled, name, d))

    def _ensure_exists(self, name: str) -> None:
        """The ids of a referenced collection's rows, when that collection is not reconciled
        (before) in this run: one pass over its source, transforming only what is needed."""
        if name in self._exists_done:
            return
        cm = self.mapping.for_collection(name)
        if cm is None or cm.edge is not None:
            return
        load_rejected = load_rejected_keys(self.conn, name, cm)

        def ids_of(docs: Iterator[Any]) -> _Pass1:  # per key range, in worker processes too
            part = _Pass1()
            transformer = Transformer(self.mapping, self.run_id, utc_now())
            for doc in docs:
                part.read += 1
                out = transformer.transform(name, doc)
                if isinstance(out, Row) and out.key not in load_rejected:
                    part.ids[out.document_type] += uuid.UUID(out.values["id"]).bytes
            return part

        for part in self.reader.over_ranges(name, ids_of):
            self._add_exists(part)
        self._exists_done.add(name)

    def _add_exists(self, part: _Pass1) -> None:
        for dt, ids in part.ids.items():
            self.exists[dt].update(bytes(ids[i : i + 16]) for i in range(0, len(ids), 16))
        part.ids.clear()

    # -- documents --------------------------------------------------------------------------
    def _documents(self, name: str, cm: CollectionMapping, result: CollectionReconcile) -> None:
        load_rejected = load_rejected_keys(self.conn, name, cm)
        recorded = recorded_keys(self.conn, name)
        types = [t.document_type for t in cm.targets()]
        exists_before = name in self._exists_done

        # pass 1: digests per bucket (and the ids of this collection's rows), per key range
        total = _Pass1()
        for part in self.reader.over_ranges(
            name, lambda docs: self._pass1(name, cm, docs, load_rejected, recorded, exists_before)
        ):
            total.merge(part)  # in key order: lists and dicts keep the order of one pass
        for dt in types:
            total.counts.setdefault(dt, [0] * N_BUCKETS)
            total.sums.setdefault(dt, [0] * N_BUCKETS)
        self._add_exists(total)
        self._exists_done.add(name)
        for dt, b, values in total.deferred:  # every id of this collection is known now
            self._add(total, dt, values, b)
        total.deferred.clear()
        result.checked += total.checked
        result.rejected += total.rejected
        result.unmapped += total.unmapped
        for dt, tc in total.by_type.items():
            result.by_type[dt].source_rows += tc.source_rows
            result.by_type[dt].rejected += tc.rejected
        for k, n in total.reject_reasons.items():
            result.reject_reasons[k] += n
        for k, n in total.dangling.items():
            result.dangling[k] += n
        result.missing += total.missing
        for t, cols in total.masked.items():
            self._masked[t] |= cols
        counts, sums, masks = total.counts, total.sums, total.masks

        # the server's side, per document type
        store_masks(self.conn, masks)
        mismatched: dict[str, set[int]] = {}
        for dt in types:
            spec = self.specs[dt]
            tc = result.by_type[dt]
            srv = server_buckets(
                self.conn,
                spec,
                collection_scope(self.mapping, spec, name),
                self._masked[spec.table],
                self.sampled,
            )
            tc.loaded = sum(n for n, _ in srv.values())
            result.loaded += tc.loaded
            checked = self.sampled if self.sampled is not None else range(N_BUCKETS)
            bad = differing_buckets(counts[dt], sums[dt], srv, checked)
            tc.buckets = len(self.sampled) if self.sampled is not None else N_BUCKETS
            tc.buckets_differing = len(bad)
            if bad:
                mismatched[dt] = bad
        if mismatched:
            self._drill(name, cm, result, load_rejected, mismatched)
        for dt in types:
            tc = result.by_type[dt]
            tc.matched = tc.source_rows - tc.missing - tc.differing

    def _pass1(
        self,
        name: str,
        cm: CollectionMapping,
        docs: Iterator[Any],
        load_rejected: set[str],
        recorded: set[str],
        exists_before: bool,
    ) -> _Pass1:
        """Pass 1 over `docs` (the collection, or one key range of it). Reads self (exists, specs,
        sampled, mapping) and writes only the returned _Pass1: it runs in forked workers too."""
        part = _Pass1()
        transformer = Transformer(self.mapping, self.run_id, utc_now())
        types = [t.document_type for t in cm.targets()]
        part.counts = {dt: [0] * N_BUCKETS for dt in types}
        part.sums = {dt: [0] * N_BUCKETS for dt in types}
        self_refs = {
            dt: [
                c
                for c, rt in self.specs[dt].references.items()
                if any(t.document_type == rt for t in cm.targets())
            ]
            for dt in types
        }
        for doc in docs:
            part.read += 1
            if not in_sample(self.sampled, name, doc):
                if not exists_before and isinstance(doc, dict):  # existence without a transform
                    t = target_of(cm, doc)
                    if t is not None and doc.get("_key") not in load_rejected:
                        part.ids[t.document_type] += uuid.UUID(row_id(name, doc["_key"])).bytes
                continue
            part.checked += 1
            out = transformer.transform(name, doc)
            if isinstance(out, Row):
                dt = out.document_type
                tc = part.by_type[dt]
                if out.key in load_rejected:
                    part.rejected += 1
                    tc.rejected += 1
                    part.reject_reasons[LOAD_REFUSED] += 1
                    continue
                tc.source_rows += 1
                rid = out.values["id"]
                part.ids[dt] += uuid.UUID(rid).bytes
                b = bucket_of(rid)
                if any(out.values.get(c) is not None for c in self_refs[dt]):
                    part.deferred.append((dt, b, out.values))
                    continue
                self._add(part, dt, out.values, b)
            elif isinstance(out, (Reject, Unmapped)):
                count_not_a_row(name, cm, doc, out, recorded, part)
            else:  # an EdgeLink from a document collection: a mapping error
                raise PermanentError(
                    f"collection {name!r} yielded an edge; its mapping kind is wrong"
                )
        for sums in part.sums.values():
            for b, v in enumerate(sums):
                if v >= MOD:
                    sums[b] = v % MOD
        return part

    def _add(self, part: _Pass1, dt: str, values: dict, b: int) -> None:
        row_masks: list[str] = []
        cmp = self.specs[dt].compare(values, self.exists, row_masks, part.dangling)
        for col in row_masks:
            part.masks.append((values["id"], col))
            part.masked[self.specs[dt].table].add(col)
        part.counts[dt][b] += 1
        part.sums[dt][b] += digest(cmp)

    def _drill(
        self, name, cm, result: CollectionReconcile, load_rejected, mismatched: dict[str, set[int]]
    ) -> None:
        # the server's row digests in the mismatching buckets
        server: dict[str, dict[str, tuple[int, str | None, str | None]]] = {}
        for dt, bad in mismatched.items():
            spec = self.specs[dt]
            server[dt] = server_row_digests(
                self.conn,
                spec,
                collection_scope(self.mapping, spec, name),
                self._masked[spec.table],
                bad,
            )
        # pass 2 over the source, only the mismatching buckets
        any_bad = set().union(*mismatched.values())
        transformer = Transformer(self.mapping, self.run_id, utc_now())
        seen: set[str] = set()
        differing: dict[str, tuple[str, str, dict]] = {}  # id -> (type, key, compare object)
        not_rows: dict[str, str] = {}  # key -> why the source document is not a row
        for doc in self.reader.docs(name):
            key = doc.get("_key") if isinstance(doc, dict) else None
            if not isinstance(key, str) or not key or bucket_of(row_id(name, key)) not in any_bad:
                continue
            out = transformer.transform(name, doc)
            if not isinstance(out, Row):
                not_rows[key] = getattr(out, "reason", "")
                continue
            dt = out.document_type
            rid = out.values["id"]
            if (
                dt not in mismatched
                or bucket_of(rid) not in mismatched[dt]
                or out.key in load_rejected
            ):
                continue
            seen.add(rid)
            cmp = self.specs[dt].compare(out.values, self.exists, None, None)
            srv = server[dt].get(rid)
            if srv is None:
                result.missing.append(
                    {"key": key, "id": rid, "document_type": dt, "table": self.specs[dt].table}
                )
                result.by_type[dt].missing += 1
            elif srv[0] != digest(cmp):
                differing[rid] = (dt, key, cmp)
        for dt, rows in server.items():
            for rid, (_d, key, coll) in rows.items():
                if rid in seen:
                    continue
                item = {
                    "key": key,
                    "id": rid,
                    "document_type": dt,
                    "table": self.specs[dt].table,
                    "arango_collection": coll,
                }
                if coll == name and key in not_rows:
                    item["source"] = f"the source document is not a row now: {not_rows[key]}"
                elif coll == name and key is not None:
                    item["source"] = "no such key in the source"
                else:
                    item["source"] = "not a migrated row of this collection (metadata.arango)"
                result.extra.append(item)
                result.by_type[dt].extra += 1
        # the differing rows, field by field
        by_type: dict[str, list[str]] = defaultdict(list)
        for rid, (dt, _k, _c) in differing.items():
            by_type[dt].append(rid)
        for dt, ids in by_type.items():
            spec = self.specs[dt]
            stored = server_compare_texts(self.conn, spec, self._masked[spec.table], ids)
            for rid in ids:
                _dt, key, cmp = differing[rid]
                got = loads_exact(stored[rid])
                paths: list[str] = []
                diff_paths(cmp, got, "", paths)
                fields = list(dict.fromkeys(re.split(r"[.\[]", p, maxsplit=1)[0] for p in paths))
                result.differing.append(
                    {
                        "key": key,
                        "id": rid,
                        "document_type": dt,
                        "table": spec.table,
                        "fields": fields,
                        "paths": paths,
                    }
                )
                result.by_type[dt].differing += 1
        for lst in (result.missing, result.extra, result.differing):
            lst.sort(key=lambda x: (x.get("key") or "", x["id"]))

    # -- edges ------------------------------------------------------------------------------
    def _edges(self, name: str, cm: CollectionMapping, result: CollectionReconcile) -> None:
        """An edge collection, in this process whatever self.workers says (edges are small and
        cheap to check: no transform of a document body)."""
        spec = cm.edge
        dt = spec.to_document_type
        table = table_of(dt)
        from_type = self.mapping.for_collection(spec.from_collection).targets()[0].document_type
        transformer = Transformer(self.mapping, self.run_id, utc_now())
        counts = [0] * N_BUCKETS
        sums = [0] * N_BUCKETS
        links: dict[str, tuple[str, str]] = {}  # research id -> (job id, edge key): last read wins
        tc = result.by_type[dt]
        recorded = recorded_keys(self.conn, name)

        def wanted(target_id: str) -> bool:
            return self.sampled is None or bucket_of(target_id) in self.sampled

        def edges_pass(keep: set[int] | None) -> dict[tuple, tuple[str, dict]]:
            kept: dict[tuple, tuple[str, dict]] = {}
            for doc in self.reader.docs(name):
                out = transformer.transform(name, doc)
                if isinstance(out, EdgeLink):
                    if not wanted(out.target_id):
                        continue
                    b = bucket_of(out.target_id)
                    ok = (
                        uuid.UUID(out.target_id).bytes in self.exists[dt]
                        and uuid.UUID(out.job_id).bytes in self.exists[from_type]
                    )
                    if keep is None:
                        result.checked += 1
                        if not ok:
                            result.rejected += 1
                            result.reject_reasons["dangling_edge"] += 1
                            unrecorded(
                                name, cm, doc, out.key, "a dangling edge", recorded, result.missing
                            )
                            continue
                        tc.source_rows += 1
                        counts[b] += 1
                        sums[b] += digest(_edge_obj(out.key, out.target_id, out.edge))
                        links[out.target_id] = (out.job_id, out.key)
                    elif ok and b in keep:
                        kept[("edge", out.target_id, out.key)] = (
                            out.key,
                            _edge_obj(out.key, out.target_id, out.edge),
                        )
                elif keep is None and in_sample(self.sampled, name, doc):
                    result.checked += 1
                    if isinstance(out, (Reject, Unmapped)):
                        count_not_a_row(name, cm, doc, out, recorded, result)
            return kept

        edges_pass(None)
        for target_id, (job_id, _key) in links.items():
            b = bucket_of(target_id)
            counts[b] += 1
            sums[b] += digest(_link_obj(target_id, job_id))

        join, params = bucket_join(self.sampled)
        items_sql = _edge_items_sql(table)
        srv = {}
        n_loaded = 0
        for b, kind, n, s in self.conn.execute(
            sql.SQL("select t.b, kind, count(*), sum({}) from ({}) t{} group by t.b, kind").format(
                digest_of(sql.SQL("cmp")), items_sql, join
            ),
            params,
        ):
            c0, s0 = srv.get(b, (0, 0))
            srv[b] = (c0 + n, s0 + int(s))
            if kind == "edge":
                n_loaded += n
        self.conn.commit()
        tc.loaded = result.loaded = n_loaded
        checked = self.sampled if self.sampled is not None else range(N_BUCKETS)
        bad = differing_buckets(counts, sums, srv, checked)
        tc.buckets = len(self.sampled) if self.sampled is not None else N_BUCKETS
        tc.buckets_differing = len(bad)
        if bad:
            expected = edges_pass(bad)
            for target_id, (job_id, key) in links.items():
                if bucket_of(target_id) in bad:
                    expected[("link", target_id)] = (key, _link_obj(target_id, job_id))
            join, params = bucket_join(bad)
            stored: dict[tuple, tuple[str, str]] = {}
            for kind, rid, ekey, rkey, cmp in self.conn.execute(
                sql.SQL("select kind, id::text, edge_key, arango_key, cmp from ({}) t{}").format(
                    items_sql, join
                ),
                params,
            ):
                stored[("edge", rid, ekey) if kind == "edge" else ("link", rid)] = (rkey, cmp)
            self.conn.commit()
            for item, (key, obj) in expected.items():
                got = stored.get(item)
                what = (
                    "job_research edge"
                    if item[0] == "edge"
                    else f"{table}.{spec.sets} set by the edge"
                )
                if got is None:
                    result.missing.append(
                        {
                            "key": key,
                            "id": item[1],
                            "document_type": dt,
                            "table": table,
                            "what": what,
                        }
                    )
                    tc.missing += 1
                elif canonical(obj) != got[1]:
                    paths: list[str] = []
                    diff_paths(obj, loads_exact(got[1]), "", paths)
                    if item[0] == "link":
                        paths = [f"{table}.{spec.sets}"]
                    else:
                        paths = [
                            f"metadata.edges.{key}" + p[len("edge") :]
                            if p.startswith("edge")
                            else p
                            for p in paths
                        ]
                    result.differing.append(
                        {
                            "key": key,
                            "id": item[1],
                            "document_type": dt,
                            "table": table,
                            "what": what,
                            "research_key": got[0],
                            "fields": list(
                                dict.fromkeys(
                                    p.split(".")[0] if item[0] == "edge" else spec.sets
                                    for p in paths
                                )
                            ),
                            "paths": paths,
                        }
                    )
                    tc.differing += 1
            for item, (rkey, _cmp) in stored.items():
                if item not in expected:
                    result.extra.append(
                        {
                            "key": item[2] if item[0] == "edge" else None,
                            "id": item[1],
                            "document_type": dt,
                            "table": table,
                            "research_key": rkey,
                            "what": "job_research edge"
                            if item[0] == "edge"
                            else f"{table}.{spec.sets} set by an edge",
                        }
                    )
                    tc.extra += 1
        tc.matched = tc.source_rows - tc.missing - tc.differing


def _edge_obj(key: str, target_id: str, edge: dict) -> dict:
    return {"edge_key": key, "research_id": target_id, "edge": edge}


def _link_obj(target_id: str, job_id: str) -> dict:
    return {"research_id": target_id, "job_id": job_id}


def _edge_items_sql(table: str) -> sql.Composed:
    """Every edge kept in the table's metadata.edges, and every row's edge-set job_id, with the
    compare text of each (the same objects as _edge_obj / _link_obj)."""
    edges = sql.SQL(
        "case when jsonb_typeof(r.metadata -> 'edges') = 'object' then r.metadata -> 'edges' else '{}'::jsonb end"
    )
    b = bucket_sql(sql.SQL("r.id"))
    return sql.SQL(
        "select {b} b, 'edge' kind, r.id, e.key edge_key, r.metadata -> 'arango' ->> '_key' arango_key,"
        " jsonb_build_object('edge_key', e.key, 'research_id', r.id, 'edge', e.value)::text cmp"
        " from {t} r cross join lateral jsonb_each({edges}) e"
        " union all"
        " select {b}, 'link', r.id, null, r.metadata -> 'arango' ->> '_key',"
        " jsonb_build_object('research_id', r.id, 'job_id', r.job_id)::text"
        " from {t} r where {edges} <> '{{}}'::jsonb"
    ).format(b=b, t=sql.Identifier(table), edges=edges)
