"""The compare object of a row, per document type, on both sides: TypeSpec.compare() builds it in
Python from a transformed source document, TypeSpec.compare_sql() has the server build the same
object from the stored row; equal rows give equal text (etl.canonical), hence equal digests."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from etl.canonical import canonical, digest_sql, jsonb_key_order, loads_exact
from etl.derived import own_named, own_named_sql
from etl.pg import scalar
from etl.target import qualified, referenced_type
from etl.target import table as table_of

DEFAULT_MARK = "(table default)"  # a NULL column whose default is volatile, on both sides
MAX_PATHS = 50  # JSON paths listed per differing row
TS_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'  # to_char() pattern of timestamps, as ts_text()
MASK_TABLE = "etl_reconcile_mask"  # (row id, column) pairs compared as DEFAULT_MARK (pg_temp)
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def ts_text(iso: str) -> str:
    """A canonical row's timestamp as the server's to_char(... at time zone 'UTC', TS_FORMAT)."""
    dt = datetime.fromisoformat(iso)
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond:06d}Z"
    )


def diff_paths(a: Any, b: Any, path: str, out: list[str]) -> None:
    """JSON paths where a and b differ (as the server would print them), at most MAX_PATHS."""
    if len(out) >= MAX_PATHS:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=jsonb_key_order):
            p = f"{path}.{k}" if path else k
            if k not in a or k not in b:
                out.append(p)
            else:
                diff_paths(a[k], b[k], p, out)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            p = f"{path}[{i}]"
            if i >= len(a) or i >= len(b):
                out.append(p)
            else:
                diff_paths(a[i], b[i], p, out)
    elif canonical(a) != canonical(b):
        out.append(path)


def digest_of(text_expr: sql.Composable) -> sql.Composed:
    """etl.canonical.digest_sql() around a composed text expression."""
    return sql.SQL(digest_sql("{}")).format(text_expr)


@dataclass
class Column:
    name: str
    kind: str  # ts | json | other
    default: Any = None  # python value of a constant default
    has_default: bool = False
    volatile: bool = False


class TypeSpec:
    """How one document type's rows are compared, on both sides. The compare object is the
    canonical row with: metadata without 'etl' and 'edges'; timestamps as ts_text(); the core's
    constant defaults for NULL columns, and DEFAULT_MARK for a NULL column with a volatile
    default (masked rows); a reference NULL when the referenced row does not exist (dangling);
    a column an edge sets only when the document has its own reference attribute."""

    def __init__(
        self,
        document_type: str,
        columns: list[Column],
        conditional: dict[str, tuple[tuple[str, ...], ...]],
        references: dict[str, str],
    ):
        self.document_type = document_type
        self.table = table_of(document_type)
        self.columns = columns
        self.conditional = conditional  # column -> the reference's paths (etl/derived.py own_named)
        self.references = references  # column -> referenced document type

    # python side
    def compare(
        self,
        values: dict,
        exists: dict[str, set],
        masks: list[str] | None,
        dangling: dict[str, int] | None,
    ) -> dict:
        out: dict[str, Any] = {}
        md = values.get("metadata")
        extra = (md or {}).get("extra") or {}
        for c in self.columns:
            name = c.name
            v = values.get(name)
            if name == "metadata":
                v = {k: x for k, x in (v or {}).items() if k != "etl" and k != "edges"}
            elif name in self.references and v is not None:
                if uuid.UUID(v).bytes not in exists[self.references[name]]:
                    if dangling is not None:
                        dangling[name] += 1
                    v = None
            if name in self.conditional and not own_named(extra, self.conditional[name]):
                v = None
            elif v is None:
                if c.volatile:
                    v = DEFAULT_MARK
                    if masks is not None:
                        masks.append(name)
                elif c.has_default:
                    v = c.default
            elif c.kind == "ts":
                v = ts_text(v)
            out[name] = v
        return out

    # server side
    def compare_sql(self, masked: set[str]) -> sql.Composed:
        """The compare object's text for row `t` of self.table: jsonb_build_object(...)::text."""
        parts = []
        for c in self.columns:
            col = sql.SQL("t.{}").format(sql.Identifier(c.name))
            expr: sql.Composable
            if c.name == "metadata":
                expr = sql.SQL("(t.metadata - 'etl' - 'edges')")
            elif c.kind == "ts":
                expr = sql.SQL("to_char({} at time zone 'UTC', {})").format(
                    col, sql.Literal(TS_FORMAT)
                )
            else:
                expr = col
            if c.name in self.conditional:
                # own reference: compared; none and an edge set it: the edge check compares it;
                # none and no edge: must be NULL (Python's side says None)
                expr = sql.SQL(
                    "case when ({}) or coalesce(t.metadata -> 'edges', '{{}}'::jsonb) = '{{}}'::jsonb"
                    " then {} end"
                ).format(own_named_sql(self.conditional[c.name]), expr)
            elif c.volatile and c.name in masked:
                expr = sql.SQL(
                    "case when exists (select 1 from pg_temp.{} m where m.id = t.id"
                    " and m.col = {}) then {}::text else {} end"
                ).format(
                    sql.Identifier(MASK_TABLE),
                    sql.Literal(c.name),
                    sql.Literal(DEFAULT_MARK),
                    expr,
                )
            parts.append(sql.SQL("{}, {}").format(sql.Literal(c.name), expr))
        return sql.SQL("jsonb_build_object({})::text").format(sql.SQL(", ").join(parts))


