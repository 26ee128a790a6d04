"""Change capture in PostgreSQL for `etl fallback`: armed and retired here; which mechanism the
server allows; the committed changes still to apply, oldest first.

Two mechanisms feed the same change table (etl_fallback_changes), which the one applier reads:
 * 'trigger' (sql/010): works at `wal_level = replica` (the default, and what most managed
   servers run until a restart) without a replication privilege; costs a row insert inside each
   of the application's writes.
 * 'logical' (sql/012, etl/fallback/decoding.py): a logical replication slot, where the server
   has wal_level = logical and etl's role may replicate. Nothing runs in the application's
   transactions; the applier moves committed transactions from the slot into the change table.
   The slot keeps WAL on the server until it is read (`etl status` shows how much).
`--capture auto` (the default, and what `etl cutover` uses) picks 'logical' where possible."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from etl.errors import PermanentError
from etl.fallback import decoding
from etl.mapping import Mapping
from etl.pg import one, scalar
from etl.target import ident, qualified

log = logging.getLogger("etl.fallback")

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


# sql/012's column: the state table of 010 and 012 both applied
INSTALLED = (
    "select count(*) > 0 from pg_attribute"
    " where attrelid = to_regclass('public.etl_fallback_state') and attname = 'pumped_lsn'"
)


def require_tables(conn: psycopg.Connection) -> None:
    if not scalar(conn, INSTALLED):
        raise PermanentError(
            "the target schema has no etl_fallback_state (sql/010 and 012 not applied)",
            hint="run `etl apply-schema`",
        )


def installed(conn: psycopg.Connection) -> bool:
    return bool(scalar(conn, INSTALLED))


def mechanisms(conn: psycopg.Connection) -> dict:
    """What the server allows: triggers always (etl owns the tables); logical decoding only with
    wal_level = logical and a role that may replicate."""
    wal_level = scalar(conn, "show wal_level")
    can_replicate = scalar(
        conn, "select rolreplication or rolsuper from pg_roles where rolname = current_user"
    )
    logical = wal_level == "logical" and bool(can_replicate)
    if logical:
        why = "wal_level = logical and the role may replicate"
    elif wal_level != "logical":
        why = f"wal_level = {wal_level} (logical decoding needs logical and a server restart)"
    else:
        why = "the role has neither REPLICATION nor superuser"
    return {
        "wal_level": wal_level,
        "logical_decoding": logical,
        "trigger": True,
        "auto": "logical" if logical else "trigger",
        "why": why,
    }


CAPTURES = ("auto", "trigger", "logical")


def arm(conn: psycopg.Connection, mapping: Mapping, armed_by: str, capture: str = "auto") -> dict:
    """Arm the capture of every migrated table with the mechanism asked for (auto: logical
    decoding where the server allows it, else triggers). Arming again keeps the mechanism and
    the changes not yet applied and adds tables the mapping has gained."""
    require_tables(conn)
    names = tables(mapping)
    asked = capture
    st = state(conn)
    m = mechanisms(conn)
    if st is not None:
        if capture not in ("auto", st["mechanism"]):
            raise PermanentError(
                f"the fallback is armed with {st['mechanism']} capture, not {capture}",
                hint="`etl fallback retire` first (after `etl fallback --until-current`)",
            )
        capture = st["mechanism"]
    elif capture == "auto":
        capture = m["auto"]
    elif capture == "logical" and not m["logical_decoding"]:
        raise PermanentError(
            f"logical decoding is not possible here: {m['why']}",
            hint="use `--capture trigger` (or auto), or set wal_level = logical and restart",
        )
    try:
        if capture == "logical":
            try:
                return _arm_logical(conn, names, armed_by)
            except PermanentError as exc:
                if asked != "auto" or st is not None:
                    raise
                log.warning("%s; capturing by triggers instead", exc)
        return _arm(conn, names, armed_by)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermanentError(
            f"cannot arm the fallback: {exc.diag.message_primary or exc}",
            hint="run `etl fallback arm` as the tables' owner (CREATE TRIGGER needs it)",
        ) from None


def _arm(conn: psycopg.Connection, names: list[str], armed_by: str) -> dict:
    with conn.transaction():
        for t in names:
            _require_exists(conn, t)
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


def _require_exists(conn: psycopg.Connection, t: str) -> None:
    if scalar(conn, "select to_regclass(%s) is null", (t,)):
        raise PermanentError(
            f"table {t} does not exist: nothing to capture from",
            hint="run `etl apply-schema` (and the copy) first",
        )


def _arm_logical(conn: psycopg.Connection, names: list[str], armed_by: str) -> dict:
    """REPLICA IDENTITY FULL on every migrated table (a delete then carries the row's key and
    provenance), then the slot: its creation waits for the transactions in flight, and every
    transaction committed after it is decoded. Then the arm is recorded."""
    slot = decoding.slot_name(conn)
    with conn.transaction():
        for t in names:
            _require_exists(conn, t)
            if scalar(
                conn, "select relreplident <> 'f' from pg_class where oid = %s::regclass", (t,)
            ):
                conn.execute(sql.SQL("alter table {} replica identity full").format(ident(t)))
    conn.commit()  # a logical slot is created in a transaction that has written nothing
    if not scalar(conn, "select count(*) from pg_replication_slots where slot_name = %s", (slot,)):
        try:
            conn.execute(
                "select pg_create_logical_replication_slot(%s, %s)", (slot, decoding.PLUGIN)
            )
        except psycopg.Error as exc:  # no free slot (max_replication_slots), no plugin ...
            conn.rollback()
            raise PermanentError(
                f"cannot create the replication slot {slot}: "
                f"{exc.diag.message_primary or str(exc).splitlines()[0]}",
                hint="free a slot (max_replication_slots) or `etl fallback arm --capture trigger`",
            ) from None
        conn.commit()
    lsn = scalar(
        conn, "select confirmed_flush_lsn from pg_replication_slots where slot_name = %s", (slot,)
    )
    with conn.transaction():
        conn.execute(
            "insert into etl_fallback_state (id, mechanism, armed_by, armed_lsn, tables,"
            " slot_name) values (1, 'logical', %s, %s, %s, %s) on conflict (id) do update set"
            " tables = excluded.tables, updated_at = now()",
            (armed_by, lsn, names, slot),
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
    st = state(conn)
    if st is not None and st["mechanism"] == "logical" and not force:
        decoding.pump(conn, st, 100_000)  # what the slot holds counts as unapplied too
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
        if st is not None and st["mechanism"] == "logical":
            done += _retire_logical(conn, st)
        conn.execute(f"delete from {CHANGES}")
        conn.execute("delete from etl_fallback_state")
        conn.execute("delete from etl_fallback_applied")
        conn.execute("delete from etl_fallback_inflight")
    return done


def _retire_logical(conn: psycopg.Connection, st: dict) -> list[str]:
    done = []
    slot = st["slot_name"]
    if scalar(conn, "select count(*) from pg_replication_slots where slot_name = %s", (slot,)):
        try:
            with conn.transaction():
                conn.execute("select pg_drop_replication_slot(%s)", (slot,))
        except psycopg.errors.ObjectInUse:
            raise PermanentError(
                f"the replication slot {slot} is in use (a running `etl fallback`?)",
                hint="stop `etl fallback`, then retire again",
            ) from None
        done.append(f"dropped replication slot {slot}")
    for t in st["tables"]:
        if scalar(
            conn, "select relreplident = 'f' from pg_class where oid = to_regclass(%s)", (t,)
        ):
            conn.execute(sql.SQL("alter table {} replica identity default").format(ident(t)))
            done.append(f"replica identity default on {t}")
    return done


def state(conn: psycopg.Connection) -> dict | None:
    row = conn.execute(
        "select mechanism, armed_by, armed_at, armed_lsn::text, tables, applied_seq, applied_at,"
        " last_change_at, caught_up_at, slot_name, pumped_lsn::text"
        " from etl_fallback_state where id = 1"
    ).fetchone()
    if row is None:
        return None
    keys = (
        "mechanism", "armed_by", "armed_at", "armed_lsn", "tables", "applied_seq", "applied_at",
        "last_change_at", "caught_up_at", "slot_name", "pumped_lsn",
    )  # fmt: skip
    return dict(zip(keys, row))


def backlog(conn: psycopg.Connection) -> dict:
    """Rows in the change table, their size, and the oldest one's age in seconds."""
    n, size, oldest = one(
        conn,
        f"select count(*), pg_total_relation_size('{CHANGES}'),"
        f" extract(epoch from now() - min(changed_at)) from {CHANGES}",
    )
    out = {
        "pending_changes": int(n),
        "change_table_bytes": int(size),
        "oldest_pending_seconds": None if oldest is None else round(float(oldest), 3),
    }
    st = state(conn)
    if st is not None and st["mechanism"] == "logical":  # what the slot holds on the server
        out["retained_wal_bytes"] = decoding.slot_status(conn, st["slot_name"]).get(
            "retained_wal_bytes"
        )
    return out


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
