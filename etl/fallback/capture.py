"""Change capture in PostgreSQL for `etl fallback`: the trigger of sql/010 on every migrated
table, armed and retired here; which mechanism the server allows; the committed changes still
to apply, oldest first.

Triggers, not logical decoding: they work at `wal_level = replica` (the default, and what most
managed servers run until a restart) without a replication privilege, and the change table is
plain SQL that the applier can read and delete from in the transaction that records what it
applied. Logical decoding is reported by `mechanisms()` where the server allows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from etl.errors import PermanentError
from etl.mapping import Mapping
from etl.pg import one, scalar
from etl.target import ident, qualified

TRIGGER = "etl_fallback_capture"
CHANGES = "etl_fallback_changes"


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    table: str  # schema-qualified
    row_id: str
    op: str  # I, U, D
    old_row: dict | None
    changed_at: datetime


def tables(mapping: Mapping) -> list[str]:
    """The migrated tables (schema-qualified), curated and generic, in the mapping's order."""
    return list(dict.fromkeys(qualified(dt) for dt in mapping.document_types()))


def require_tables(conn: psycopg.Connection) -> None:
    if scalar(conn, "select to_regclass('public.etl_fallback_state') is null"):
        raise PermanentError(
            "the target schema has no etl_fallback_state (sql/010 not applied)",
            hint="run `etl apply-schema`",
        )


def installed(conn: psycopg.Connection) -> bool:
    return bool(scalar(conn, "select to_regclass('public.etl_fallback_state') is not null"))


def mechanisms(conn: psycopg.Connection) -> dict:
    """What the server allows: triggers always (etl owns the tables); logical decoding only with
    wal_level = logical and a role that may replicate."""
    wal_level = scalar(conn, "show wal_level")
    can_replicate = scalar(
        conn, "select rolreplication or rolsuper from pg_roles where rolname = current_user"
    )
    logical = wal_level == "logical" and bool(can_replicate)
    return {
        "wal_level": wal_level,
        "logical_decoding": logical,
        "trigger": True,
        "used": "trigger",
    }


def arm(conn: psycopg.Connection, mapping: Mapping, armed_by: str) -> dict:
    """Install the capture trigger on every migrated table and record the arm, in one
    transaction: CREATE TRIGGER waits for the writers in flight and holds off new ones until the
    commit, so every write committed after it is captured. Arming again keeps the changes not
    yet applied and adds tables the mapping has gained."""
    require_tables(conn)
    names = tables(mapping)
    try:
        return _arm(conn, names, armed_by)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermanentError(
            f"cannot arm the fallback: {exc.diag.message_primary or exc}",
            hint="run `etl fallback arm` as the tables' owner (CREATE TRIGGER needs it)",
        ) from None


def _arm(conn: psycopg.Connection, names: list[str], armed_by: str) -> dict:
    with conn.transaction():
        for t in names:
            if scalar(conn, "select to_regclass(%s) is null", (t,)):
                raise PermanentError(
                    f"table {t} does not exist: nothing to capture from",
                    hint="run `etl apply-schema` (and the copy) first",
                )
            exists = conn.execute(
                "select 1 from pg_trigger where tgrelid = %s::regclass and tgname = %s",
                (t, TRIGGER),
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL(
                        "create trigger {} after insert or update or delete on {}"
                        " for each row execute function public.etl_fallback_capture()"
                    ).format(sql.Identifier(TRIGGER), ident(t))
                )
        lsn = scalar(conn, "select pg_current_wal_lsn()")
        conn.execute(
            "insert into etl_fallback_state (id, mechanism, armed_by, armed_lsn, tables)"
            " values (1, 'trigger', %s, %s, %s) on conflict (id) do update set"
            " tables = excluded.tables, updated_at = now()",
            (armed_by, lsn, names),
        )
    return state(conn) or {}


def armed_tables(conn: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select tgrelid::regclass::text from pg_trigger where tgname = %s and not tgisinternal"
            " order by 1",
            (TRIGGER,),
        )
    ]


def retire(conn: psycopg.Connection, *, force: bool = False) -> list[str]:
    """Remove the triggers and forget the arm and what is still unapplied (with force: a
    retire that would drop unapplied changes otherwise stops)."""
    require_tables(conn)
    done: list[str] = []
    with conn.transaction():
        left = scalar(conn, f"select count(*) from {CHANGES}")
        if left and not force:
            raise PermanentError(
                f"{left} captured changes are not applied to ArangoDB yet: retiring now loses them",
                hint="run `etl fallback --until-current` first, or `etl fallback retire --force`",
            )
        for t in armed_tables(conn):
            conn.execute(sql.SQL("drop trigger {} on {}").format(sql.Identifier(TRIGGER), ident(t)))
            done.append(f"dropped trigger on {t}")
        conn.execute(f"delete from {CHANGES}")
        conn.execute("delete from etl_fallback_state")
        conn.execute("delete from etl_fallback_applied")
        conn.execute("delete from etl_fallback_inflight")
    return done


def state(conn: psycopg.Connection) -> dict | None:
    row = conn.execute(
        "select mechanism, armed_by, armed_at, armed_lsn::text, tables, applied_seq, applied_at,"
        " last_change_at, caught_up_at from etl_fallback_state where id = 1"
    ).fetchone()
    if row is None:
        return None
    keys = (
        "mechanism", "armed_by", "armed_at", "armed_lsn", "tables", "applied_seq", "applied_at",
        "last_change_at", "caught_up_at",
    )  # fmt: skip
    return dict(zip(keys, row))


def backlog(conn: psycopg.Connection) -> dict:
    """Rows in the change table, their size, and the oldest one's age in seconds."""
    n, size, oldest = one(
        conn,
        f"select count(*), pg_total_relation_size('{CHANGES}'),"
        f" extract(epoch from now() - min(changed_at)) from {CHANGES}",
    )
    return {
        "pending_changes": int(n),
        "change_table_bytes": int(size),
        "oldest_pending_seconds": None if oldest is None else round(float(oldest), 3),
    }


def read_committed(conn: psycopg.Connection, limit: int) -> tuple[list[Change], bool]:
    """Up to `limit` captured changes of committed transactions, oldest first, and whether more
    are waiting. Rows of a transaction still running are invisible here and are read once it
    commits (an aborted one's never exist): since applied rows are deleted, not passed by a
    position, a transaction that commits after a later one's rows were applied is never
    skipped. (A position with an xmin horizon would stall on any long transaction in the whole
    cluster: pg_snapshot_xmin is cluster-wide.)"""
    rows = conn.execute(
        f"select seq, table_name, row_id::text, op, old_row, changed_at from {CHANGES}"
        " order by seq limit %s",
        (limit + 1,),
    ).fetchall()
    return [Change(*r) for r in rows[:limit]], len(rows) > limit


def writers(conn: psycopg.Connection) -> int:
    """Other sessions of this database inside a transaction that has written (their changes
    are not visible until they end)."""
    return int(
        scalar(
            conn,
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and backend_xid is not null and pid <> pg_backend_pid()",
        )
    )
