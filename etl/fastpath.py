"""The empty-table fast path: COPY a batch straight into its target table, no stage, no merge.

When a target table was EMPTY at the start of a run that is not a resume, its batches skip the
stage table and etl_merge_stage() (sql/007): the rows go to the table with one COPY. What the
merge does for an insert is done here before the COPY, with the same result:

- a key repeated in the batch: the last copy wins, the earlier ones count as unchanged
  (the merge's 'superseded');
- a reference (resume_id, job_id, parent_optimization_id) whose row is not in its table (nor,
  for a parent, in the batch) is set to NULL and counted dangling; a parent that comes later
  links it at the end of the collection, as for the merge path (etl/links.py);
- a NULL column takes the table default (evaluated in the batch's transaction, so now() is
  the same instant the merge would give), filename 'unknown' as the merge does.

Anything the COPY refuses (a row the database rejects, a row that is already there after a
crash or a concurrent writer: a primary key violation) rolls back to the batch's savepoint and
the batch goes through the merge path (etl/load.py), which bisects down to the rejects and
updates or leaves unchanged what is there. So the fast path can only ever insert rows the merge
would have inserted; its being chosen (empty at the start, not a resume) is about speed, not
correctness. A resumed run, a re-run and a non-empty table use the merge path.

ETL_PERF_OFF (comma-separated lever names, e.g. "fastpath") turns levers off: the bench
measures each one against the run with everything on (bench/run.py --variant).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from etl import jsonutil, pg
from etl.errors import is_transient
from etl.load import Loader, LoadOutcome, row_level_error
from etl.pg import scalar
from etl.target import JSONB_COLUMNS

if TYPE_CHECKING:
    from etl.transform import Row

log = logging.getLogger("etl.fastpath")

# the merge core's reference columns and the tables they point at (sql/007, step 1)
REFERENCES = (
    ("resume_id", "resume_documents"),
    ("job_id", "job_documents"),
    ("parent_optimization_id", "optimization_results"),
)
PARENT = "parent_optimization_id"


def lever_on(name: str) -> bool:
    """False when ETL_PERF_OFF names the lever (bench A/B measurements)."""
    return name not in {x.strip() for x in os.environ.get("ETL_PERF_OFF", "").split(",")}


def lz4_available(conn: psycopg.Connection) -> bool:
    """PostgreSQL 14+ built with lz4 offers it for default_toast_compression; elsewhere the
    setting does not exist or refuses the value, and rows keep the server's pglz."""
    return bool(
        scalar(
            conn,
            "select coalesce((select 'lz4' = any(enumvals) from pg_settings"
            " where name = 'default_toast_compression'), false)",
        )
    )


def empty_tables(conn: psycopg.Connection, tables: list[str]) -> set[str]:
    """The tables among `tables` that hold no row (in the caller's transaction)."""
    return {
        t
        for t in tables
        if not scalar(conn, sql.SQL("select exists (select 1 from {})").format(sql.Identifier(t)))
    }


class _NotFast(Exception):
    """This batch needs the merge path (e.g. a NULL where the default is volatile)."""


class _Table:
    """What the fast path needs to know of a target table, read once from the catalog."""

    def __init__(self, conn: psycopg.Connection, document_type: str):
        self.name = scalar(conn, "select etl_document_table(%s)::text", (document_type,))
        rows = conn.execute(
            "select a.attname, pg_get_expr(d.adbin, d.adrelid),"
            " exists (select 1 from pg_depend p join pg_proc f on f.oid = p.refobjid"
            "         where p.classid = 'pg_attrdef'::regclass and p.objid = d.oid"
            "           and p.refclassid = 'pg_proc'::regclass and f.provolatile = 'v')"
            " from pg_attribute a left join pg_attrdef d"
            "   on d.adrelid = a.attrelid and d.adnum = a.attnum"
            " where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum",
            (self.name,),
        ).fetchall()
        self.columns = [name for name, _, _ in rows]
        self.defaults = {name: expr for name, expr, volatile in rows if expr and not volatile}
        self.volatile = {name for name, expr, volatile in rows if expr and volatile}
        if self.name == "public.resume_documents":  # the merge's coalesce(filename, 'unknown')
            self.defaults.setdefault("filename", "'unknown'::text")
        self.references = [(c, t) for c, t in REFERENCES if c in self.columns]
        self.defaults_sql = (
            sql.SQL("select {}").format(
                sql.SQL(", ").join(sql.SQL(f"({e})::text") for e in self.defaults.values())
            )
            if self.defaults
            else None
        )
        self.copy_sql = sql.SQL("copy {} ({}) from stdin").format(
            sql.Identifier(*self.name.split(".")),
            sql.SQL(", ").join(map(sql.Identifier, self.columns)),
        )


