"""The 'logical' capture of `etl fallback`: a logical replication slot with the test_decoding
output plugin, read through the SQL functions (pg_logical_slot_peek_changes and
pg_replication_slot_advance), feeding the change table the applier reads.

Why test_decoding through SQL: it ships with PostgreSQL (contrib; also on RDS, Cloud SQL and
Azure), needs no publication, and the SQL functions need no streaming-replication connection, so
the applier's ordinary connection reads the slot. Its text output is parsed here (quoted values,
'' for a quote); only id, key and metadata are used: an insert's or update's document is read
from the table at apply time (the applier always writes a row's state as of now), a delete
needs the deleted row's key and provenance, which REPLICA IDENTITY FULL (set by the arm) puts in
the WAL. (pgoutput through pg_logical_slot_peek_binary_changes would need a publication and a
binary protocol parser for the same three values.)

A feed, not a second applier: each pump moves whole committed transactions, in commit order,
from the slot into etl_fallback_changes and records the last one's commit LSN (pumped_lsn) in
the same transaction; the slot is advanced after that commit. A crash between the two leaves the
slot behind pumped_lsn, and transactions up to it are skipped when read again. etl's own writes
(the applier's provenance write-back) carry a transactional logical message (MESSAGE_PREFIX)
and are skipped: the triggers skip them by the session setting etl.run_id."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from etl.errors import PermanentError
from etl.pg import scalar

PLUGIN = "test_decoding"
MESSAGE_PREFIX = "etl_fallback"
OPTIONS = ("include-xids", "0", "include-timestamp", "1", "skip-empty-xacts", "1")

_CHANGE = re.compile(r"table (.+?): (INSERT|UPDATE|DELETE|TRUNCATE): ?(.*)\Z", re.S)
_COMMIT = re.compile(r"COMMIT(?: \(at (.+)\))?\Z")


@dataclass
class Tx:
    end_lsn: str  # the commit record's end: where the slot can be advanced to
    committed_at: datetime | None = None
    own: bool = False  # etl's own write (carries the message)
    changes: list[tuple[str, str, str, dict | None]] = field(default_factory=list)
    # (table, row id, op I/U/D, old_row for D)


def lsn_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def slot_name(conn: psycopg.Connection) -> str:
    """One slot per database (slots are cluster-wide): etl_fallback_<database oid>."""
    return f"etl_fallback_{scalar(conn, 'select oid from pg_database where datname = current_database()')}"


def parse_tuple(s: str, i: int = 0) -> tuple[dict[str, str | None], int]:
    """test_decoding's `name[type]:value ...` from i, up to the end or ` new-tuple: `; values
    as text (None for null or an unchanged TOAST datum)."""
    out: dict[str, str | None] = {}
    n = len(s)
    while i < n:
        if s.startswith("new-tuple:", i):
            break
        if s[i] == '"':  # a quoted column name: "" is a quote
            j = i + 1
            name = []
            while True:
                if s[j] == '"' and s.startswith('""', j):
                    name.append('"')
                    j += 2
                elif s[j] == '"':
                    break
                else:
                    name.append(s[j])
                    j += 1
            col = "".join(name)
            i = j + 1
        else:
            j = s.index("[", i)
            col = s[i:j]
            i = j
        i = s.index("]:", i) + 2  # past [type]: (a type may hold brackets: text[])
        if i < n and s[i] == "'":
            val = []
            j = i + 1
            while True:
                k = s.index("'", j)
                val.append(s[j:k])
                if s.startswith("''", k):
                    val.append("'")
                    j = k + 2
                else:
                    i = k + 1
                    break
            value: str | None = "".join(val)
        else:
            j = s.find(" ", i)
            j = n if j < 0 else j
            raw = s[i:j]
            value = None if raw in ("null", "unchanged-toast-datum") else raw
            i = j
        out[col] = value
        while i < n and s[i] == " ":
            i += 1
    return out, i


def _old_row(cols: dict[str, str | None]) -> dict:
    md = cols.get("metadata")
    return {"key": cols.get("key"), "metadata": json.loads(md) if md else None}


def parse_change(table: str, op: str, rest: str) -> list[tuple[str, str, str, dict | None]]:
    if op == "INSERT":
        new, _ = parse_tuple(rest)
        return [(table, new["id"] or "", "I", None)]
    if op == "DELETE":
        gone, _ = parse_tuple(rest)
        return [(table, gone["id"] or "", "D", _old_row(gone))]
    # UPDATE: with REPLICA IDENTITY FULL the old row comes first (old-key: ... new-tuple: ...)
    old: dict[str, str | None] = {}
    i = 0
    if rest.startswith("old-key: "):
        old, i = parse_tuple(rest, len("old-key: "))
        i += len("new-tuple: ")
    new, _ = parse_tuple(rest, i)
    was = old.get("id")
    if was and was != new["id"]:  # the key changed: a delete and an insert
        return [(table, was, "D", _old_row(old)), (table, new["id"] or "", "I", None)]
    return [(table, new["id"] or "", "U", None)]


def parse(rows: list[tuple[str, str]], tables: set[str]) -> tuple[list[Tx], list[str]]:
    """Whole transactions (BEGIN ... COMMIT) of the peeked rows (lsn, data), oldest first, with
    their changes of the given tables; and what cannot be replayed (TRUNCATE)."""
    txs: list[Tx] = []
    problems: list[str] = []
    cur: Tx | None = None
    for lsn, data in rows:
        if data.startswith("BEGIN"):
            cur = Tx(end_lsn=lsn)
        elif data.startswith("COMMIT") and cur is not None:
            m = _COMMIT.match(data)
            if m and m.group(1):
                try:
                    cur.committed_at = datetime.fromisoformat(m.group(1))
                except ValueError:  # the lag then counts from the move into the table
                    cur.committed_at = None
            cur.end_lsn = lsn
            txs.append(cur)
            cur = None
        elif cur is None:
            continue
        elif data.startswith("message: ") and f" prefix: {MESSAGE_PREFIX}," in data:
            cur.own = True
        elif data.startswith("table "):
            m = _CHANGE.match(data)
            if m is None or m.group(1) not in tables:
                continue
            if m.group(2) == "TRUNCATE":
                problems.append(f"{m.group(1)}: TRUNCATE is not replayed to ArangoDB")
                continue
            cur.changes += parse_change(m.group(1), m.group(2), m.group(3))
    return txs, problems


def peek(conn: psycopg.Connection, slot: str, limit: int) -> list[tuple[str, str]]:
    """At least `limit` rows of whole committed transactions (fewer: the slot is drained)."""
    try:
        return [
            (str(lsn), data)
            for lsn, data in conn.execute(
                "select lsn::text, data from pg_logical_slot_peek_changes(%s, null, %s"
                + ", %s" * len(OPTIONS)
                + ")",
                (slot, limit, *OPTIONS),
            )
        ]
    except psycopg.errors.ObjectInUse:
        conn.rollback()
        raise PermanentError(
            f"the replication slot {slot} is in use by another session",
            hint="one `etl fallback` at a time: stop the other one",
        ) from None
    except (psycopg.errors.UndefinedObject, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        # dropped by hand, or invalidated (max_slot_wal_keep_size): the changes are lost
        conn.rollback()
        raise PermanentError(
            f"the replication slot {slot} cannot be read: "
            f"{exc.diag.message_primary or str(exc).splitlines()[0]}",
            hint="PostgreSQL's writes since the last apply are lost to the fallback: "
            "`etl fallback retire --force`, then copy ArangoDB again (docs/sync.md)",
        ) from None


def pump(conn: psycopg.Connection, st: dict, limit: int) -> tuple[int, list[str]]:
    """Move committed transactions from the slot into etl_fallback_changes until some changes
    of the armed tables were moved or the slot is drained; advance the slot past them. Returns
    the changes moved and what cannot be replayed."""
    slot, tables = st["slot_name"], set(st["tables"])
    pumped = lsn_int(st["pumped_lsn"]) if st.get("pumped_lsn") else 0
    moved, problems = 0, list[str]()
    conn.rollback()
    while True:
        rows = peek(conn, slot, limit)
        txs, bad = parse(rows, tables)
        conn.rollback()
        if not txs:
            return moved, problems
        problems += bad
        new = [tx for tx in txs if lsn_int(tx.end_lsn) > pumped and not tx.own]
        changes = [(tx, c) for tx in new for c in tx.changes]
        last = txs[-1].end_lsn
        if changes:  # a write only when there is something to keep: it is decoded too
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "insert into etl_fallback_changes (table_name, row_id, op, old_row,"
                    " changed_at) values (%s, %s, %s, %s, coalesce(%s, clock_timestamp()))",
                    [
                        (t, rid, op, None if old is None else json.dumps(old), tx.committed_at)
                        for tx, (t, rid, op, old) in changes
                    ],
                )
                cur.execute(
                    "update etl_fallback_state set pumped_lsn = %s, updated_at = now()"
                    " where id = 1",
                    (last,),
                )
            pumped = lsn_int(last)
        conn.execute("select pg_replication_slot_advance(%s, %s)", (slot, last))
        conn.commit()
        moved += len(changes)
        if moved or len(rows) < limit:
            return moved, problems


def slot_status(conn: psycopg.Connection, slot: str) -> dict:
    """The WAL the slot keeps on the server (restart_lsn) and what it has not confirmed yet."""
    row = conn.execute(
        "select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn),"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), active, wal_status"
        " from pg_replication_slots where slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return {"slot": slot, "slot_missing": True}
    return {
        "slot": slot,
        "retained_wal_bytes": int(row[0] or 0),
        "unconfirmed_wal_bytes": int(row[1] or 0),
        "slot_active": bool(row[2]),
        "wal_status": row[3],
    }
