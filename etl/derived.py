"""The column an edge sets (research_results.job_id), as ONE function of the source's current
state, whatever order collections or changes arrive in:

- the document's own reference (mapping `references.job_id`) when the document names one (a
  non-null value at one of its paths): that job, or NULL when it is not a key or the job does
  not exist (a dangling reference, as for any other reference);
- otherwise the job of the row's edge with the greatest `_key` (code point order, the same in
  Python and in `COLLATE "C"`), among the edges kept in `metadata.edges` (an edge is kept only
  while both its ends exist);
- otherwise NULL.

Every edge stays visible in `metadata.edges`. `refresh()` writes the rule's value for given
rows from what they store (migrate after each research batch and each edge batch, sync after
every change that can move it); reconcile computes the same rule from the source with
`derive()` and `own_named()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from etl import target
from etl.mapping import Mapping
from etl.transform import reference_key, row_id

Path = tuple[str, ...]


@dataclass(frozen=True)
class EdgeSet:
    """One edge collection and the column it sets in its `_to` rows."""

    edge_collection: str
    table: str  # the table of the edge's `_to` rows (research_results)
    column: str  # the column the edge sets (job_id)
    from_collection: str  # the edge's `_from` collection (jobs)
    from_table: str
    own_paths: tuple[Path, ...]  # the document's own reference to the same column
    own_collection: str | None


def edge_sets(mapping: Mapping) -> list[EdgeSet]:
    out = []
    for cm in mapping.collections.values():
        spec = cm.edge
        if spec is None:
            continue
        own = [
            ref
            for tg in mapping.collections[spec.to_collection].targets()
            if tg.document_type == spec.to_document_type
            for ref in getattr(tg, "references", ())
            if ref.name == spec.sets
        ]
        from_cm = mapping.for_collection(spec.from_collection)
        out.append(
            EdgeSet(
                cm.name,
                target.table(spec.to_document_type),
                spec.sets,
                spec.from_collection,
                from_cm.targets()[0].table if from_cm else "",
                own[0].paths if own else (),
                own[0].collection if own else None,
            )
        )
    return out


def edge_set_for(mapping: Mapping, edge_collection: str) -> EdgeSet | None:
    return next((e for e in edge_sets(mapping) if e.edge_collection == edge_collection), None)


def value_at(doc: Any, path: Path) -> Any:
    for seg in path:
        doc = doc.get(seg) if isinstance(doc, dict) else None
    return doc


def first_value(doc: Any, paths: Iterable[Path]) -> Any:
    """The value at the first path that has one (the transform's order)."""
    for p in paths:
        v = value_at(doc, p)
        if v is not None:
            return v
    return None


def own_named(extra: Any, paths: Iterable[Path]) -> bool:
    """Whether the document names its own reference (in the row: in metadata.extra, where a
    reference's attribute always stays)."""
    return first_value(extra, paths) is not None


def own_named_sql(paths: Sequence[Path], alias: str = "t") -> sql.Composable:
    """own_named() of row `alias` on the server."""
    if not paths:
        return sql.SQL("false")
    return sql.SQL(" or ").join(
        sql.SQL("coalesce(jsonb_typeof({}.metadata -> 'extra' #> {}), 'null') <> 'null'").format(
            sql.Identifier(alias), sql.Literal(list(p))
        )
        for p in paths
    )


def chosen_edge(keys: Iterable[str]) -> str | None:
    """The edge whose `_from` decides when the document names no reference of its own."""
    return max(keys, default=None)


def derive(own: bool, own_id: str | None, edge_ids: dict[str, str]) -> str | None:
    """THE rule: own reference if named, else the greatest edge key's end, else None. Callers
    apply existence (a reference to a missing row is NULL)."""
    if own:
        return own_id
    key = chosen_edge(edge_ids)
    return edge_ids[key] if key is not None else None


def refresh(c: psycopg.Connection, es: EdgeSet, ids: Iterable[str]) -> set[str]:
    """Write the rule's value into `es.column` for rows `ids`, from what the rows store (their
    metadata.extra and metadata.edges), in the caller's transaction. Returns the ids changed."""
    ids = sorted(set(ids))
    if not ids:
        return set()
    own_cols = sql.SQL(", ").join(
        sql.SQL("metadata -> 'extra' #> {}").format(sql.Literal(list(p))) for p in es.own_paths
    )
    rows = c.execute(
        sql.SQL(
            "select id::text, {col}::text, jsonb_build_array({own}),"
            " (select coalesce(jsonb_object_agg(e.key, e.value -> '_from'), '{{}}')"
            "  from jsonb_each(case when jsonb_typeof(metadata -> 'edges') = 'object'"
            "  then metadata -> 'edges' else '{{}}' end) e)"
            " from {t} where id = any(%s::uuid[])"
        ).format(
            col=sql.Identifier(es.column),
            own=own_cols,
            t=sql.Identifier(es.table),
        ),
        (ids,),
    ).fetchall()
    want: dict[str, tuple[str | None, str | None]] = {}
    for rid, current, own_values, edges in rows:
        raw = next((v for v in own_values if v is not None), None)
        own_id = None
        if raw is not None and es.own_collection:
            k = reference_key(raw)
            own_id = row_id(es.own_collection, k) if k is not None else None
        edge_ids = {
            key: row_id(es.from_collection, frm.partition("/")[2])
            for key, frm in edges.items()
            if isinstance(frm, str)
        }
        want[rid] = (current, derive(raw is not None, own_id, edge_ids))
    named = sorted({w for _, w in want.values() if w is not None})
    exists = (
        {
            i
            for (i,) in c.execute(
                sql.SQL("select id::text from {} where id = any(%s::uuid[])").format(
                    sql.Identifier(es.from_table)
                ),
                (named,),
            )
        }
        if named
        else set()
    )
    changed = [
        (rid, w if w in exists else None)
        for rid, (current, w) in want.items()
        if (w if w in exists else None) != current
    ]
    if changed:
        c.execute(
            sql.SQL(
                "update {t} r set {c} = v.want from unnest(%s::uuid[], %s::uuid[]) v(id, want)"
                " where r.id = v.id and r.{c} is distinct from v.want"
            ).format(t=sql.Identifier(es.table), c=sql.Identifier(es.column)),
            ([rid for rid, _ in changed], [w for _, w in changed]),
        )
    return {rid for rid, _ in changed}


def refresh_rows(c: psycopg.Connection, mapping: Mapping, document_type: str, ids) -> None:
    """refresh() for rows just loaded into `document_type`'s table (a no-op for other types)."""
    table = target.table(document_type)
    for es in edge_sets(mapping):
        if es.table == table:
            refresh(c, es, ids)
