"""`etl apply-schema --mapping FILE`: each generic table of the mapping as a generated
migration, recorded in migration_history (version "generic:<schema>.<table>", the checksum of
its shape, the shape itself in execution_notes; a schema it had to create is recorded as
"generic:<schema>", so that `etl rollback --component all` knows it may drop it). Unchanged: nothing happens. Changed: applied
when it only adds typed columns or indexes, or when the table is empty (made again); refused
with one line when the table holds rows."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from etl.errors import PermanentError
from etl.generic import ddl
from etl.generic.spec import GenericTarget
from etl.pg import connect, scalar
from etl.schema import GENERATED_PREFIX, os_user, schema_lock
from etl.target import ident

log = logging.getLogger("etl.generic")


@dataclass
class MappingApplied:
    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    sql: dict[str, list[str]] = field(default_factory=dict)  # version -> statements (run or due)


def version(target: GenericTarget) -> str:
    return f"{GENERATED_PREFIX}{target.table}"


def _history(conn, versions: list[str]) -> dict[str, tuple[str, dict | None]]:
    rows = conn.execute(
        "SELECT version, checksum, execution_notes FROM migration_history"
        " WHERE version = any(%s) AND success",
        (versions,),
    ).fetchall()
    out = {}
    for v, checksum, notes in rows:
        try:
            shape = json.loads(notes) if notes else None
        except ValueError:
            shape = None
        out[v] = (checksum, shape if isinstance(shape, dict) else None)
    return out


def plan(
    conn, targets: list[GenericTarget], mapping_file: str
) -> list[tuple[str, GenericTarget, list[str]]]:
    """(action, target, statements) per generic table: create, alter, recreate or unchanged.
    PermanentError (nothing applied) when a change would lose what a table with rows holds."""
    done = _history(conn, [version(t) for t in targets])
    out = []
    for t in targets:
        new = ddl.shape(t)
        have = scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (t.table,))
        rec = done.get(version(t))
        if rec is None:
            if have:
                raise PermanentError(
                    f"table {t.table} exists but no generated migration of etl made it",
                    hint=f"drop or rename it, or give collection {t.collection!r} another table"
                    f" in {mapping_file}",
                )
            out.append(("create", t, ddl.create_statements(t)))
            continue
        checksum, old = rec
        if checksum == ddl.checksum(t) and have:
            out.append(("unchanged", t, []))
            continue
        adds = ddl.additions(old, new) if old is not None and have else None
        if adds is not None:
            out.append(("alter", t, [*ddl.helpers(t.schema), *adds]))
            continue
        rows = (
            scalar(
                conn,
                sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) x").format(ident(t.table)),
            )
            if have
            else 0
        )
        if rows:
            what = ddl.changes(old, new) if old is not None else "changes the table"
            raise PermanentError(
                f"mapping {mapping_file} {what} of table {t.table}, which holds rows;"
                " only added typed columns or indexes can be applied to it; nothing was applied",
                hint="keep the table's columns and indexes and only add, or empty the table first",
            )
        drop = [sql.SQL("DROP TABLE {}").format(ident(t.table)).as_string(None)] if have else []
        out.append(("recreate", t, [*drop, *ddl.create_statements(t)]))
    conn.rollback()
    return out


def apply_mapping(
    dsn: str, targets: list[GenericTarget], mapping_file: str, *, dry_run: bool = False,
    lock_timeout_s: float = 60.0,
) -> MappingApplied:  # fmt: skip
    result = MappingApplied()
    if dry_run:
        with connect(dsn) as conn:
            steps = plan(conn, targets, mapping_file)
        for action, t, stmts in steps:
            _record(result, action, t, stmts)
        return result
    with schema_lock(dsn, lock_timeout_s), connect(dsn) as conn:
        who = f"{os_user()} as {scalar(conn, 'SELECT current_user')}"
        conn.rollback()
        for action, t, stmts in plan(conn, targets, mapping_file):
            _record(result, action, t, stmts)
            if action == "unchanged":
                continue
            t0 = time.monotonic()
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
                new_schema = scalar(conn, "SELECT to_regnamespace(%s) IS NULL", (t.schema,))
                for stmt in stmts:
                    try:
                        conn.execute(stmt, prepare=False)
                    except psycopg.Error as exc:
                        first = " ".join(stmt.split())[:80]
                        raise PermanentError(
                            f"generated migration {version(t)} failed at `{first}`:"
                            f" {exc.diag.message_primary or exc} [SQLSTATE {exc.sqlstate}]",
                            hint="it was rolled back; fix the mapping and run apply-schema again",
                        ) from None
                conn.execute(
                    "INSERT INTO migration_history (version, name, checksum, applied_by,"
                    " duration_ms, success, execution_notes) VALUES (%s, %s, %s, %s, %s, true, %s)"
                    " ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name,"
                    " checksum = EXCLUDED.checksum, applied_at = now(),"
                    " applied_by = EXCLUDED.applied_by, duration_ms = EXCLUDED.duration_ms,"
                    " success = true, execution_notes = EXCLUDED.execution_notes",
                    (
                        version(t),
                        f"generic table for collection {t.collection} ({action})",
                        ddl.checksum(t),
                        who,
                        int((time.monotonic() - t0) * 1000),
                        json.dumps(ddl.shape(t), sort_keys=True),
                    ),
                )
                if new_schema:  # etl made it: rollback --component all may drop it again
                    conn.execute(
                        "INSERT INTO migration_history (version, name, checksum, applied_by,"
                        " success, execution_notes) VALUES (%s, %s, %s, %s, true, %s)"
                        " ON CONFLICT (version) DO NOTHING",
                        (
                            f"{GENERATED_PREFIX}{t.schema}",
                            f"schema {t.schema} for generic tables, created by etl",
                            hashlib.sha256(f"schema {t.schema}".encode()).hexdigest(),
                            who,
                            f"CREATE SCHEMA {t.schema}",
                        ),
                    )
            log.info("%s %s (%s)", action, t.table, version(t))
    return result


def _record(result: MappingApplied, action: str, t: GenericTarget, stmts: list[str]) -> None:
    getattr(
        result,
        {"create": "created", "alter": "altered", "recreate": "recreated"}.get(action, "unchanged"),
    ).append(t.table)
    if stmts:
        result.sql[version(t)] = stmts


def apply_mapping_file(dsn: str, path=None) -> MappingApplied:
    """The generic tables of a mapping file (default: the shipped ATSPro mapping)."""
    from etl.mapping import load_mapping
    from etl.resources import default_mapping

    file = str(path or default_mapping())
    return apply_mapping(dsn, load_mapping(file).generic_targets(), file)


def require_applied(conn, targets: list[GenericTarget], mapping_file: str) -> None:
    """Stop with one line when a generic table of the mapping is missing or was applied from
    another version of the mapping."""
    if not targets:
        return
    done = _history(conn, [version(t) for t in targets])
    for t in targets:
        exists = scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (t.table,))
        rec = done.get(version(t))
        if not exists or rec is None:
            problem = f"table {t.table} (collection {t.collection}) does not exist"
        elif rec[0] != ddl.checksum(t):
            problem = f"table {t.table} was created from another version of the mapping"
        else:
            continue
        if not conn.autocommit:
            conn.rollback()
        raise PermanentError(
            f"the schema of mapping {mapping_file} is not applied: {problem}",
            hint=f"run `etl apply-schema --mapping {mapping_file}`",
        )
    if not conn.autocommit:
        conn.rollback()
