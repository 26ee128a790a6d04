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
