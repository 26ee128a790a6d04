"""Load rows of a generic table: COPY into a temp stage, then one set-based merge with the
same rules as sql/007's etl_merge_stage(): an id staged twice keeps its last copy (the earlier
ones are 'superseded'); INSERT ... ON CONFLICT (id) DO UPDATE only WHERE the row differs, with
metadata compared without 'etl' (run id, time); RETURNING inserted / updated. Generated
columns are PostgreSQL's to fill. Called by etl.load.Loader inside its savepoint."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from etl import jsonutil
from etl.generic.names import short_hash
from etl.target import ident

_JSONB = ("data", "metadata")


def stage_name(table: str) -> str:
    return f"etl_stage_g_{table.split('.')[-1][:30]}_{short_hash(table)}"


def columns(conn, table: str) -> list[str]:
    """The table's columns that a row fills (generated ones left out), in table order."""
    return [
        r[0]
        for r in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
            " and not attisdropped and attgenerated = '' order by attnum",
            (table,),
        )
    ]


def copy_and_merge(conn, table: str, rows: Sequence) -> list[tuple[str, str]]:
    """(id, action) per inserted, updated or superseded row, like etl_merge_stage()."""
    cols = columns(conn, table)
    stage = sql.Identifier(stage_name(table))
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    conn.execute(
        sql.SQL("create temp table if not exists {} as select {} from {} with no data").format(
            stage, col_list, ident(table)
        )
    )
    with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(stage, col_list)) as copy:
        dumps = jsonutil.dumps_str
        for row in rows:
            v = row.values
            copy.write_row([dumps(v[c]) if c in _JSONB else v.get(c) for c in cols])
    conn.execute(sql.SQL("analyze {}").format(stage))
    out = [
        (str(i), a)
        for i, a in conn.execute(
            sql.SQL(
                "delete from {s} s using {s} later where later.id = s.id and later.ctid > s.ctid"
                " returning s.id, 'superseded'"
            ).format(s=stage)
        )
    ]
    others = [c for c in cols if c != "id"]

    def side(prefix: str) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{}.metadata - 'etl'").format(sql.SQL(prefix))
            if c == "metadata"
            else sql.SQL("{}.{}").format(sql.SQL(prefix), sql.Identifier(c))
            for c in others
        )

    merge = sql.SQL(
        "insert into {t} as t ({cols}) select {cols} from {s}"
        " on conflict (id) do update set {set}"
        " where ({old}) is distinct from ({new})"
        " returning t.id, case when t.xmax = 0 then 'inserted' else 'updated' end"
    ).format(
        t=ident(table),
        cols=col_list,
        s=stage,
        set=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in others
        ),
        old=side("t"),
        new=side("excluded"),
    )
    out += [(str(i), a) for i, a in conn.execute(merge)]
    conn.execute(sql.SQL("truncate {}").format(stage))
    return out


def end_collection_tables(mapping, collection: str) -> list[str] | None:
    """The tables that hold the rows of an edge end's collection (by transform.row_id); None
    when the collection is not migrated to rows (not in the mapping, or a curated edge)."""
    cm = mapping.for_collection(collection)
    if cm is None or cm.edge is not None:
        return None
    return [t.table for t in mapping.target_tables(collection)]


def edge_ends(conn, mapping, rows: Sequence) -> list[dict]:
    """The ends of generic edge rows (loaded, in the caller's transaction) that the target does
    not hold: {key, end, ref, problem}, problem "dangling" (the end's collection is migrated,
    its table has no such row) or "unknown_collection" (the collection is not migrated)."""
    by_key = {r.key: r.values for r in rows}  # a key staged twice: its last copy was loaded
    wanted: dict[str, set[str]] = {}
    ends = []
    for key, v in by_key.items():
        for end, ref, rid in (
            ("_from", v["from_ref"], v["from_id"]),
            ("_to", v["to_ref"], v["to_id"]),
        ):
            tables = end_collection_tables(mapping, ref.split("/", 1)[0])
            ends.append((key, end, ref, str(rid), tables))
            for t in tables or ():
                wanted.setdefault(t, set()).add(str(rid))
    held: set[str] = set()
    for t, ids in wanted.items():
        held.update(
            str(i)
            for (i,) in conn.execute(
                sql.SQL("select id from {} where id = any(%s::uuid[])").format(ident(t)),
                (sorted(ids),),
            )
        )
    return [
        {
            "key": key,
            "end": end,
            "ref": ref,
            "problem": "unknown_collection" if tables is None else "dangling",
        }
        for key, end, ref, rid, tables in ends
        if tables is None or rid not in held
    ]
