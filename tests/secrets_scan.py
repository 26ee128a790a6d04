"""Find secrets (passwords, tokens) in output texts, files and the database etl writes to.

Used by tests/test_secrets.py and by the soak harness (soak/run.py prints "secrets leaked: N").

    scan_for_secrets(secrets, *, texts=(), paths=(), conn=None, scanned=None) -> list[str]

    secrets   the secret strings to look for (empty strings are ignored). Each is also looked
              for in the forms it may take on its way out: percent-encoded (a DSN or URL),
              JSON-escaped, and base64 of "<user>:<secret>" is NOT guessed (pass the exact
              string, e.g. an Authorization header value, as a secret of its own).
    texts     what a process printed: a mapping {label: text} or an iterable of (label, text)
              pairs, e.g. {"migrate stdout": proc.stdout, "migrate stderr": proc.stderr}.
    paths     files or directories (directories recursively; every regular file is searched
              as raw bytes for the UTF-8 forms; compressed files are not decompressed), e.g. the
              reports directory or a log file. A path that does not exist is skipped.
    conn      a psycopg Connection, or a DSN string: every column of a text-like type (text,
              varchar, char, json, jsonb, name) of every table in the schemas on search_path
              (the etl run tables, document_audit_log, migration_history and the target tables).
              `tables=` limits the scan to those table names.
    scanned   optional list; one entry is appended per place scanned (a text, a file, a table
              column), so a caller can report how much was looked at.

Returns one string per hit: "<secret #i> in <place>" (the secret itself is never repeated in
the result, so printing the result leaks nothing). An empty list = no leak.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

__all__ = ["scan_for_secrets", "variants"]


def variants(secret: str) -> list[str]:
    """The forms a secret can take in output: as is, percent-encoded, JSON-escaped."""
    out = [secret]
    for v in (quote(secret, safe=""), quote(secret), json.dumps(secret)[1:-1]):
        if v not in out:
            out.append(v)
    return out


def scan_for_secrets(
    secrets: Iterable[str],
    *,
    texts: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    paths: Iterable[str | os.PathLike] = (),
    conn=None,
    tables: Iterable[str] | None = None,
    scanned: list[str] | None = None,
) -> list[str]:
    secrets = [s for s in dict.fromkeys(secrets) if s]
    forms = [(i, v) for i, s in enumerate(secrets, 1) for v in variants(s)]
    scanned = scanned if scanned is not None else []
    hits: list[str] = []

    def check_text(place: str, text: str) -> None:
        scanned.append(place)
        found = sorted({i for i, v in forms if v in text})
        hits.extend(f"secret #{i} in {place}" for i in found)

    items = texts.items() if isinstance(texts, Mapping) else texts
    for label, text in items:
        check_text(label, text or "")

    for p in paths:
        p = Path(p)
        files = (
            sorted(f for f in p.rglob("*") if f.is_file())
            if p.is_dir()
            else [p]
            if p.is_file()
            else []
        )
        for f in files:
            scanned.append(f"file {f}")
            data = f.read_bytes()
            found = sorted({i for i, v in forms if v.encode("utf-8", "surrogatepass") in data})
            hits.extend(f"secret #{i} in file {f}" for i in found)

    if conn is not None:
        hits.extend(_scan_db(conn, forms, tables, scanned))
    return hits


def _scan_db(conn, forms, tables, scanned: list[str]) -> list[str]:
    import psycopg
    from psycopg import sql

    own = isinstance(conn, str)
    c = psycopg.connect(conn, autocommit=True) if own else conn
    hits: list[str] = []
    try:
        wanted = list(tables) if tables is not None else None
        cols = c.execute(
            "select c.table_schema, c.table_name, c.column_name from information_schema.columns c"
            " join information_schema.tables t using (table_schema, table_name)"
            " where t.table_type = 'BASE TABLE' and c.table_schema = any(current_schemas(false))"
            " and c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb', 'name')"
            " order by 1, 2, c.ordinal_position"
        ).fetchall()
        for schema, table, column in cols:
            if wanted is not None and table not in wanted:
                continue
            place = f"database column {table}.{column}"
            scanned.append(place)
            expr = sql.SQL("{}::text").format(sql.Identifier(column))
            for i in sorted({i for i, _ in forms}):
                needles = [v for j, v in forms if j == i]
                q = sql.SQL("select count(*) from {}.{} where ").format(
                    sql.Identifier(schema), sql.Identifier(table)
                ) + sql.SQL(" or ").join(
                    sql.SQL("strpos({}, %s) > 0").format(expr) for _ in needles
                )
                n = c.execute(q, needles).fetchone()[0]
                if n:
                    hits.append(f"secret #{i} in {place} ({n} rows)")
    finally:
        if own:
            c.close()
    return hits
