"""WAL positions in etl_wal_positions (sql/008): a mark, a migrate run's start, the follower's
cursor; and the changes the follower applied (etl_sync_applied)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from etl.errors import PermanentError
from etl.pg import scalar
from etl.sources import wal

FOLLOWER = "follow"


@dataclass
class Position:
    run_id: str
    kind: str
    database: str | None
    server_id: str | None
    server_version: str | None
    syncer_id: str | None
    start_tick: int
    from_tick: int
    last_scanned: int = 0
    base_run_id: str | None = None
    server_tick: int | None = None
    caught_up_at: datetime | None = None
    applied_at: datetime | None = None
    updated_at: datetime | None = None
    collections: dict[str, str] | None = None  # cuid -> name when the position was taken


_COLUMNS = (
    "run_id, kind, database_name, server_id, server_version, syncer_id, start_tick, from_tick,"
    " last_scanned, base_run_id, server_tick, caught_up_at, applied_at, updated_at, collections"
)


def _position(row) -> Position:
    (run_id, kind, db, sid, ver, syncer, start, from_, ls, base, st, cu, ap, up, cols) = row
    return Position(
        run_id, kind, db, sid, ver, syncer, int(start), int(from_), int(ls), base,
        None if st is None else int(st), cu, ap, up, cols,
    )  # fmt: skip


def require_tables(conn: psycopg.Connection) -> None:
    if scalar(conn, "select to_regclass('etl_wal_positions') is null"):
        raise PermanentError(
            "the target schema has no etl_wal_positions (sql/008 not applied)",
            hint="run `etl apply-schema`",
        )


def record(conn: psycopg.Connection, p: Position) -> None:
    """Insert or replace a position row (a mark, a migrate start, the follower's start)."""
    conn.execute(
        f"insert into etl_wal_positions ({_COLUMNS}) values"
        " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s)"
        " on conflict (run_id) do update set kind = excluded.kind,"
        " database_name = excluded.database_name, server_id = excluded.server_id,"
        " server_version = excluded.server_version, syncer_id = excluded.syncer_id,"
        " start_tick = excluded.start_tick, from_tick = excluded.from_tick,"
        " last_scanned = excluded.last_scanned, base_run_id = excluded.base_run_id,"
        " server_tick = excluded.server_tick, collections = excluded.collections,"
        " updated_at = now()",
        (
            p.run_id, p.kind, p.database, p.server_id, p.server_version, p.syncer_id,
            p.start_tick, p.from_tick, p.last_scanned, p.base_run_id, p.server_tick,
            p.caught_up_at, p.applied_at, None if p.collections is None else Jsonb(p.collections),
        ),
    )  # fmt: skip


def get(conn: psycopg.Connection, run_id: str) -> Position | None:
    row = conn.execute(
        f"select {_COLUMNS} from etl_wal_positions where run_id = %s", (run_id,)
    ).fetchone()
    return _position(row) if row else None


def latest(conn: psycopg.Connection, kind: str) -> Position | None:
    row = conn.execute(
        f"select {_COLUMNS} from etl_wal_positions where kind = %s"
        " order by created_at desc, run_id desc limit 1",
        (kind,),
    ).fetchone()
    return _position(row) if row else None


def follower(conn: psycopg.Connection) -> Position | None:
    return get(conn, FOLLOWER)


def save_cursor(
    conn: psycopg.Connection,
    from_tick: int,
    last_scanned: int,
    server_tick: int,
    *,
    caught_up: bool,
    applied: bool,
    collections: dict[str, str],
) -> None:
    """The follower's cursor (and the collection names it knows), in the transaction of the
    changes it covers."""
    conn.execute(
        "update etl_wal_positions set from_tick = %s, last_scanned = %s, server_tick = %s,"
        " caught_up_at = case when %s then now() else caught_up_at end,"
        " applied_at = case when %s then now() else applied_at end, collections = %s,"
        " updated_at = now() where run_id = %s",
        (
            from_tick, last_scanned, server_tick, caught_up, applied, Jsonb(collections),
            FOLLOWER,
        ),
    )  # fmt: skip


def add_applied(conn: psycopg.Connection, counts: dict[tuple[str, str], int]) -> None:
    rows = [(FOLLOWER, c, op, n) for (c, op), n in counts.items() if n]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "insert into etl_sync_applied (run_id, collection, operation, changes)"
            " values (%s, %s, %s, %s) on conflict (run_id, collection, operation)"
            " do update set changes = etl_sync_applied.changes + excluded.changes",
            rows,
        )


