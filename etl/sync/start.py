"""Where a copy starts in the WAL: `etl sync mark` before arangodump, and every migrate run
(arangodb-wal.md §4.2: read lastTick, pin it with our syncerId, then copy)."""

from __future__ import annotations

import logging
import threading

import psycopg

from etl import pg
from etl.errors import PermanentError
from etl.sources import wal
from etl.sources.arango import ArangoSource
from etl.sync import positions
from etl.sync.positions import Position

log = logging.getLogger("etl.sync")

PIN_EVERY_SECONDS = 1800  # the registration lasts 2 h (spec §4.4); renew well before


def mark(source: ArangoSource, run_id: str) -> Position:
    """Read the last tick and pin it: the WAL from here on is kept for the follower."""
    reader = wal.WalReader(source)
    now = reader.last_tick()
    syncer = wal.new_syncer_id()
    reader.pin(now.tick, syncer)
    names = reader.collection_ids()  # after the tick: a later drop or rename is in the log
    return Position(
        run_id=run_id,
        kind="mark",
        database=source.settings.database,
        server_id=now.server_id,
        server_version=now.version,
        syncer_id=syncer,
        start_tick=now.tick,
        from_tick=now.tick,
        server_tick=now.tick,
        collections=names,
    )


def record_migrate_start(
    conn: psycopg.Connection,
    run_id: str,
    source,
    *,
    from_tick: int | None = None,
    resumed: bool = False,
) -> Position | None:
    """In the caller's transaction: the migrate run's WAL position. A live source is marked
    now (before the first read); a dump takes --from-tick or the latest `etl sync mark`.
    A resumed run keeps the position it recorded first. None: no position (sync refuses)."""
    positions.require_tables(conn)
    kept = positions.get(conn, run_id)
    if kept is not None:
        return kept
    if isinstance(source, ArangoSource) and from_tick is None:
        p = mark(source, run_id)
        p.kind = "migrate"
    else:
        base = positions.latest(conn, "mark")
        if from_tick is None and base is None:
            # once: at the run's start, and for the first copy of this source only (a night of
            # dump runs without sync is a choice, not a fault to repeat)
            said = log.info if resumed or _copied_before(conn, run_id) else log.warning
            said(
                "no WAL position for this copy (no `etl sync mark` before the dump): "
                "`etl sync` cannot follow it"
            )
            return None
        if from_tick is not None:
            if base is None or base.start_tick != from_tick:
                base = Position(run_id, "migrate", None, None, None, None, from_tick, from_tick)
        assert base is not None  # without a mark nor --from-tick it returned above
        p = Position(
            run_id=run_id,
            kind="migrate",
            database=base.database,
            server_id=base.server_id,
            server_version=base.server_version,
            syncer_id=base.syncer_id,
            start_tick=base.start_tick,
            from_tick=base.start_tick,
            base_run_id=None if base.kind != "mark" else base.run_id,
            collections=base.collections,
        )
        if base.kind == "mark":
            log.info("this copy follows from mark %s (tick %d)", base.run_id, base.start_tick)
    positions.record(conn, p)
    return p


class Pinner:
    """Renews a position's WAL registration while a long copy runs (a daemon thread with its
    own connection to ArangoDB)."""

    def __init__(self, arango_settings, p: Position):
        assert p.syncer_id is not None  # a live source's position: mark() gave it one
        self._settings = arango_settings
        self._p = p
        self._syncer_id = p.syncer_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etl-wal-pin", daemon=True)

    def start(self) -> Pinner:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(PIN_EVERY_SECONDS):
            try:
                with ArangoSource(self._settings) as source:
                    wal.WalReader(source).pin(self._p.start_tick, self._syncer_id)
            except Exception as exc:  # noqa: BLE001 - a warning; sync will say if the log is gone
                log.warning("could not renew the WAL registration: %s", exc)

    def stop(self) -> None:
        self._stop.set()


def require_live(source) -> ArangoSource:
    if not isinstance(source, ArangoSource):
        raise PermanentError(
            "this command reads ArangoDB's write-ahead log: it needs the live server",
            hint="set [arango] url/database/username/password (or ETL_ARANGO_*)",
        )
    return source


def _copied_before(conn: psycopg.Connection, run_id: str) -> bool:
    """Whether an earlier migrate run copied the same source without a WAL position."""
    return bool(
        pg.scalar(
            conn,
            "select exists (select 1 from etl_runs r, etl_runs me where me.run_id = %s"
            " and r.command = 'migrate' and r.run_id <> me.run_id and r.source = me.source"
            " and r.started_at < me.started_at"
            " and not exists (select 1 from etl_wal_positions p where p.run_id = r.run_id))",
            (run_id,),
        )
    )