def type_specs(conn, mapping) -> dict[str, TypeSpec]:
    """Columns and the core's defaults from the catalog (sql/007 builds its merge the same way)."""
    edge_sets: dict[str, set[str]] = defaultdict(set)
    for cm in mapping.collections.values():
        if cm.edge is not None:
            edge_sets[cm.edge.to_document_type].add(cm.edge.sets)
    specs = {}
    for dt in mapping.document_types():
        rows = conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid)"
            " from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum"
            " where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped"
            " and a.attgenerated = '' order by a.attnum",  # generic tables' typed columns
            (qualified(dt),),
        ).fetchall()
        cols = []
        for name, typ, dflt in rows:
            kind = "ts" if typ.startswith("timestamp") else "json" if typ == "jsonb" else "other"
            col = Column(name, kind)
            if name == "filename" and dt == "resume":  # as the core: coalesce(..., 'unknown')
                col.has_default, col.default = True, "unknown"
            elif dflt is not None and name != "id":
                if "(" in _STRING_LITERAL.sub("", dflt):  # a call: now(), gen_random_uuid()
                    col.volatile = True
                else:  # a constant from the catalog (pg_get_expr): the server evaluates it
                    text = scalar(conn, sql.SQL("select to_jsonb({})::text").format(sql.SQL(dflt)))
                    col.has_default, col.default = True, loads_exact(text)
            cols.append(col)
        refs: dict[str, str] = {}
        conditional: dict[str, tuple[tuple[str, ...], ...]] = {}
        for cm in mapping.collections.values():
            for t in cm.targets():
                if t.document_type != dt:
                    continue
                for f in t.references:
                    refs[f.name] = (
                        referenced_type(f.name)
                        or mapping.for_collection(f.collection).targets()[0].document_type
                    )
                    if f.name in edge_sets.get(dt, ()):
                        conditional[f.name] = f.paths
        specs[dt] = TypeSpec(dt, cols, conditional, refs)
    conn.commit()
    return specs


def load_masks(conn, masks: set[tuple[str, str]]) -> None:
    """(row id, column) pairs whose volatile default both sides compare as DEFAULT_MARK, into
    a temp table of the current transaction (emptied at its commit). Loaded again for every
    query that reads it: behind PgBouncer in transaction pooling the next transaction may run
    on another server session, which has no such table, or one left by another client."""
    conn.execute(
        sql.SQL(
            "create temp table if not exists {} (id uuid, col text, primary key (id, col))"
            " on commit delete rows"
        ).format(sql.Identifier(MASK_TABLE))
    )
    conn.execute(sql.SQL("truncate pg_temp.{}").format(sql.Identifier(MASK_TABLE)))
    if not masks:
        return
    with conn.cursor().copy(
        sql.SQL("copy pg_temp.{} (id, col) from stdin").format(sql.Identifier(MASK_TABLE))
    ) as copy:
        for m in masks:
            copy.write_row(m)
