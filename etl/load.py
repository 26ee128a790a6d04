"""Load: COPY a batch of canonical rows into the session's staging table, then upsert them with
etl_merge_stage() (sql/007). Rows the database refuses on data are bisected down to one reject
each; transient errors go up to the batch retry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import sql

from etl import derived, jsonutil, target
from etl.errors import is_transient
from etl.generic import load as generic_load
from etl.generic.names import is_generic
from etl.pg import scalar
from etl.target import JSONB_COLUMNS

if TYPE_CHECKING:
    from etl.transform import EdgeLink, Row

# SQLSTATE classes that mean "this row's data is not acceptable": data exceptions (22),
# integrity violations (23), RAISE from a validation trigger (P0001), program limits such as a
# too-large or too-deep jsonb value (54). Anything else is a bug or a schema problem and must
# not be turned into thousands of rejects.
_ROW_LEVEL_SQLSTATE = ("22", "23", "P0001", "54")


@dataclass
class LoadOutcome:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    dangling: int = 0
    rejected: list[tuple[Row, str]] = field(default_factory=list)  # (row, reason)
    inserted_ids: set[str] = field(default_factory=set)  # the rows that were not there before

    def __iadd__(self, other: LoadOutcome) -> LoadOutcome:
        self.inserted += other.inserted
        self.inserted_ids |= other.inserted_ids
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.dangling += other.dangling
        self.rejected.extend(other.rejected)
        return self


# the reject reason of an edge whose end is not in the target (migrate and sync alike)
DANGLING_EDGE = "dangling_edge: an end of the edge is not in the target"


@dataclass
class LinkOutcome:
    linked: int = 0
    new: int = 0  # of `linked`: edges the target row did not hold before (reported as inserted)
    unchanged: int = 0
    dangling: list[EdgeLink] = field(
        default_factory=list
    )  # EdgeLink objects whose ends are missing


def row_level_error(exc: psycopg.Error) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith(_ROW_LEVEL_SQLSTATE)


def describe_db_error(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    msg = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    detail = diag.message_detail if diag else None
    text = f"{exc.sqlstate}: {msg}" + (f" ({detail})" if detail else "")
    from etl.privacy import scrub_db_message

    return scrub_db_message(text.replace("\n", " "))[:500]


class Loader:
    """One per connection: remembers which staging tables this session has prepared."""

    def __init__(self, conn: psycopg.Connection, run_id: str):
        self.conn = conn
        self.run_id = run_id
        self._columns: dict[str, list[str]] = {}

    # -- documents -------------------------------------------------------------------------
    def _stage_columns(self, document_type: str) -> tuple[str, list[str]]:
        stage = scalar(self.conn, "select etl_prepare_stage(%s)::text", (document_type,))
        if document_type not in self._columns:
            cols = self.conn.execute(
                "select attname from pg_attribute where attrelid = %s::regclass"
                " and attnum > 0 and not attisdropped order by attnum",
                (stage,),
            ).fetchall()
            self._columns[document_type] = [c[0] for c in cols]
        return stage, self._columns[document_type]

    def load(self, document_type: str, rows: Sequence[Row]) -> LoadOutcome:
        """Upsert rows (transform.Row) of one document type (or generic target: its
        schema-qualified table, or the GenericTarget); bad rows come back as rejects."""
        document_type = getattr(document_type, "document_type", document_type)
        if not rows:
            return LoadOutcome()
        try:
            with self.conn.transaction():  # a savepoint inside the batch transaction
                return self._copy_and_merge(document_type, rows)
        except psycopg.Error as exc:
            if (
                self.conn.closed
                or self.conn.broken
                or is_transient(exc)
                or not row_level_error(exc)
            ):
                raise
            if len(rows) == 1:
                return LoadOutcome(rejected=[(rows[0], describe_db_error(exc))])
            mid = len(rows) // 2
            out = self.load(document_type, rows[:mid])
            out += self.load(document_type, rows[mid:])
            return out

    def _copy_and_merge(self, document_type: str, rows: Sequence[Row]) -> LoadOutcome:
        if is_generic(document_type):  # a generic table (etl/generic/load.py)
            actions = generic_load.copy_and_merge(self.conn, document_type, rows)
            out = LoadOutcome(inserted_ids={str(i) for i, a in actions if a == "inserted"})
            out.inserted = len(out.inserted_ids)
            out.updated = sum(a == "updated" for _, a in actions)
            out.unchanged = len(rows) - out.inserted - out.updated
            return out
        stage, columns = self._stage_columns(document_type)
        copy_sql = sql.SQL("copy {} ({}) from stdin").format(
            sql.Identifier(*stage.split(".")) if "." in stage else sql.Identifier(stage),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
        )
        dumps = jsonutil.dumps_str
        with self.conn.cursor().copy(copy_sql) as copy:
            for row in rows:
                v = row.values
                copy.write_row(
                    [
                        (dumps(v[c]) if c in JSONB_COLUMNS and v.get(c) is not None else v.get(c))
                        for c in columns
                    ]
                )
        # A fresh temp table has no statistics; without them the planner guesses a handful of
        # rows and joins the target table with nested loops. ANALYZE of the stage costs ~1 ms.
        self.conn.execute(sql.SQL("analyze {}").format(sql.Identifier(*stage.split("."))))
        out = LoadOutcome()
        # a dangling reference loads NULL; a parent that comes later links it (etl/links.py)
        for _id, action in self.conn.execute(
            "select id, action from etl_merge_stage(%s, %s)", (document_type, self.run_id)
        ):
            if action == "inserted":
                out.inserted += 1
                out.inserted_ids.add(str(_id))
            elif action == "updated":
                out.updated += 1
            elif action.startswith("dangling"):
                out.dangling += 1
        out.unchanged = len(rows) - out.inserted - out.updated
        return out

    def relink_parents(
        self, table: str, refs: Sequence[tuple[str, str]], column: str = "parent_optimization_id"
    ) -> int:
        """Set a reference (by default parent_optimization_id) where the parent arrived after
        its child (the pairs etl/links.py finds); returns how many. A link the validation refuses (another user or resume)
        stays null and counted dangling."""
        if not refs:
            return 0
        linked = 0
        referenced = target.referenced_type(column)
        parent = sql.Identifier(target.table(referenced) if referenced else table)
        with self.conn.transaction():
            self.conn.execute("select set_config('etl.run_id', %s, true)", (self.run_id,))
            for chunk in _chunks(list(refs), 1000):
                try:
                    with self.conn.transaction():
                        cur = self.conn.execute(
                            sql.SQL(
                                "update {t} o set {c} = v.parent"
                                " from unnest(%s::uuid[], %s::uuid[]) as v(id, parent)"
                                " where o.id = v.id and o.{c} is null"
                                " and exists (select 1 from {p} p where p.id = v.parent)"
                            ).format(t=sql.Identifier(table), c=sql.Identifier(column), p=parent),
                            ([c for c, _ in chunk], [p for _, p in chunk]),
                        )
                        linked += cur.rowcount
                except psycopg.Error as exc:
                    if not row_level_error(exc):
                        raise
                    # one link at a time: keep the ones the database accepts (the loop's names
                    # must not shadow `parent`, the parent table)
                    for child_id, parent_id in chunk:
                        try:
                            with self.conn.transaction():
                                linked += self.conn.execute(
                                    sql.SQL(
                                        "update {t} o set {c} = %s where o.id = %s"
                                        " and o.{c} is null"
                                        " and exists (select 1 from {p} p where p.id = %s)"
                                    ).format(
                                        t=sql.Identifier(table), c=sql.Identifier(column), p=parent
                                    ),
                                    (parent_id, child_id, parent_id),
                                ).rowcount
                        except psycopg.Error as exc2:
                            if not row_level_error(exc2):
                                raise
        return linked

    # -- edges -----------------------------------------------------------------------------
    def link_edges(self, links: Sequence[EdgeLink], es: derived.EdgeSet) -> LinkOutcome:
        """Apply edges (transform.EdgeLink) set-based: each edge whose two ends exist is kept
        in its `_to` row's metadata.edges[key]; then the column the edge sets is recomputed
        for those rows by derived.refresh() (the one rule). An edge with a missing end is
        dangling (the caller records it as a reject)."""
        out = LinkOutcome()
        if not links:
            return out
        self.conn.execute(
            "create temp table if not exists etl_stage_edge"
            " (edge_key text, target_id uuid, job_id uuid, edge jsonb)"
        )
        by_key = {link.key: link for link in links}
        with self.conn.transaction():
            self.conn.execute("truncate etl_stage_edge")
            with self.conn.cursor().copy(
                "copy etl_stage_edge (edge_key, target_id, job_id, edge) from stdin"
            ) as copy:
                for link in links:
                    copy.write_row(
                        (link.key, link.target_id, link.job_id, jsonutil.dumps_str(link.edge))
                    )
            self.conn.execute("analyze pg_temp.etl_stage_edge")
            found = self.conn.execute(
                sql.SQL(
                    "with src as ("
                    " select e.edge_key, e.target_id, e.edge,"
                    "  exists (select 1 from {t} r where r.id = e.target_id)"
                    "  and exists (select 1 from {f} j where j.id = e.job_id) as ok,"
                    "  exists (select 1 from {t} r where r.id = e.target_id"
                    "   and r.metadata -> 'edges' ? e.edge_key) as held"
                    " from pg_temp.etl_stage_edge e"
                    "), agg as ("
                    " select s.target_id, jsonb_object_agg(s.edge_key, coalesce(s.edge, '{{}}'))"
                    "  as edges from src s where s.ok group by s.target_id"
                    "), upd as ("
                    " update {t} r set metadata = jsonb_set(r.metadata, '{{edges}}',"
                    "  coalesce(r.metadata -> 'edges', '{{}}') || a.edges)"
                    " from agg a where r.id = a.target_id"
                    "  and exists (select 1 from jsonb_each(a.edges) x"
                    "   where r.metadata -> 'edges' -> x.key is distinct from x.value)"
                    " returning r.id"
                    ") select s.edge_key, s.target_id::text, s.ok, s.held,"
                    " s.target_id in (select u.id from upd u) from src s"
                ).format(t=sql.Identifier(es.table), f=sql.Identifier(es.from_table))
            ).fetchall()
            self.conn.execute("truncate etl_stage_edge")
            changed = derived.refresh(self.conn, es, {t for _, t, ok, _, _ in found if ok})
            for key, target_id, ok, held, merged in found:
                if not ok:
                    out.dangling.append(by_key[key])
                elif merged or target_id in changed:
                    out.linked += 1
                    out.new += not held  # an edge the row did not hold: reported as inserted
                else:
                    out.unchanged += 1
        return out


T = TypeVar("T")


def _chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
