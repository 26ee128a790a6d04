"""The generated migration of a generic table: CREATE TABLE with its typed STORED generated
columns, its indexes and comment, as text (checksummed like the sql/ files), plus a
description of it (`shape`) that tells a change which only adds columns or indexes."""

from __future__ import annotations

import hashlib
import json

from psycopg import sql

from etl.generic.names import index_name
from etl.generic.spec import GenericIndex, GenericTarget, TypedColumn

# ISO-8601 date or date-time, optional fraction and zone (the timestamptz helper accepts only
# these; etl.generic.discover proposes timestamptz only when every sampled value matches)
ISO_8601 = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"


def _text(q: sql.Composable) -> str:
    return q.as_string(None)


def helpers(schema: str) -> list[str]:
    """The schema and the two immutable helpers the typed columns use. A text -> timestamptz
    cast depends on the session's TimeZone and DateStyle, so it cannot be in a generated
    column as it is: the helper pins both (a string without a zone is UTC) and turns what is
    not a timestamp into NULL instead of an error that would refuse the row."""
    s = sql.Identifier(schema)
    return [
        _text(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s)),
        _text(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}.etl_jsonb_bigint(v jsonb) RETURNS bigint\n"
                "LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$\n"
                "BEGIN\n"
                "    IF jsonb_typeof(v) = 'number' AND (v #>> '{{}}') ~ '^-?[0-9]+$' THEN\n"
                "        RETURN (v #>> '{{}}')::bigint;\n"
                "    END IF;\n"
                "    RETURN NULL;\n"
                "EXCEPTION WHEN data_exception THEN RETURN NULL;\n"
                "END\n$f$"
            ).format(s)
        ),
        _text(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}.etl_jsonb_timestamptz(v jsonb) RETURNS timestamptz\n"
                "LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE\n"
                "SET timezone = 'UTC' SET datestyle = 'ISO, YMD' AS $f$\n"
                "BEGIN\n"
                "    IF jsonb_typeof(v) = 'string' AND (v #>> '{{}}') ~ {} THEN\n"
                "        RETURN (v #>> '{{}}')::timestamptz;\n"
                "    END IF;\n"
                "    RETURN NULL;\n"
                "EXCEPTION WHEN data_exception THEN RETURN NULL;\n"
                "END\n$f$"
            ).format(s, sql.Literal(ISO_8601))
        ),
    ]


def typed_expression(schema: str, col: TypedColumn) -> sql.Composable:
    v = sql.SQL("data -> {}").format(sql.Literal(col.attribute))
    t = sql.SQL("data ->> {}").format(sql.Literal(col.attribute))
    if col.type == "bigint":
        return sql.SQL("{}.etl_jsonb_bigint({})").format(sql.Identifier(schema), v)
    if col.type == "timestamptz":
        return sql.SQL("{}.etl_jsonb_timestamptz({})").format(sql.Identifier(schema), v)
    json_type, cast = {
        "text": ("string", sql.SQL("{}")),
        "numeric": ("number", sql.SQL("({})::numeric")),
        "boolean": ("boolean", sql.SQL("({})::boolean")),
    }[col.type]
    return sql.SQL("CASE WHEN jsonb_typeof({}) = {} THEN {} END").format(
        v, sql.Literal(json_type), cast.format(t)
    )


def column_definition(schema: str, col: TypedColumn) -> str:
    return _text(
        sql.SQL("{} {} GENERATED ALWAYS AS ({}) STORED").format(
            sql.Identifier(col.name), sql.SQL(col.type), typed_expression(schema, col)
        )
    )


def _field(target: GenericTarget, f: str) -> sql.Composable:
    system = {"_key": "key", "_from": "from_ref", "_to": "to_ref"}
    if f in system and (f == "_key" or target.edge):
        return sql.Identifier(system[f])
    for c in target.typed:
        if f in (c.name, c.attribute):
            return sql.Identifier(c.name)
    path = sql.SQL(", ").join(map(sql.Literal, f.split(".")))
    return sql.SQL("(data #>> ARRAY[{}])").format(path)


