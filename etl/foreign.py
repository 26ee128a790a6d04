"""Rows in the target tables that etl did not write: every row etl writes carries
metadata.etl.run_id; a row without it is the application's, a restore's or a hand-made one.
A migrate says so before it loads (it merges by key and leaves those rows as they are), so that
an operator pointed at the wrong database, or at a server a demo filled, finds out at once."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from etl import pg, target

log = logging.getLogger("etl.migrate")

CAP = 1000  # count at most this many: enough to say "1000 or more" without reading a big table


def foreign_rows(conn: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    """table -> rows without metadata.etl.run_id (at most CAP), for the tables that have any."""
    out: dict[str, int] = {}
    for table in tables:
        has_metadata = pg.scalar(
            conn,
            "select exists (select 1 from pg_attribute where attrelid = to_regclass(%s)"
            " and attname = 'metadata' and not attisdropped)",
            (table,),
        )
        if not has_metadata:
            continue
        n = pg.scalar(
            conn,
            sql.SQL(
                "select count(*) from (select 1 from {} where metadata #>> '{{etl,run_id}}' is null"
                " limit %s) s"
            ).format(target.ident(table)),
            (CAP,),
        )
        if n:
            out[table] = n
    return out


def say_foreign_rows(conn: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    """One warning naming the tables that hold rows etl did not write; never stops the run."""
    try:
        found = foreign_rows(conn, tables)
        conn.commit()
    except psycopg.Error as exc:  # a role that may not read a table: the load will say more
        conn.rollback()
        log.info("could not look for rows etl did not write: %s", str(exc).splitlines()[0])
        return {}
    if found:
        listed = ", ".join(
            f"{t} ({n if n < CAP else f'{CAP} or more'})" for t, n in sorted(found.items())
        )
        log.warning(
            "the target already holds rows etl did not write (no metadata.etl.run_id): %s;"
            " they stay as they are unless a source document has the same key (is this the"
            " right database?)",
            listed,
        )
    return found
