"""Run bookkeeping in PostgreSQL: runs, per-collection checkpoints, per-batch timings, rejects.

The tables are created by sql/007. A checkpoint is written in the same transaction as the batch
it describes, so a checkpoint can never be ahead of its data: after a crash, resuming from the
stored position re-reads at most the batch that was in flight, and the upsert makes that harmless.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from etl import jsonutil, pg
from etl.errors import PermanentError

COUNT_FIELDS = ("read", "inserted", "updated", "unchanged", "rejected", "unmapped", "dangling")


def new_run_id(command: str = "migrate") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{command}-{stamp}-{secrets.token_hex(3)}"


@dataclass
class Counts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    unmapped: int = 0
    dangling: int = 0

    def add(self, other: Counts) -> None:
        for f in COUNT_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    @property
    def loaded(self) -> int:
        """Rows that are in the target after this run: new, changed or already identical."""
        return self.inserted + self.updated + self.unchanged

    def asdict(self) -> dict:
        return {**asdict(self), "loaded": self.loaded}


@dataclass
class Checkpoint:
    collection: str
    position: str | None = None
    done: bool = False
    batches: int = 0
    counts: Counts = field(default_factory=Counts)


class CollectionCheckpoints:
    """The checkpoint store of a single-process run: one etl_checkpoints row per collection,
    the whole collection one range (pipeline.CheckpointStore)."""

    until = None
    unit_id = None
    ends_collection = True

    def __init__(self, run_id: str):
        self.run_id = run_id

    def take(self, conn) -> None:
        pass  # the collection's advisory lock (runs.Run.lock) keeps other runs away

    def save(self, conn, cp: Checkpoint) -> None:
        save_checkpoint(conn, self.run_id, cp)


def require_schema(conn: psycopg.Connection) -> None:
    """Stop with one line when the target schema (with the run tables of 007) is missing."""
    row = conn.execute(
        "select to_regclass('etl_checkpoints') is not null, "
        "to_regprocedure('etl_merge_stage(text,text)') is not null"
    ).fetchone()
    if not conn.autocommit:
        conn.rollback()  # leave no implicit transaction open behind a read
    if not row or not all(row):
        raise PermanentError(
            "the target schema is not applied (no etl_checkpoints / etl_merge_stage)",
            hint="run `etl apply-schema` first",
        )
    from etl.schema import check_schema_version

    try:
        check_schema_version(conn)
    finally:
        if not conn.autocommit:
            conn.rollback()


def start_run(conn, run_id: str, command: str, *, source: str, target: str, options: dict) -> None:
    conn.execute(
        "insert into etl_runs (run_id, command, state, started_at, heartbeat_at, source, target,"
        " options, host, pid) values (%s, %s, 'running', now(), now(), %s, %s, %s, %s, %s)"
        " on conflict (run_id) do update set state = 'running', heartbeat_at = now(),"
        " finished_at = null, error = null, host = excluded.host, pid = excluded.pid,"
        " options = excluded.options",
        (run_id, command, source, target, Jsonb(options), socket.gethostname(), os.getpid()),
    )


def finish_run(
    conn,
    run_id: str,
    state: str,
    *,
    summary: dict | None = None,
    report_path: str | None = None,
    error: str | None = None,
) -> None:
    conn.execute(
        "update etl_runs set state = %s, finished_at = now(), heartbeat_at = now(),"
        " summary = coalesce(%s, summary), report_path = coalesce(%s, report_path), error = %s"
        " where run_id = %s",
        (
            state,
            Jsonb(summary, dumps=jsonutil.dumps_str) if summary is not None else None,
            report_path,
            error,
            run_id,
        ),
    )


def latest_resumable_run(conn, command: str = "migrate") -> dict | None:
    """The newest run of `command` that did not finish (running when killed, interrupted, failed)."""
    from etl.owners import OWNER_SQL, owner

    cur = conn.execute(
        f"select run_id, state, options, source, {OWNER_SQL} from etl_runs where command = %s"
        " and state in ('running', 'interrupted', 'failed') order by started_at desc limit 1",
        (command,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return {
        "run_id": row[0],
        "state": row[1],
        "options": row[2],
        "source": row[3],
        "owner": owner(row[4:]),  # who ran it, and whether it still does (etl/owners.py)
    }


def load_checkpoints(conn, run_id: str) -> dict[str, Checkpoint]:
    cur = conn.execute(
        "select collection, position, done, batches, "
        + ", ".join(COUNT_FIELDS)
        + " from etl_checkpoints where run_id = %s",
        (run_id,),
    )
    out = {}
    for row in cur:
        counts = Counts(*row[4:])
        out[row[0]] = Checkpoint(row[0], row[1], row[2], row[3], counts)
    return out


def save_checkpoint(conn, run_id: str, cp: Checkpoint) -> None:
    c = cp.counts
    conn.execute(
        "insert into etl_checkpoints (run_id, collection, position, done, batches, "
        + ", ".join(COUNT_FIELDS)
        + ", updated_at) values (%s, %s, %s, %s, %s, "
        + ", ".join(["%s"] * len(COUNT_FIELDS))
        + ", now())"
        " on conflict (run_id, collection) do update set position = excluded.position,"
        " done = excluded.done, batches = excluded.batches, "
        + ", ".join(f"{f} = excluded.{f}" for f in COUNT_FIELDS)
        + ", updated_at = now()",
        (
            run_id,
            cp.collection,
            cp.position,
            cp.done,
            cp.batches,
            *(getattr(c, f) for f in COUNT_FIELDS),
        ),
    )
    conn.execute("update etl_runs set heartbeat_at = now() where run_id = %s", (run_id,))


def record_batch(
    conn,
    run_id: str,
    collection: str,
    seq: int,
    docs: int,
    nbytes: int,
    started_at: datetime,
    seconds: float,
    unit: int | None = None,
) -> None:
    conn.execute(
        "insert into etl_batches (run_id, collection, seq, unit, docs, nbytes, started_at, seconds)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s)",
        (run_id, collection, seq, unit, docs, nbytes, started_at, seconds),
    )


def write_rejects(
    conn,
    run_id: str,
    rejects: Iterable[tuple[str, str | None, object, str, str]],
    first_seen: FirstSeen | None = None,
) -> int:
    """rejects: (collection, key, document, reason, stage). The document is stored as JSON text
    (escapes kept), because jsonb cannot hold \\u0000 or lone surrogates. A document rejected
    again keeps the time it was first rejected (first_seen, from forget_rejects), so that
    `--max-rejects` can tell a new reject from an old one rejected again."""
    rejects = list(rejects)
    if not rejects:
        return 0
    now = pg.scalar(conn, "select now()")  # the server's clock, as etl_runs.started_at
    seen = first_seen or {}
    rows = [
        (
            run_id,
            db_text(col),
            db_text(key),
            jsonutil.dumps_str(doc),
            db_text(reason),
            stage,
            seen.get((db_text(col), db_text(key), stage), now),
        )
        for col, key, doc, reason, stage in rejects
    ]
    with conn.cursor().copy(
        "copy etl_rejects (run_id, collection, key, document, reason, stage, created_at) from stdin"
    ) as copy:
        for r in rows:
            copy.write_row(r)
    return len(rows)


# (collection, key, stage) -> when that document was first rejected so
FirstSeen = dict[tuple[str | None, str | None, str], datetime]


def forget_rejects(conn, collection: str, keys: Iterable[str | None]) -> FirstSeen:
    """Keys read again (a batch, or changes): their earlier rejects go, whichever run wrote
    them; the caller then writes the ones that are still rejects (with the returned first
    times). So etl_rejects holds only live rejects: a document that became valid, or moved,
    has none."""
    found = sorted({db_text(k) or "" for k in keys if isinstance(k, str)})
    if not found:
        return {}
    first: FirstSeen = {}
    for col, key, stage, at in conn.execute(
        "delete from etl_rejects where collection = %s and key = any(%s)"
        " returning collection, key, stage, created_at",
        (collection, found),
    ):
        first[(col, key, stage)] = min(at, first.get((col, key, stage), at))
    return first


def forget_stale_rejects(conn, run_id: str, collection: str) -> int:
    """At the end of a whole pass over a collection: the rejects other runs wrote for it are of
    keys this run no longer read (removed from the source); every key still there and still a
    reject was written again by this run."""
    return conn.execute(
        "delete from etl_rejects where collection = %s and run_id <> %s", (collection, run_id)
    ).rowcount


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def db_text(s: str | None) -> str | None:
    """s as PostgreSQL text can hold it: U+0000 and lone surrogates (which a source file can
    hold in a key) written as \\u0000 / \\udXXX. Any other string is returned unchanged."""
    if s is None or not _UNSTORABLE.search(s):
        return s
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


def purge_rejects(conn, run_id: str) -> int:
    require_schema(conn)
    cur = conn.execute("delete from etl_rejects where run_id = %s", (run_id,))
    return cur.rowcount
