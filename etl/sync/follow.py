"""`etl sync`: follow ArangoDB's write-ahead log from where the bulk copy started, apply each
committed change through the transform and the merge core, and keep the position in the same
PostgreSQL transaction as the changes it covers (arangodb-wal.md §2.4, §4.2-§4.5)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from etl import pg, target
from etl.errors import Interrupted, PermanentError
from etl.mapping import Mapping
from etl.sources import wal
from etl.sources.arango import ArangoSource
from etl.sync import positions, verify
from etl.sync.apply import Applier, Plan, Share
from etl.sync.changes import Change, ChangeStream, CollectionEvent
from etl.sync.committers import Committers
from etl.sync.lag import LagWindow, commit_time
from etl.sync.positions import Position

log = logging.getLogger("etl.sync")

REGISTRATION_CHECK_SECONDS = 600
VERIFY_PER_IDLE = 200  # keys verified per idle moment: a backlog must not hold up new changes
VERIFY_RETRY_SECONDS = 5  # a key that differed (the source moved on?) is checked again after
LAG_SAVE_SECONDS = 5  # how often an idle follower records its lag percentiles (etl status)
# the drain ends although the server's tick still moves once no mapped change came for this
# long: writes to other databases and system collections move the tick and are never ours
DRAIN_QUIET_SECONDS = 0.5
# While the committer applies a batch and the server sends full responses (a backlog), the
# reader goes on reading and groups what it reads into the next batch, up to this many changes:
# a backlog is applied in large batches (each batch's fixed statements, lookups and commit paid
# once per many changes). A trickle (responses below the chunk size) is not grouped: the reader
# waits for the committer, so a change never waits for a group to fill, and the reader does not
# poll the server while PostgreSQL works (checkmore is true after most single writes).
GROUP_CHANGES = 5000


def reads_on(resp: wal.TailResponse, moved: bool, committing: bool, pending: int) -> bool:
    """Hold what was read for the next batch and read on (GROUP_CHANGES): a full response
    that moved the position, more to read, a batch committing meanwhile, room in the group."""
    return moved and resp.check_more and resp.full and committing and pending < GROUP_CHANGES


@dataclass
class SyncOutcome:
    from_tick: int = 0
    last_scanned: int = 0
    server_tick: int = 0
    caught_up: bool = False
    polls: int = 0
    changes: int = 0  # committed changes read (before "last change of a key wins")
    applied: Counter = field(default_factory=Counter)  # (collection, operation) -> n
    transactions_aborted: int = 0
    seconds: float = 0.0
    # changes to mapped collections committed after `late_after` (the cutover's freeze):
    # (collection, key, tick)
    late: list[tuple[str, str, int]] = field(default_factory=list)
    # batches committed, by how (etl/sync/committers.py: one connection, split over two, ...)
    batches: Counter = field(default_factory=Counter)

    @property
    def lag_ticks(self) -> int:
        """Ticks the server has that the follower has not scanned: its tick minus what the
        last answer covered (position or lastScanned; an idle 204 scans to lasttick - 1)."""
        return max(0, self.server_tick - max(self.from_tick, self.last_scanned) - 1)


class WritesContinue(PermanentError):
    """The log kept moving past the position until the drain's deadline (cutover: no-go)."""


