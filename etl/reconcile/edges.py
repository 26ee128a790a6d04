"""The check of an edge collection (job_research): each edge is expected in its research row's
metadata.edges[<edge key>], and, when the row's document names no job of its own, that row's
job_id (the column the edge sets) equal to the job of its greatest edge key (etl/derived.py). Same buckets (by the research row id) and drill-down as for documents; runs in
the parent process whatever --workers says (no document body to transform)."""

from __future__ import annotations

import uuid

from psycopg import sql

from etl import derived
from etl.canonical import canonical, digest, loads_exact
from etl.mapping import CollectionMapping
from etl.reconcile.buckets import (
    N_BUCKETS,
    bucket_join,
    bucket_of,
    bucket_sql,
    differing_buckets,
    in_sample,
)
from etl.reconcile.compare import diff_paths, digest_of
from etl.reconcile.context import CheckContext
from etl.reconcile.rejects import count_not_a_row, recorded_keys, unrecorded
from etl.reconcile.results import CollectionReconcile
from etl.target import table as table_of
from etl.transform import EdgeLink, Reject, Unmapped


def edge_obj(key: str, target_id: str, edge: dict) -> dict:
    return {"edge_key": key, "research_id": target_id, "edge": edge}


def link_obj(target_id: str, job_id: str) -> dict:
    return {"research_id": target_id, "job_id": job_id}


def own_paths(ctx: CheckContext, cm: CollectionMapping) -> tuple[tuple[str, ...], ...]:
    es = derived.edge_set_for(ctx.mapping, cm.name)
    return es.own_paths if es else ()


def edge_items_sql(table: str, own: tuple[tuple[str, ...], ...] = ()) -> sql.Composed:
    """Every edge kept in the table's metadata.edges, and the edge-set job_id of every row with
    edges whose document names no job of its own, with the compare text of each (the same
    objects as edge_obj / link_obj)."""
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
        " from {t} r where {edges} <> '{{}}'::jsonb and not ({own})"
    ).format(b=b, t=sql.Identifier(table), edges=edges, own=derived.own_named_sql(own, "r"))


def check_edges(
    ctx: CheckContext, name: str, cm: CollectionMapping, result: CollectionReconcile
) -> None:
    spec = cm.edge
    assert spec is not None  # an edge collection
    dt = spec.to_document_type
    table = table_of(dt)
    from_type = ctx.mapping.collections[spec.from_collection].targets()[0].document_type
    transformer = ctx.transformer()
    counts = [0] * N_BUCKETS
    sums = [0] * N_BUCKETS
    # research id -> (job id, edge key): the edge with the greatest key decides the column the
    # edge sets, for rows whose document names no reference of its own (etl/derived.py; the
    # content check compares the column of the others)
    links: dict[str, tuple[str, str]] = {}
    tc = result.by_type[dt]
    recorded = recorded_keys(ctx.conn, name)

    def wanted(target_id: str) -> bool:
        return ctx.sampled is None or bucket_of(target_id) in ctx.sampled

    def edges_pass(keep: set[int] | None) -> dict[tuple, tuple[str, dict]]:
        kept: dict[tuple, tuple[str, dict]] = {}
        for doc in ctx.reader.docs(name):
            out = transformer.transform(name, doc)
            if isinstance(out, EdgeLink):
                if not wanted(out.target_id):
                    continue
                b = bucket_of(out.target_id)
                ok = (
                    uuid.UUID(out.target_id).bytes in ctx.exists[dt]
                    and uuid.UUID(out.job_id).bytes in ctx.exists[from_type]
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
                    sums[b] += digest(edge_obj(out.key, out.target_id, out.edge))
                    had = links.get(out.target_id)
                    if had is None or derived.chosen_edge((had[1], out.key)) == out.key:
                        links[out.target_id] = (out.job_id, out.key)
                elif ok and b in keep:
                    kept[("edge", out.target_id, out.key)] = (
                        out.key,
                        edge_obj(out.key, out.target_id, out.edge),
                    )
            elif keep is None and in_sample(ctx.sampled, name, doc):
                result.checked += 1
                if isinstance(out, (Reject, Unmapped)):
                    count_not_a_row(name, cm, doc, out, recorded, result)
        return kept

    edges_pass(None)
    # rows naming their own reference: as stored (metadata.extra is compared by the content check)
    own = {
        rid
        for (rid,) in ctx.conn.execute(
            sql.SQL("select t.id::text from {} t where {}").format(
                sql.Identifier(table), derived.own_named_sql(own_paths(ctx, cm))
            )
        )
    }
    ctx.conn.commit()
    for rid in own:
        links.pop(rid, None)
    for target_id, (job_id, _key) in links.items():
        b = bucket_of(target_id)
        counts[b] += 1
        sums[b] += digest(link_obj(target_id, job_id))

    join, params = bucket_join(ctx.sampled)
    items_sql = edge_items_sql(table, own_paths(ctx, cm))
    srv: dict[int, tuple[int, int]] = {}
    n_loaded = 0
    for b, kind, n, s in ctx.conn.execute(
        sql.SQL("select t.b, kind, count(*), sum({}) from ({}) t{} group by t.b, kind").format(
            digest_of(sql.SQL("cmp")), items_sql, join
        ),
        params,
    ):
        c0, s0 = srv.get(b, (0, 0))
        srv[b] = (c0 + n, s0 + int(s))
        if kind == "edge":
            n_loaded += n
    ctx.conn.commit()
    tc.loaded = result.loaded = n_loaded
    bad = differing_buckets(counts, sums, srv, ctx.checked_buckets)
    tc.buckets = ctx.n_checked_buckets
    tc.buckets_differing = len(bad)
    if bad:
        expected = edges_pass(bad)
        for target_id, (job_id, key) in links.items():
            if bucket_of(target_id) in bad:
                expected[("link", target_id)] = (key, link_obj(target_id, job_id))
        join, params = bucket_join(bad)
        stored: dict[tuple, tuple[str, str]] = {}
        for kind, rid, ekey, rkey, cmp in ctx.conn.execute(
            sql.SQL("select kind, id::text, edge_key, arango_key, cmp from ({}) t{}").format(
                items_sql, join
            ),
            params,
        ):
            stored[("edge", rid, ekey) if kind == "edge" else ("link", rid)] = (rkey, cmp)
        ctx.conn.commit()
        for item, (key, obj) in expected.items():
            got = stored.get(item)
            what = (
                "job_research edge" if item[0] == "edge" else f"{table}.{spec.sets} set by the edge"
            )
            if got is None:
                result.missing.append(
                    {"key": key, "id": item[1], "document_type": dt, "table": table, "what": what}
                )
                tc.missing += 1
            elif canonical(obj) != got[1]:
                paths: list[str] = []
                diff_paths(obj, loads_exact(got[1]), "", paths)
                if item[0] == "link":
                    paths = [f"{table}.{spec.sets}"]
                else:
                    paths = [
                        f"metadata.edges.{key}" + p[len("edge") :] if p.startswith("edge") else p
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
                                p.split(".")[0] if item[0] == "edge" else spec.sets for p in paths
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
                if item[0] == "edge":  # one finding, not also an unbalanced count
                    tc.loaded -= 1
                    result.loaded -= 1
    tc.matched = tc.source_rows - tc.missing - tc.differing