def applied(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    return {
        (c, op): int(n)
        for c, op, n in conn.execute(
            "select collection, operation, changes from etl_sync_applied where run_id = %s",
            (FOLLOWER,),
        )
    }


def copy_starts(conn: psycopg.Connection) -> dict[str, tuple[str, int]]:
    """collection -> (run id, start tick) of the finished migrate run that made its current
    copy. The copy holds every change of the collection up to that tick."""
    out = {}
    for collection, run_id, tick in conn.execute(
        "select distinct on (c.collection) c.collection, c.run_id, p.start_tick"
        " from etl_checkpoints c join etl_runs r on r.run_id = c.run_id"
        " left join etl_wal_positions p on p.run_id = c.run_id and p.kind = 'migrate'"
        " where r.command = 'migrate' and r.state = 'finished' and c.done"
        " order by c.collection, r.started_at desc"
    ):
        if tick is None:
            raise _no_position(run_id)
        out[collection] = (run_id, int(tick))
    return out


def _no_position(run_id: str) -> PermanentError:
    return PermanentError(
        f"migrate run {run_id} has no WAL position: the follower cannot know which "
        "changes its copy already holds",
        hint="run `etl sync mark` before the dump and migrate again "
        "(or pass `etl migrate --from-tick T`)",
    )


@dataclass
class FollowStart:
    """Where the follower reads from, and below which tick it skips a collection's changes."""

    position: Position
    floors: dict[str, int]  # collection -> skip its changes at or below this tick
    recopied: list[str]  # collections copied again since the follower last started


def follow_start(conn: psycopg.Connection, fol: Position | None, database: str) -> FollowStart:
    """In the caller's transaction: the follower's position for the newest copy. A follower
    that exists keeps its position and its etl_sync_applied counts; a collection copied again
    since (e.g. `etl migrate --collection jobs`) is caught up from its own copy's start: the
    follower reads from the older of the two, and applies a collection's changes only past
    its own floor (the copy's start; for the others also the follower's old position)."""
    base = migrate_base(conn)
    if base is None:
        raise PermanentError(
            "no finished migrate run has a WAL position to follow from",
            hint="run `etl migrate --all` from the live ArangoDB (or `etl sync mark` "
            "before arangodump, then migrate the dump)",
        )
    newest, start = base
    starts = copy_starts(conn)
    floors = {c: tick for c, (_run, tick) in starts.items()}
    if fol is not None and fol.base_run_id == newest:
        return FollowStart(fol, floors, [])
    if fol is None:
        fol = Position(
            run_id=FOLLOWER,
            kind="follow",
            database=start.database or database,
            server_id=start.server_id,
            server_version=start.server_version,
            syncer_id=start.syncer_id or wal.new_syncer_id(),
            start_tick=start.start_tick,
            from_tick=start.start_tick,
            base_run_id=newest,
            collections=start.collections,
        )
        record(conn, fol)
        conn.execute("delete from etl_sync_applied where run_id = %s", (FOLLOWER,))
        return FollowStart(fol, floors, [])
    # copies made by runs the follower has not seen yet (started after its base run)
    seen = conn.execute(
        "select started_at from etl_runs where run_id = %s", (fol.base_run_id,)
    ).fetchone()
    recopied = sorted(
        c
        for c, (run_id, _tick) in starts.items()
        if seen is None
        or scalar(conn, "select started_at > %s from etl_runs where run_id = %s", (seen[0], run_id))
    )
    old = fol.from_tick
    for c in starts:
        if c not in recopied:  # applied up to the follower's position already
            floors[c] = max(floors[c], old)
    need = min([old] + [starts[c][1] for c in recopied])
    if need < old:
        fol.from_tick, fol.last_scanned = need, 0
    fol.base_run_id = newest
    if start.syncer_id and not fol.syncer_id:
        fol.syncer_id = start.syncer_id
    record(conn, fol)
    return FollowStart(fol, floors, recopied)


def migrate_base(conn: psycopg.Connection) -> tuple[str, Position] | None:
    """The copy the follower follows: the newest finished migrate run with a WAL position,
    and that position. Several runs may have copied different collections: the follower then
    starts at the oldest of their positions (re-delivered changes are idempotent)."""
    rows = conn.execute(
        "select r.run_id from etl_runs r join etl_wal_positions p on p.run_id = r.run_id"
        " where r.command = 'migrate' and r.state = 'finished' and p.kind = 'migrate'"
        " order by r.started_at desc"
    ).fetchall()
    if not rows:
        return None
    newest = rows[0][0]
    # the newest copy of each collection: its run's position counts
    runs = {
        run_id
        for (run_id,) in conn.execute(
            "select distinct on (c.collection) c.run_id from etl_checkpoints c"
            " join etl_runs r on r.run_id = c.run_id"
            " where r.command = 'migrate' and r.state = 'finished' and c.done"
            " order by c.collection, r.started_at desc"
        )
    }
    runs.add(newest)
    oldest: Position | None = None
    for run_id in sorted(runs):
        p = get(conn, run_id)
        if p is None:
            raise _no_position(run_id)
        if oldest is None or p.start_tick < oldest.start_tick:
            oldest = p
    assert oldest is not None
    return newest, oldest