class Follower:
    def __init__(
        self,
        settings,
        mapping: Mapping,
        dsn: str,
        source: ArangoSource,
        *,
        run_id: str,
        should_stop: Callable[[], bool] = lambda: False,
        metrics=None,
        idle_wait: tuple[float, float] = (0.1, 1.0),  # the longest sleep bounds an idle's lag
        retry_wait=None,
    ):
        self.settings = settings
        self.mapping = mapping
        self.dsn = dsn
        self.source = source
        self.reader = wal.WalReader(source)
        self.run_id = run_id
        self.should_stop = should_stop
        self.metrics = metrics
        self.idle_wait = idle_wait
        self.applier = Applier(mapping, run_id)
        self.committers = Committers(
            dsn,
            settings.postgres.retry_attempts,
            retry_wait,
            self.applier,
            settings.postgres.sync_split_rows,
        )
        self.position: Position | None = None
        self.outcome: SyncOutcome | None = None  # the last run()'s, also when it raised
        self._inflight: tuple[Future[tuple[Counter, str]], tuple[int, int], list[float]] | None = (
            None  # (future, position, commit times) of the batch the committer is applying
        )
        self._saved: tuple[int, int] = (0, 0)  # the last committed position
        self.verifier = verify.Verifier(mapping, source, run_id)
        self.verifying = False  # sql/009 applied: changed keys are recorded and verified
        self._vconn: psycopg.Connection | None = None  # the verifier's own (not the committer's)
        self.lag = LagWindow()
        self._pending_times: list[float] = []  # commit times of the pending changes
        self._lag_saved = 0.0
        self._server_names: dict[str, str] | None = None  # cuid -> name, read by the first run

    # -- where to start --------------------------------------------------------------------
    def prepare(self) -> Position:
        """The follower's position: its saved cursor, or a new one at the start of the copy
        it follows. Refuses another server, a log that went backwards or another database."""
        database = self.source.settings.database
        with pg.connect(self.dsn) as conn:
            positions.require_tables(conn)
            self.verifying = verify.available(conn)
            fol = positions.follower(conn)
            begin = positions.follow_start(conn, fol, database)
            fol = begin.position
            self.applier.floors = begin.floors
            if begin.recopied:
                log.info(
                    "following the copy of migrate run %s: %s caught up from their copy's "
                    "start, from tick %d",
                    fol.base_run_id,
                    ", ".join(begin.recopied),
                    fol.from_tick,
                )
            conn.commit()
        if fol.database and fol.database != database:
            raise PermanentError(
                f"the copy was made from ArangoDB database {fol.database!r}, not {database!r}",
                hint="set [arango] database to the database that was migrated",
            )
        now = self.reader.last_tick()
        if fol.server_id and now.server_id and now.server_id != fol.server_id:
            raise self._gone(
                fol.from_tick, now.tick, f"ArangoDB now has server id {now.server_id}, the copy "
                f"was made from server {fol.server_id} (another server: its ticks are unrelated)"
            )  # fmt: skip
        if now.tick < fol.from_tick:
            raise self._gone(
                fol.from_tick, now.tick, "the server's log ends behind the position (ArangoDB "
                "restored or replaced since)"
            )  # fmt: skip
        self._check_registration(fol)
        self.position = fol
        return fol

    def _gone(self, position: int, server_tick: int, why: str) -> PermanentError:
        """The follower's position as of now and the server's tick, in the one line."""
        return PermanentError(
            f"ArangoDB's write-ahead log no longer covers the sync position (tick {position}; "
            f"the server's last tick is {server_tick}): {why}; changes after the copy cannot "
            "be followed",
            hint="a new `etl migrate --all` is needed (then `etl sync` follows the new copy)",
        )

    def _check_registration(self, p: Position) -> None:
        """Our syncerId keeps the server from pruning the WAL we still need (spec §4.4); it
        lapses after 2 h without a tail call and is lost when ArangoDB restarts."""
        try:
            body = self.reader.logger_state()
        except Exception as exc:  # noqa: BLE001 - only a warning depends on it
            log.debug("logger-state not readable: %s", exc)
            return
        ids = {str(c.get("syncerId")) for c in body.get("clients") or []}
        if p.syncer_id not in ids:
            log.warning(
                "the WAL registration of syncer %s had lapsed (ArangoDB restarted, or no sync "
                "for 2 h): re-registered now; if the server pruned the log meanwhile, sync "
                "stops and says so",
                p.syncer_id,
            )

    # -- the loop ----------------------------------------------------------------------------
    def run(
        self,
        *,
        until_tick: int | None = None,
        settle: bool = False,
        late_after: int | None = None,
        deadline: float | None = None,
    ) -> SyncOutcome:
        """Follow until stopped (Interrupted), or with until_tick until everything up to it is
        applied: a 204 with nothing buffered whose position reaches until_tick - 1 (§4.6).
        settle (the cutover's drain): also until that 204's own last tick (read by the server
        after its scan) is covered, so that nothing committed meanwhile is left behind; polls
        without sleeping between, and past `deadline` (time.monotonic()) raises
        WritesContinue. Changes to mapped collections after tick late_after go to out.late."""
        p = self.position or self.prepare()
        syncer_id = p.syncer_id
        assert syncer_id is not None  # prepare() gives every follow position one
        out = self.outcome = SyncOutcome(from_tick=p.from_tick, last_scanned=p.last_scanned)
        # names as the copy knew them first: a collection dropped or renamed since is still
        # recognised (its markers carry the cuid; a 2002 and a 2300's _id the current name).
        # Read from the server by the first run only (one request per collection): a later
        # run (the cutover's drain) goes on with the names the last one knew, and the stream
        # looks up a collection created since when it meets one.
        if self._server_names is None:
            self._server_names = self.reader.collection_ids()
        names = {**self._server_names, **(p.collections or {})}
        stream = ChangeStream(p.database or "", names, self.reader.collection_ids)
        pending: list[Change | CollectionEvent] = []
        self._pending_times = []
        F, L = p.from_tick, p.last_scanned
        self._saved = submitted = (F, L)
        wait = self.idle_wait[0]
        t0 = time.perf_counter()
        last_check = last_mapped = time.monotonic()
        last_save = 0.0
        # One committer thread applies batch N while this thread reads and transforms batch
        # N+1 (psycopg releases the GIL while PostgreSQL works); at most one batch in flight,
        # so positions commit in order.
        committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-sync-commit")
        try:
            while True:
                if self.should_stop():
                    self._flush(committer, stream, pending, F, L, out, caught_up=False, force=True)
                    self._wait(out)
                    raise Interrupted(
                        f"sync stopped at tick {self._saved[0]} (the server's last tick "
                        f"{out.server_tick}); `etl sync` goes on from there"
                    )
                resp = self.reader.tail(F, L, syncer_id)
                out.polls += 1
                out.server_tick = resp.last_tick
                self._require_present(resp, F, out)
                items = stream.feed(resp.markers)
                last_mapped = self._note_read(items, out, late_after, last_mapped)
                pending.extend(items)
                moved = False
                if resp.last_included == 0 and resp.last_scanned > F:
                    F = resp.last_scanned - 1
                if resp.last_included > F:
                    F, moved = resp.last_included, True
                L = resp.last_scanned
                caught_up = resp.status == 204 and not stream.buffered
                now = time.monotonic()
                if (
                    not stream.buffered
                    and (pending or (F, L) != submitted or caught_up and now - last_save > 10)
                    and not reads_on(resp, moved, self._committing(), len(pending))
                ):
                    self._flush(committer, stream, pending, F, L, out, caught_up=caught_up)
                    submitted, last_save = (F, L), now
                out.from_tick, out.last_scanned = F, L
                out.caught_up = caught_up
                if self.metrics is not None:
                    self.metrics.observe(out, caught_up)
                if until_tick is not None and caught_up and max(F, L) >= until_tick - 1:
                    if (
                        not settle
                        or max(F, L) >= resp.last_tick - 1
                        or time.monotonic() - last_mapped > DRAIN_QUIET_SECONDS
                    ):
                        self._wait(out)
                        break
                if settle and deadline is not None and time.monotonic() > deadline:
                    self._flush(committer, stream, pending, F, L, out, caught_up=False)
                    self._wait(out)
                    raise WritesContinue(
                        f"the log kept moving after the freeze: position tick {F}, the "
                        f"server's last tick {resp.last_tick}",
                        hint="stop every writer to ArangoDB (or set it read-only), then run "
                        "`etl cutover` again",
                    )
                if settle:  # the drain: poll again at once, the writes are frozen
                    time.sleep(0.005)
                    continue
                if now - last_check > REGISTRATION_CHECK_SECONDS:
                    self._check_registration(p)
                    last_check = now
                if resp.check_more and moved:
                    wait = self.idle_wait[0]
                    continue
                if not moved:
                    self._idle(out, caught_up, now)
                time.sleep(0 if moved else wait)
                wait = self.idle_wait[0] if moved else min(wait * 2, self.idle_wait[1])
        finally:
            self._close(committer, stream, p, out, t0)
        return out

    def _require_present(self, resp: wal.TailResponse, position: int, out: SyncOutcome) -> None:
        """The server still has the log from the position on (frompresent), else stop: the
        changes in between are lost to the follower."""
        if resp.from_present or position <= 0:
            return
        out.caught_up = False  # the position is behind: no "lag 0" in the summary
        if resp.last_tick < position:
            raise self._gone(
                position, resp.last_tick, "the server's log ends behind it (a restore, or "
                "another server)"
            )  # fmt: skip
        raise self._gone(position, resp.last_tick, "the server pruned it (frompresent=false)")

    def _note_read(
        self,
        items: list[Change | CollectionEvent],
        out: SyncOutcome,
        late_after: int | None,
        last_mapped: float,
    ) -> float:
        """Count what a poll read: changes, their commit times (for the lag), the changes to
        mapped collections after late_after (the freeze); returns when a mapped change was
        last read (the drain's quiet time)."""
        if any(
            isinstance(i, Change) and self.mapping.for_collection(i.collection) is not None
            for i in items
        ):
            last_mapped = time.monotonic()
        read_at = time.time()
        self._pending_times += [commit_time(i.doc, read_at) for i in items if isinstance(i, Change)]
        out.changes += sum(1 for i in items if isinstance(i, Change))
        if late_after is not None:
            out.late += [
                (i.collection, i.key, i.tick)
                for i in items
                if isinstance(i, Change)
                and i.tick > late_after
                and self.mapping.for_collection(i.collection) is not None
            ]
        return last_mapped

    def _idle(self, out: SyncOutcome, caught_up: bool, now: float) -> None:
        """Nothing new: let the last batch commit before sleeping; caught up, verify a few
        changed keys and record the lag now and then."""
        self._wait(out)
        if caught_up:
            self.verify_pending(limit=VERIFY_PER_IDLE)
            if now - self._lag_saved > LAG_SAVE_SECONDS:
                self.save_lag()

    def _close(
        self,
        committer: ThreadPoolExecutor,
        stream: ChangeStream,
        p: Position,
        out: SyncOutcome,
        t0: float,
    ) -> None:
        """However run() ends: the batch in flight committed (or failed), the committer gone,
        the position where the next run() goes on, the writer's connection closed."""
        try:
            self._wait(out)
        finally:
            committer.shutdown(wait=True)
            p.from_tick, p.last_scanned = self._saved  # where the next run() goes on
            p.collections = dict(stream.names)
            out.transactions_aborted = stream.aborted
            out.seconds = time.perf_counter() - t0
            self.committers.close()

    def _committing(self) -> bool:
        """A batch is in flight and not committed yet."""
        return self._inflight is not None and not self._inflight[0].done()

    def _flush(self, committer, stream, pending, F, L, out, *, caught_up: bool, force=False):
        """Hand the pending changes and (F, L) to the committer, which applies and saves them
        in one transaction; only between transactions (nothing buffered), else the open one is
        read again next time. The transform runs here, before the previous batch is waited for."""
        if stream.buffered:
            if force:
                stream.reset()
            return
        items = list(pending)
        pending.clear()
        times, self._pending_times = self._pending_times, []
        work: list = []  # prepared batches (Plan) and collection events, in commit order
        chunk: list[Change] = []
        for item in items + [None]:
            if isinstance(item, Change):
                chunk.append(item)
                continue
            if chunk:
                work.append(self.applier.prepare(chunk))
                chunk = []
            if isinstance(item, CollectionEvent):
                work.append(item)
        names = dict(stream.names)
        server_tick = out.server_tick

        def attempt(c, split: tuple[Plan, Callable[[], Share]] | None = None):
            applied: Counter = Counter()
            for w in work:
                if isinstance(w, CollectionEvent):
                    applied.update(self._collection_event(c, w, server_tick))
                elif split is not None:  # the one plan of the batch, with its share
                    applied.update(self.applier.execute(c, *split).counts)
                else:
                    applied.update(self.applier.execute(c, w).counts)
            positions.add_applied(c, applied)
            if self.verifying:
                verify.add_pending(c, self.mapping, [i for i in items if isinstance(i, Change)])
            positions.save_cursor(
                c,
                F,
                L,
                server_tick,
                caught_up=caught_up,
                applied=bool(items),
                collections=names,
            )
            return applied

        self._wait(out)  # the previous batch: committed (or its error raised) first
        self._inflight = (committer.submit(self.committers.commit, attempt, work), (F, L), times)

    def save_lag(self) -> None:
        """The lag percentiles over the latest changes, for `etl status` (sql/009)."""
        self._lag_saved = time.monotonic()
        p = self.lag.percentiles()
        if p is None or not self.verifying:
            return
        if self._vconn is None or self._vconn.closed:
            self._vconn = pg.connect(self.dsn)
        with self._vconn.transaction():
            self._vconn.execute(
                "insert into etl_sync_lag (run_id, changes, p50_ms, p99_ms, max_ms)"
                " values (%s, %s, %s, %s, %s) on conflict (run_id) do update set"
                " changes = excluded.changes, p50_ms = excluded.p50_ms, p99_ms = excluded.p99_ms,"
                " max_ms = excluded.max_ms, updated_at = now()",
                (positions.FOLLOWER, p["changes"], p["p50_ms"], p["p99_ms"], p["max_ms"]),
            )

    def close(self) -> None:
        if self.lag.lags:
            try:
                self.save_lag()
            except Exception as exc:  # noqa: BLE001 - figures for status, not the run's outcome
                log.warning("could not record the sync lag: %s", exc)
        if self._vconn is not None:
            self._vconn.close()
            self._vconn = None

    def verify_pending(
        self, *, limit: int | None = None, retry_after: float = VERIFY_RETRY_SECONDS
    ) -> verify.Checked:
        """Re-read applied keys from the source and compare their rows (see etl.sync.verify)."""
        if not self.verifying:
            return verify.Checked()
        if self._vconn is None or self._vconn.closed:
            self._vconn = pg.connect(self.dsn)
        return self.verifier.verify_pending(self._vconn, limit=limit, retry_after=retry_after)

    def ready_to_verify(self) -> None:
        """The verifier's connection and compare specs, made now (the cutover: before the
        freeze, so that its verification pays for neither)."""
        if not self.verifying:
            return
        if self._vconn is None or self._vconn.closed:
            self._vconn = pg.connect(self.dsn)
        self.verifier.prepare(self._vconn)

    def _wait(self, out: SyncOutcome) -> None:
        """The batch in flight, committed: its counts taken, its position saved."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        future, position, times = inflight
        applied, how = future.result()  # re-raises the commit's error here
        self._saved = position
        out.batches[how] += 1
        if times:
            now = time.time()
            lags = [max(0.0, now - t) for t in times]
            self.lag.add(lags)
            if self.metrics is not None:
                self.metrics.lag(lags)
        out.applied.update(applied)
        if self.metrics is not None:
            self.metrics.applied(applied)

    def _collection_event(self, c, ev: CollectionEvent, server_tick: int) -> Counter:
        """A mapped collection dropped, truncated or renamed: stop, unless the mapping says
        on_collection_ddl = "apply" (drop and truncate remove its rows; a rename always stops:
        the mapping names collections)."""
        if self.mapping.for_collection(ev.collection) is None:
            return Counter({(ev.collection, "skipped"): 1})
        if ev.type == wal.COLLECTION_RENAME or self.mapping.on_collection_ddl != "apply":
            raise PermanentError(
                f"collection {ev.collection!r} was {ev.what} in ArangoDB (tick {ev.tick}); "
                f"sync stopped before it, at tick {self._saved[0]} (the server's last tick "
                f"{server_tick})",
                hint='edit the mapping (policy.on_collection_ddl = "apply" removes the rows of a '
                "dropped or truncated collection) or migrate again",
            )
        keys = [
            k
            for ref in self.mapping.target_tables(ev.collection)
            for (k,) in c.execute(
                sql.SQL(
                    "select metadata -> 'arango' ->> '_key' from {}"
                    " where metadata -> 'arango' ->> 'collection' = %s"
                ).format(target.ident(ref.table)),
                (ev.collection,),
            )
        ]
        cm = self.mapping.for_collection(ev.collection)
        if cm is not None and cm.edge is not None:
            keys = [  # edges live in their research rows' metadata.edges
                k
                for ref in self.mapping.target_tables(ev.collection)
                for (k,) in c.execute(
                    sql.SQL(
                        "select e.key from {} r, jsonb_each(case when jsonb_typeof("
                        "r.metadata -> 'edges') = 'object' then r.metadata -> 'edges'"
                        " else '{{}}' end) e"
                    ).format(target.ident(ref.table))
                )
            ]
        removes = [Change(ev.tick, ev.collection, k, None) for k in dict.fromkeys(keys) if k]
        return self.applier.apply(c, removes).counts if removes else Counter()