def index_statement(target: GenericTarget, ix: GenericIndex) -> str:
    table = sql.Identifier(target.schema, target.table_name)
    name = sql.Identifier(ix.name)
    if ix.kind == "fulltext":
        return _text(
            sql.SQL(
                "CREATE INDEX {} ON {} USING gin (to_tsvector('simple', coalesce({}, '')))"
            ).format(name, table, _field(target, ix.fields[0]))
        )
    return _text(
        sql.SQL("CREATE {}INDEX {} ON {} ({})").format(
            sql.SQL("UNIQUE " if ix.unique else ""),
            name,
            table,
            sql.SQL(", ").join(_field(target, f) for f in ix.fields),
        )
    )


def base_indexes(target: GenericTarget) -> dict[str, str]:
    """The GIN index on data, and from_id / to_id of an edge table."""
    table = sql.Identifier(target.schema, target.table_name)
    out = {}
    gin = index_name(target.table_name, "data_gin")
    out[gin] = _text(
        sql.SQL("CREATE INDEX {} ON {} USING gin (data jsonb_path_ops)").format(
            sql.Identifier(gin), table
        )
    )
    if target.edge:
        for col in ("from_id", "to_id"):
            name = index_name(target.table_name, f"{col}_idx")
            out[name] = _text(
                sql.SQL("CREATE INDEX {} ON {} ({})").format(
                    sql.Identifier(name), table, sql.Identifier(col)
                )
            )
    return out


def comment(target: GenericTarget) -> str:
    text = f"ArangoDB {'edge' if target.edge else 'document'} collection {target.collection!r}"
    text += " (etl generic table: data is the document without _key, _id, _rev, _from, _to)"
    if target.from_collections or target.to_collections:
        text += (
            f"; graph edges from {', '.join(target.from_collections) or '?'}"
            f" to {', '.join(target.to_collections) or '?'}"
        )
    if target.not_translated:
        text += "; not translated: " + "; ".join(target.not_translated)
    return _text(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            sql.Identifier(target.schema, target.table_name), sql.Literal(text)
        )
    )


def shape(target: GenericTarget) -> dict:
    """What the table is: base columns, typed columns and indexes by name, with their SQL."""
    base = ["id uuid PRIMARY KEY", "key text NOT NULL UNIQUE", "data jsonb NOT NULL"]
    base.append("metadata jsonb NOT NULL")
    if target.edge:
        base += ["from_ref text NOT NULL", "to_ref text NOT NULL"]
        base += ["from_id uuid NOT NULL", "to_id uuid NOT NULL"]
    indexes = base_indexes(target)
    indexes.update({ix.name: index_statement(target, ix) for ix in target.indexes})
    return {
        "table": target.table,
        "collection": target.collection,
        "base": base,
        "columns": {c.name: column_definition(target.schema, c) for c in target.typed},
        "indexes": indexes,
        "comment": comment(target),
    }


def create_statements(target: GenericTarget) -> list[str]:
    s = shape(target)
    cols = ",\n    ".join([*s["base"], *s["columns"].values()])
    table = _text(sql.Identifier(target.schema, target.table_name))
    return [
        *helpers(target.schema),
        f"CREATE TABLE {table} (\n    {cols}\n)",
        *s["indexes"].values(),
        s["comment"],
    ]


def checksum(target: GenericTarget) -> str:
    return hashlib.sha256(json.dumps(shape(target), sort_keys=True).encode()).hexdigest()


def additions(old: dict, new: dict) -> list[str] | None:
    """The statements that turn table `old` (a shape) into `new` when `new` only adds typed
    columns or indexes (or changes the comment); None when it changes or removes anything."""
    if old["base"] != new["base"] or old["table"] != new["table"]:
        return None
    for k in ("columns", "indexes"):
        if any(new[k].get(n) != d for n, d in old[k].items()):
            return None
    table = _text(sql.SQL("{}").format(sql.Identifier(*new["table"].split("."))))
    out = [
        f"ALTER TABLE {table} ADD COLUMN {d}"
        for n, d in new["columns"].items()
        if n not in old["columns"]
    ]
    out += [d for n, d in new["indexes"].items() if n not in old["indexes"]]
    if old["comment"] != new["comment"]:
        out.append(new["comment"])
    return out


def changes(old: dict, new: dict) -> str:
    """What a change that is not only additions does, in a few words."""
    what = []
    if old["base"] != new["base"]:
        what.append("document/edge kind")
    for k, label in (("columns", "typed column"), ("indexes", "index")):
        for n, d in old[k].items():
            if n not in new[k]:
                what.append(f"drops {label} {n}")
            elif new[k][n] != d:
                what.append(f"changes {label} {n}")
    return ", ".join(what) or "changes the table"