class FastPath:
    """The document types whose tables were empty when the run started; one per pipeline.
    load() is called instead of Loader.load() for those types, in the batch's transaction."""

    def __init__(self, document_types: set[str]):
        self.document_types = set(document_types)
        self._tables: dict[str, _Table] = {}
        self.fallbacks = 0  # batches that went to the merge path

    def applies(self, document_type: str) -> bool:
        return document_type in self.document_types

    def load(self, loader: Loader, document_type: str, rows: Sequence) -> LoadOutcome:
        if not rows:
            return LoadOutcome()
        conn = loader.conn
        try:
            with conn.transaction():  # a savepoint inside the batch transaction
                return self._copy(conn, document_type, rows)
        except _NotFast:
            pass
        except psycopg.Error as exc:
            if conn.closed or conn.broken or is_transient(exc) or not row_level_error(exc):
                raise
            log.debug("fast path refused a %s batch, merging it: %s", document_type, exc)
        self.fallbacks += 1
        return loader.load(document_type, rows)

    def _table(self, conn, document_type: str) -> _Table:
        t = self._tables.get(document_type)
        if t is None:
            t = self._tables[document_type] = _Table(conn, document_type)
        return t

    def _copy(
        self, conn: psycopg.Connection, document_type: str, rows: Sequence[Row]
    ) -> LoadOutcome:
        t = self._table(conn, document_type)
        out = LoadOutcome()
        # the last copy of a repeated id wins (the merge's 'superseded' are counted unchanged)
        last: dict[object, Row] = {}
        for row in rows:
            last[row.values.get("id")] = row
        batch = list(last.values())
        for c in t.volatile:
            if any(r.values.get(c) is None for r in batch):
                raise _NotFast
        ids = {str(i) for i in last}
        # references to rows that are not there: NULL and dangling (one query for all columns)
        missing: dict[str, set[str]] = {}
        if t.references:
            parts, params = [], []
            for col, ref in t.references:
                wanted = {str(r.values[col]) for r in batch if r.values.get(col) is not None}
                if col == PARENT:
                    wanted -= ids  # the parent may arrive in the same batch
                if not wanted:
                    continue
                parts.append(
                    sql.SQL(
                        "select {c}::text, x::text from unnest(%s::uuid[]) x"
                        " where not exists (select 1 from {t} r where r.id = x)"
                    ).format(c=sql.Literal(col), t=sql.Identifier("public", ref))
                )
                params.append(list(wanted))
            if parts:
                for col, value in conn.execute(sql.SQL(" union all ").join(parts), params):
                    missing.setdefault(col, set()).add(value)
        defaults = {}
        if t.defaults_sql is not None:  # in this transaction: now() is the merge's instant
            defaults = dict(zip(t.defaults, pg.one(conn, t.defaults_sql), strict=True))
        dumps = jsonutil.dumps_str
        columns = t.columns
        with conn.cursor().copy(t.copy_sql) as copy:
            for row in batch:
                v = row.values
                values = []
                for c in columns:
                    x = v.get(c)
                    if x is None:
                        x = defaults.get(c)
                    elif c in JSONB_COLUMNS:
                        x = dumps(x)
                    elif c in missing and str(x) in missing[c]:
                        x = None
                        out.dangling += 1
                    values.append(x)
                copy.write_row(values)
        out.inserted = len(batch)
        out.unchanged = len(rows) - len(batch)
        return out
