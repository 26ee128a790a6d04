"""The loader role's privileges, read from the catalog of an applied schema: `etl grants --role
NAME` prints the GRANT statements (or applies them with --apply), so that migrate, reconcile and
status run as a role that owns nothing. docs/roles.md says which role does what."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from etl import target
from etl.pg import scalar

# the document tables: the merge core upserts; etl sync deletes the rows of removed documents
WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
BOOKKEEPING = ("SELECT", "INSERT", "UPDATE", "DELETE")  # etl_* run tables
READ = ("SELECT",)


@dataclass(frozen=True)
class Grant:
    kind: str  # DATABASE | SCHEMA | TABLE | SEQUENCE | FUNCTION
    name: str  # qualified and quoted as PostgreSQL prints it
    privileges: tuple[str, ...]
    why: str

    def statement(self, role: str) -> sql.Composed:
        return sql.SQL("GRANT {} ON {} {} TO {}").format(
            sql.SQL(", ").join(map(sql.SQL, self.privileges)),
            sql.SQL(self.kind),
            sql.SQL(self.name),
            sql.Identifier(role),
        )


def loader_grants(conn: psycopg.Connection) -> list[Grant]:
    """Everything the loader needs, from the objects that exist: the document tables and the
    etl_* run tables it writes, migration_history it reads, the tables the triggers on those
    tables read or write (trigger functions run with the loader's rights), their sequences,
    and the schema's functions."""
    schema = _schema_of(conn, target.table(target.DOCUMENT_TYPES[0]))
    tables: dict[str, str] = dict(
        conn.execute(
            "select c.relname, format('%%I.%%I', n.nspname, c.relname) from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relkind in ('r', 'p')",
            (schema,),
        ).fetchall()
    )
    privileges: dict[str, set[str]] = {}
    why: dict[str, str] = {}

    def need(table: str, privs: tuple[str, ...], reason: str) -> None:
        if table in tables:
            privileges.setdefault(table, set()).update(privs)
            why.setdefault(table, reason)

    for document_type in target.DOCUMENT_TYPES:
        need(target.table(document_type), WRITE, "loaded by the merge core; etl sync removes")
    for name in tables:
        if name.startswith("etl_"):
            need(name, BOOKKEEPING, "run bookkeeping")
    need("migration_history", READ, "the schema version check")
    need(target.AUDIT_TABLE, ("SELECT", "INSERT"), "reconcile's audit entries")
    written = [t for t, p in privileges.items() if "INSERT" in p or "UPDATE" in p]
    for table, used in _trigger_tables(conn, schema, written, list(tables)).items():
        need(table, used, "used by a trigger on a table the loader writes")

    order = {"DATABASE": 0, "SCHEMA": 1, "TABLE": 2, "SEQUENCE": 3, "FUNCTION": 4}
    db = scalar(conn, "select quote_ident(current_database())")
    out = [
        Grant("DATABASE", db, ("CONNECT", "TEMPORARY"), "connect; session stage tables"),
        Grant("SCHEMA", _quote(conn, schema), ("USAGE",), "reach the tables"),
    ]
    for table, privs in sorted(privileges.items()):
        out.append(Grant("TABLE", tables[table], _ordered(privs), why[table]))
    for seq in _sequences(conn, [tables[t] for t, p in privileges.items() if "INSERT" in p]):
        out.append(Grant("SEQUENCE", seq, ("USAGE", "SELECT"), "ids of inserted rows"))
    for fn in _functions(conn, schema):
        out.append(Grant("FUNCTION", fn, ("EXECUTE",), "merge core, helpers and triggers"))
    out += _generic_grants(conn)
    return sorted(out, key=lambda g: (order[g.kind], g.name))


def _generic_grants(conn: psycopg.Connection) -> list[Grant]:
    """The generic tables (etl apply-schema --mapping), their schemas and helper functions."""
    if scalar(conn, "select to_regclass('migration_history') is null"):
        return []
    # by the catalog, not to_regclass(): a role without USAGE on the schema may ask too
    rows = conn.execute(
        "select n.nspname, format('%%I', n.nspname), format('%%I.%%I', n.nspname, c.relname)"
        " from migration_history h"
        " join pg_namespace n on n.nspname = split_part(substr(h.version, 9), '.', 1)"
        " join pg_class c on c.relnamespace = n.oid"
        "  and c.relname = split_part(substr(h.version, 9), '.', 2)"
        " where h.version like %s and h.success order by 3",
        ("generic:%",),
    ).fetchall()
    out = []
    for nsp, quoted in sorted({(r[0], r[1]) for r in rows}):
        out.append(Grant("SCHEMA", quoted, ("USAGE",), "reach the generic tables"))
        for fn in _functions(conn, nsp):
            out.append(Grant("FUNCTION", fn, ("EXECUTE",), "typed columns of generic tables"))
    for *_, table in rows:
        out.append(Grant("TABLE", table, WRITE, "a generic table, loaded by the merge"))
    return out


def lacking(conn: psycopg.Connection, g: Grant) -> list[str]:
    """The privileges of grant `g` the current role does not have."""
    # objects by oid, found in the catalog: a name would be resolved first, and resolving a
    # name in a schema the role may not use fails instead of answering
    rel = (
        "(select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where format('%%I.%%I', n.nspname, c.relname) = %s or c.oid::regclass::text = %s)"
    )
    fn = "(select p.oid from pg_proc p where p.oid::regprocedure::text = %s)"
    test = {
        "DATABASE": "has_database_privilege(current_database(), p)",
        "SCHEMA": "has_schema_privilege((parse_ident(%s))[1], p)",
        "TABLE": f"has_table_privilege({rel}, p)",
        "SEQUENCE": f"has_sequence_privilege({rel}, p)",
        "FUNCTION": f"has_function_privilege({fn}, p)",
    }[g.kind]
    args = {"DATABASE": (), "TABLE": (g.name, g.name), "SEQUENCE": (g.name, g.name)}.get(
        g.kind, (g.name,)
    )
    return [
        p
        for (p,) in conn.execute(
            f"select p from unnest(%s::text[]) with ordinality as u(p, n) where not {test}"
            " order by n",
            (list(g.privileges), *args),
        )
    ]


def missing_privileges(conn: psycopg.Connection) -> list[str]:
    """What the current role lacks of what `etl grants` lists, as "INSERT on TABLE x.y": every
    schema and table a migrate writes, the generic ones (another schema) included."""
    return [f"{p} on {g.kind} {g.name}" for g in loader_grants(conn) for p in lacking(conn, g)]


def require_privileges(conn: psycopg.Connection) -> None:
    """Stop before a migrate starts when the role lacks a privilege it needs: one line naming
    the first one, how many more, and the `etl grants` command that fixes them."""
    missing = missing_privileges(conn)
    if not missing:
        return
    from etl import pg

    role = pg.scalar(conn, "select current_user")
    from etl.errors import PermanentError

    more = f" and {len(missing) - 1} more (etl preflight lists them)" if len(missing) > 1 else ""
    raise PermanentError(
        f"role {role} lacks {missing[0]}{more}",
        hint=f"the schema owner runs `etl grants --role {role} --apply`",
    )


def grant_statements(conn: psycopg.Connection, role: str) -> list[str]:
    return [g.statement(role).as_string(conn) + ";" for g in loader_grants(conn)]


def apply_grants(conn: psycopg.Connection, role: str) -> list[str]:
    """Run the statements in one transaction; returns them."""
    statements = [g.statement(role) for g in loader_grants(conn)]
    with conn.transaction():
        for stmt in statements:
            conn.execute(stmt)
    return [s.as_string(conn) + ";" for s in statements]


def _schema_of(conn, table: str) -> str:
    row = conn.execute(
        "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    if row is None:
        from etl.errors import PermanentError

        raise PermanentError(
            f"table {table} does not exist: the schema is not applied",
            hint="run `etl apply-schema` (as the owner) first",
        )
    return row[0]


def _quote(conn, name: str) -> str:
    return scalar(conn, "select quote_ident(%s)", (name,))


def _ordered(privs: set[str]) -> tuple[str, ...]:
    rank = {p: i for i, p in enumerate(BOOKKEEPING)}
    return tuple(sorted(privs, key=lambda p: rank.get(p, 99)))


def _trigger_tables(conn, schema: str, written: list[str], tables: list[str]) -> dict[str, tuple]:
    """The tables that the (user-level) trigger functions on `written` tables name in their
    bodies: INSERT where they insert into one, SELECT where they only read it."""
    bodies = [
        src
        for (src,) in conn.execute(
            "select distinct p.prosrc from pg_trigger g join pg_proc p on p.oid = g.tgfoid"
            " join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace"
            " where not g.tgisinternal and n.nspname = %s and c.relname = any(%s)",
            (schema, written),
        )
    ]
    out: dict[str, tuple] = {}
    for table in tables:
        name = rf'(?:{re.escape(schema)}\.)?"?{re.escape(table)}"?\b'
        for body in bodies:
            if re.search(rf"insert\s+into\s+{name}", body, re.IGNORECASE):
                out[table] = ("SELECT", "INSERT")
            elif table not in out and re.search(rf"(?:from|join)\s+{name}", body, re.IGNORECASE):
                out[table] = READ
    return out


def _sequences(conn, tables: list[str]) -> list[str]:
    """Sequences owned by columns of these tables (serial and identity)."""
    if not tables:
        return []
    return [
        s
        for (s,) in conn.execute(
            "select distinct d.objid::regclass::text from pg_depend d"
            " join pg_class s on s.oid = d.objid and s.relkind = 'S'"
            " where d.refobjid = any(%s::regclass[]) and d.deptype in ('a', 'i') order by 1",
            (tables,),
        )
    ]


def _functions(conn, schema: str) -> list[str]:
    """The schema's functions that no extension brought (those are granted by PostgreSQL)."""
    return [
        f
        for (f,) in conn.execute(
            "select p.oid::regprocedure::text from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = %s and p.prokind in ('f', 'p')"
            " and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass"
            "                 and d.objid = p.oid and d.deptype = 'e') order by 1",
            (schema,),
        )
    ]
