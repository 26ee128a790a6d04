"""The check of a document collection. Pass 1 transforms and digests every (sampled) source
document into per-bucket sums, in key ranges when there are workers; the server sums the same
buckets; for mismatching buckets the drill-down compares row digests, and the differing rows
field by field, into missing, extra and differing findings."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from etl.canonical import digest, loads_exact
from etl.errors import PermanentError
from etl.mapping import CollectionMapping, Mapping
from etl.reconcile.buckets import (
    MOD,
    N_BUCKETS,
    bucket_of,
    collection_scope,
    differing_buckets,
    in_sample,
    server_buckets,
    server_compare_texts,
    server_row_digests,
)
from etl.reconcile.compare import TypeSpec, diff_paths, load_masks
from etl.reconcile.context import CheckContext
from etl.reconcile.rejects import (
    LOAD_REFUSED,
    count_not_a_row,
    load_rejected_keys,
    recorded_keys,
    target_of,
)
from etl.reconcile.results import CollectionReconcile, TypeCounts, utc_now
from etl.results import record_edge_ends
from etl.runs import collection_names
from etl.transform import Reject, Row, Transformer, Unmapped, row_id


@dataclass
class PassOne:
    """What pass 1 learns from one run of source documents (a key range, or the whole collection).
    Partials add up (merge, in key order) to what one pass over the collection gives."""

    read: int = 0  # documents read
    checked: int = 0
    rejected: int = 0
    unmapped: int = 0
    by_type: dict[str, TypeCounts] = field(  # source_rows and rejected only
        default_factory=lambda: defaultdict(TypeCounts)
    )
    counts: dict[str, list[int]] = field(default_factory=dict)  # type -> documents per bucket
    sums: dict[str, list[int]] = field(default_factory=dict)  # type -> digest sum per bucket
    # type -> the rows' ids, 16 bytes each
    ids: dict[str, bytearray] = field(default_factory=lambda: defaultdict(bytearray))
    # (row id, column) compared as DEFAULT_MARK, and table -> those columns
    masks: list[tuple[str, str]] = field(default_factory=list)
    masked: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    dangling: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reject_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missing: list[dict] = field(default_factory=list)  # neither loaded nor in etl_rejects
    # (type, bucket, values) of rows referencing this same collection, compared after pass 1
    deferred: list[tuple[str, int, dict]] = field(default_factory=list)
    # generic edges: ends the target does not hold ({key, end, ref, problem}), and the ends
    # (key, end, ref, row id) whose collection's ids are not known yet, checked after pass 1
    edge_ends: list[dict] = field(default_factory=list)
    ends_later: list[tuple[str, str, str, str]] = field(default_factory=list)

    def merge(self, other: PassOne) -> None:
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
        self.edge_ends += other.edge_ends
        self.ends_later += other.ends_later


class RowIds:
    """Pass-1 work for a referenced collection this run does not check (first): only the ids of
    its rows, transforming what is needed. Runs in forked workers too: reads only what it holds."""

    def __init__(self, mapping: Mapping, run_id: str, collection: str, load_rejected: set[str]):
        self.mapping = mapping
        self.run_id = run_id
        self.collection = collection
        self.load_rejected = load_rejected

    def __call__(self, docs: Iterator[Any]) -> PassOne:
        part = PassOne()
        transformer = Transformer(self.mapping, self.run_id, utc_now())
        for doc in docs:
            part.read += 1
            out = transformer.transform(self.collection, doc)
            if isinstance(out, Row) and out.key not in self.load_rejected:
                part.ids[out.document_type] += uuid.UUID(out.values["id"]).bytes
        return part


class DocumentPass:
    """Pass 1 over a document collection's documents (all, or one key range): counts and digest
    sums per bucket and type, ids of the rows, masks, dangling references, rejects. Reads only
    what it holds and writes only the returned PassOne: it runs in forked workers too. A row
    referencing this same collection is deferred (its compare needs every id of the collection):
    add() finishes it in the parent once `exists` holds them."""

    def __init__(
        self,
        *,
        mapping: Mapping,
        run_id: str,
        specs: dict[str, TypeSpec],
        exists: dict[str, set[bytes]],
        sampled: set[int] | None,
        collection: str,
        cm: CollectionMapping,
        load_rejected: set[str],
        recorded: set[str],
        exists_before: bool,
        exists_done: set[str] | frozenset[str] = frozenset(),
    ):
        self.mapping = mapping
        self.run_id = run_id
        self.specs = specs
        self.exists = exists  # the run's own dict: add() sees ids added after pass 1
        self.sampled = sampled
        self.collection = collection
        self.cm = cm
        self.load_rejected = load_rejected
        self.recorded = recorded
        self.exists_before = exists_before  # the ids of this collection are known already
        self.types = [t.document_type for t in cm.targets()]
        self.generic_edge = cm.generic is not None and cm.generic.edge
        self.known = set(exists_done)  # collections whose ids `exists` holds before pass 1
        self.self_refs = {
            dt: [
                c
                for c, rt in specs[dt].references.items()
                if any(t.document_type == rt for t in cm.targets())
            ]
            for dt in self.types
        }

    def __call__(self, docs: Iterator[Any]) -> PassOne:
        name, cm, load_rejected = self.collection, self.cm, self.load_rejected
        part = PassOne()
        transformer = Transformer(self.mapping, self.run_id, utc_now())
        part.counts = {dt: [0] * N_BUCKETS for dt in self.types}
        part.sums = {dt: [0] * N_BUCKETS for dt in self.types}
        for doc in docs:
            part.read += 1
            if not in_sample(self.sampled, name, doc):
                if not self.exists_before and isinstance(doc, dict):  # existence, no transform
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
                if self.generic_edge:
                    self.check_ends(part, out.key, out.values)
                b = bucket_of(rid)
                if any(out.values.get(c) is not None for c in self.self_refs[dt]):
                    part.deferred.append((dt, b, out.values))
                    continue
                self.add(part, dt, out.values, b)
            elif isinstance(out, (Reject, Unmapped)):
                count_not_a_row(name, cm, doc, out, self.recorded, part)
            else:  # an EdgeLink from a document collection: a mapping error
                raise PermanentError(
                    f"collection {name!r} yielded an edge; its mapping kind is wrong"
                )
        for sums in part.sums.values():
            for b, v in enumerate(sums):
                if v >= MOD:
                    sums[b] = v % MOD
        return part

    def check_ends(self, part: PassOne, key: str, values: dict) -> None:
        """A generic edge's ends: present, not held (dangling), in a collection that is not
        migrated, or to check after pass 1 (their collection's ids are not known yet)."""
        for end, ref in (("_from", values["from_ref"]), ("_to", values["to_ref"])):
            rid = values["from_id" if end == "_from" else "to_id"]
            collection = ref.split("/", 1)[0]
            if end_types(self.mapping, collection) is not None and collection not in self.known:
                part.ends_later.append((key, end, ref, rid))
                continue
            problem = end_problem(self.mapping, self.exists, ref, rid)
            if problem:
                part.edge_ends.append({"key": key, "end": end, "ref": ref, "problem": problem})

    def add(self, part: PassOne, dt: str, values: dict, b: int) -> None:
        """Add one row's compare digest to bucket b of `part`."""
        row_masks: list[str] = []
        cmp = self.specs[dt].compare(values, self.exists, row_masks, part.dangling)
        for col in row_masks:
            part.masks.append((values["id"], col))
            part.masked[self.specs[dt].table].add(col)
        part.counts[dt][b] += 1
        part.sums[dt][b] += digest(cmp)


def end_types(mapping: Mapping, collection: str) -> list[str] | None:
    """The document types whose rows an edge end in `collection` can be (by row id); None when
    the collection is not migrated to rows (not in the mapping, or a curated edge)."""
    cm = mapping.for_collection(collection)
    if cm is None or cm.edge is not None:
        return None
    return [t.document_type for t in cm.targets()]


def end_problem(mapping: Mapping, exists: dict[str, set[bytes]], ref: str, rid: str) -> str | None:
    """None when the target holds the edge end `ref` (row id `rid`), else why not."""
    types = end_types(mapping, ref.split("/", 1)[0])
    if types is None:
        return "unknown_collection"
    rid_bytes = uuid.UUID(rid).bytes
    return None if any(rid_bytes in exists[dt] for dt in types) else "dangling"


def ensure_exists(ctx: CheckContext, name: str) -> None:
    """The ids of a referenced collection's rows, when that collection is not checked (before)
    in this run: one pass over its source, transforming only what is needed."""
    if name in ctx.exists_done:
        return
    cm = ctx.mapping.for_collection(name)
    if cm is None or cm.edge is not None:
        return
    if name not in collection_names(ctx.reader.source):
        ctx.exists_done.add(name)  # not in the source (--allow-missing): it has no rows
        return
    load_rejected = load_rejected_keys(ctx.conn, name, cm)
    work = RowIds(ctx.mapping, ctx.run_id, name, load_rejected)
    for part in ctx.reader.over_ranges(name, work):  # per key range, in worker processes too
        ctx.add_exists(part.ids)
    ctx.exists_done.add(name)


def check_documents(
    ctx: CheckContext, name: str, cm: CollectionMapping, result: CollectionReconcile
) -> None:
    load_rejected = load_rejected_keys(ctx.conn, name, cm)
    recorded = recorded_keys(ctx.conn, name)
    types = [t.document_type for t in cm.targets()]
    work = DocumentPass(
        mapping=ctx.mapping,
        run_id=ctx.run_id,
        specs=ctx.specs,
        exists=ctx.exists,
        sampled=ctx.sampled,
        collection=name,
        cm=cm,
        load_rejected=load_rejected,
        recorded=recorded,
        exists_before=name in ctx.exists_done,
        exists_done=ctx.exists_done - {name},
    )

    # pass 1: digests per bucket (and the ids of this collection's rows), per key range
    total = PassOne()
    for part in ctx.reader.over_ranges(name, work):
        total.merge(part)  # in key order: lists and dicts keep the order of one pass
    for dt in types:
        total.counts.setdefault(dt, [0] * N_BUCKETS)
        total.sums.setdefault(dt, [0] * N_BUCKETS)
    ctx.add_exists(total.ids)
    ctx.exists_done.add(name)
    for dt, b, values in total.deferred:  # every id of this collection is known now
        work.add(total, dt, values, b)
    total.deferred.clear()
    for collection in sorted({ref.split("/", 1)[0] for _k, _e, ref, _r in total.ends_later}):
        ensure_exists(ctx, collection)
    for key, end, ref, rid in total.ends_later:
        problem = end_problem(ctx.mapping, ctx.exists, ref, rid)
        if problem:
            total.edge_ends.append({"key": key, "end": end, "ref": ref, "problem": problem})
    record_edge_ends(result, sorted(total.edge_ends, key=lambda e: (e["key"], e["end"])))
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
        ctx.masked[t] |= cols
    counts, sums, masks = total.counts, total.sums, total.masks

    # the server's side, per document type
    ctx.masks.update(masks)
    mismatched: dict[str, set[int]] = {}
    for dt in types:
        spec = ctx.specs[dt]
        tc = result.by_type[dt]
        load_masks(ctx.conn, ctx.masks)  # same transaction as the query
        srv = server_buckets(
            ctx.conn,
            spec,
            collection_scope(ctx.mapping, spec, name),
            ctx.masked[spec.table],
            ctx.sampled,
        )
        tc.loaded = sum(n for n, _ in srv.values())
        result.loaded += tc.loaded
        bad = differing_buckets(counts[dt], sums[dt], srv, ctx.checked_buckets)
        tc.buckets = ctx.n_checked_buckets
        tc.buckets_differing = len(bad)
        if bad:
            mismatched[dt] = bad
    if mismatched:
        drill(ctx, name, result, load_rejected, mismatched)
        # an extra row is one finding, not also an unbalanced count: `loaded` counts the rows
        # of the checked source documents
        for item in result.extra:
            result.by_type[item["document_type"]].loaded -= 1
            result.loaded -= 1
    for dt in types:
        tc = result.by_type[dt]
        tc.matched = tc.source_rows - tc.missing - tc.differing


def drill(
    ctx: CheckContext,
    name: str,
    result: CollectionReconcile,
    load_rejected: set[str],
    mismatched: dict[str, set[int]],
) -> None:
    """The drill-down into mismatching buckets: missing, extra and differing rows."""
    # the server's row digests in the mismatching buckets
    server: dict[str, dict[str, tuple[int, str | None, str | None]]] = {}
    for dt, bad in mismatched.items():
        spec = ctx.specs[dt]
        load_masks(ctx.conn, ctx.masks)  # same transaction as the query
        server[dt] = server_row_digests(
            ctx.conn, spec, collection_scope(ctx.mapping, spec, name), ctx.masked[spec.table], bad
        )
    # pass 2 over the source, only the mismatching buckets
    any_bad = set().union(*mismatched.values())
    transformer = ctx.transformer()
    seen: set[str] = set()
    differing: dict[str, tuple[str, str, dict]] = {}  # id -> (type, key, compare object)
    not_rows: dict[str, str] = {}  # key -> why the source document is not a row
    for doc in ctx.reader.docs(name):
        key = doc.get("_key") if isinstance(doc, dict) else None
        if not isinstance(key, str) or not key or bucket_of(row_id(name, key)) not in any_bad:
            continue
        out = transformer.transform(name, doc)
        if not isinstance(out, Row):
            not_rows[key] = getattr(out, "reason", "")
            continue
        dt = out.document_type
        rid = out.values["id"]
        if dt not in mismatched or bucket_of(rid) not in mismatched[dt] or out.key in load_rejected:
            continue
        seen.add(rid)
        cmp = ctx.specs[dt].compare(out.values, ctx.exists, None, None)
        srv = server[dt].get(rid)
        if srv is None:
            result.missing.append(
                {"key": key, "id": rid, "document_type": dt, "table": ctx.specs[dt].table}
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
                "table": ctx.specs[dt].table,
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
        spec = ctx.specs[dt]
        load_masks(ctx.conn, ctx.masks)  # same transaction as the query
        stored = server_compare_texts(ctx.conn, spec, ctx.masked[spec.table], ids)
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
