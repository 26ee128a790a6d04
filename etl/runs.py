"""A run's life in etl_runs, the same for every command: its identity (new, resumed or joined),
its collection locks, its start and end rows, and its reports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import psycopg

from etl import owners, pg, state, units
from etl.errors import PermanentError
from etl.generic.apply import require_applied
from etl.mapping import load_mapping
from etl.report import write_reports
from etl.state import Checkpoint
from etl.summary import Summary

log = logging.getLogger("etl.runs")


class Closeable(Protocol):
    def close(self) -> None: ...


def select_collections(
    mapping, source, requested: list[str], all_: bool, *, allow_missing: bool = False
) -> list[str]:
    """The collections a run works on, in dependency order whatever order the flags came in.
    --all adds the collections the source has and the mapping does not name (reported as
    unmapped). A mapped collection the source lacks (the wrong dump, a partial one, the wrong
    database) stops the run, naming it and what the source has, unless allow_missing
    (--allow-missing): then it is left out (missing_collections() names it)."""
    order = list(mapping.collections_in_order())
    if not all_ and not requested:
        raise PermanentError("name a collection (--collection NAME) or use --all")
    known = set(collection_names(source))
    missing = missing_collections(mapping, known, requested, all_)
    if missing and not allow_missing:
        has = ", ".join(sorted(known)) if known else "no collections at all"
        what = (
            f"collection {missing[0]!r} does not exist"
            if len(missing) == 1
            else f"collections {', '.join(map(repr, missing))} do not exist"
        )
        raise PermanentError(
            f"{what} in {source.description}; it has: {has}",
            hint="check --source (the right dump or database?); --allow-missing goes on without"
            " them",
        )
    if missing:
        log.warning("not in the source, left out (--allow-missing): %s", ", ".join(missing))
    if all_:
        return [c for c in order if c in known] + sorted(known - set(order))
    rank = {c: i for i, c in enumerate(order)}
    present = [c for c in dict.fromkeys(requested) if c in known]
    return sorted(present, key=lambda c: rank.get(c, len(rank)))


def collection_names(source) -> list[str]:
    """The source's collection names; without counting them where the source can (a dump's
    count reads its files)."""
    names = getattr(source, "collection_names", None)
    return names() if names is not None else [c.name for c in source.collections()]


def missing_collections(mapping, known: set[str], requested: list[str], all_: bool) -> list[str]:
    """The collections the run should read (every mapped one with --all, else those named)
    that the source (its collection names: `known`) does not have, in dependency order."""
    wanted = list(mapping.collections_in_order()) if all_ else list(dict.fromkeys(requested))
    return [c for c in wanted if c not in known]


class Run:
    """One run of `command`, the same lifecycle for every command. Make it with Run.new(),
    Run.resume() or Run.join(); lock() its collections, start() it (its heartbeat starts with
    it), end its Summary (etl/summary.py: outcome() says how it ended) and conclude() it once,
    whatever happened: the reports and the end row come from that one summary; close() at
    the end."""

    def __init__(
        self,
        settings,
        command: str,
        run_id: str,
        dsn: str,
        *,
        previous: dict | None = None,
        checkpoints: dict[str, Checkpoint] | None = None,
    ):
        self.settings = settings
        self.command = command
        self.run_id = run_id
        self.dsn = dsn
        # what the resumed or joined run recorded: state and options (collections, source_spec,
        # batch_size, ...); empty for a new run
        self.previous = previous or {}
        self.checkpoints = checkpoints or {}
        self.report_paths: dict[str, Path] | None = None
        self._lock_conn: psycopg.Connection | None = None
        self._heartbeat: owners.Heartbeat | None = None
        self.report_error: str | None = None  # why the reports could not be written

    @property
    def options(self) -> dict:
        return self.previous.get("options") or {}

    # -- identity ----------------------------------------------------------------------------
    @classmethod
    def new(cls, settings, command: str, *, dry_run: bool = False) -> Run:
        dsn = _checked_dsn(settings, command)
        return cls(settings, command, state.new_run_id("dryrun" if dry_run else command), dsn)

    @classmethod
    def resume(cls, settings, command: str = "migrate") -> Run:
        """The newest run of `command` that did not finish, with its checkpoints."""
        dsn = _checked_dsn(settings, command)
        with pg.connect(dsn) as conn:
            prev = state.latest_resumable_run(conn, command)
            if prev is None:
                raise PermanentError(
                    f"nothing to resume: no interrupted or failed {command} run",
                    hint="start a new run without --resume",
                )
            if prev["state"] == "running":  # killed, or still running elsewhere
                owners.refuse_if_alive(prev["run_id"], prev["owner"], command)
            checkpoints = state.load_checkpoints(conn, prev["run_id"])
        log.info("resuming run %s (%s)", prev["run_id"], prev["state"])
        return cls(settings, command, prev["run_id"], dsn, previous=prev, checkpoints=checkpoints)

    @classmethod
    def join(cls, settings, run_id: str) -> Run:
        """A parallel migrate run that workers on any machine share."""
        dsn = _checked_dsn(settings)
        with pg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "select state, options from etl_runs where run_id = %s and command = 'migrate'",
                (run_id,),
            ).fetchone()
            if row is None or not units.has_units(conn, run_id):
                raise PermanentError(
                    f"no parallel migrate run {run_id!r}",
                    hint="start one with `etl migrate --workers N`; `etl status` lists runs",
                )
        previous = {"run_id": run_id, "state": row[0], "options": row[1]}
        return cls(settings, "migrate", run_id, dsn, previous=previous)

    # -- locks -------------------------------------------------------------------------------
    def lock(self, names: list[str], *, scope: str | None = None) -> None:
        """A transaction-level advisory lock per collection, held until close() by a dedicated
        connection whose transaction stays open: a second run of the same command on a
        collection refuses at once instead of interleaving checkpoints. A lock that lives in a
        transaction (not a session) also holds through PgBouncer in transaction pooling, and
        is released by the server whenever this process goes away."""
        conn = pg.connect(self.dsn, application_name=f"etl-{self.command}-lock")
        try:
            # the open transaction is this lock's whole purpose: no server timeout may end it
            conn.execute("set local idle_in_transaction_session_timeout = 0")
            for name in names:
                got = pg.scalar(
                    conn,
                    "select pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"etl.{scope or self.command}:{name}",),
                )
                if not got:
                    raise PermanentError(
                        f"another etl {scope or self.command} is running"
                        + (f" on collection {name!r}" if scope is None else f" ({name})"),
                        hint="wait for it to finish (etl status shows it)",
                    )
        except BaseException:
            conn.close()
            raise
        self._lock_conn = conn

    @property
    def locked(self) -> bool:
        return self._lock_conn is not None

    # -- start and end -----------------------------------------------------------------------
    def start(self, conn: psycopg.Connection, *, source: str, target: str, options: dict) -> None:
        """The run's etl_runs row (state running), in the caller's transaction."""
        state.start_run(
            conn, self.run_id, self.command, source=source, target=target, options=options
        )
        self.beat()

    def begin(self, *, source: str, target: str, options: dict) -> None:
        """start() in a transaction of its own (a job whose working connection is its own
        business: sync, cutover, fallback); again to record what became known since."""
        with pg.connect(self.dsn) as conn:
            self.start(conn, source=source, target=target, options=options)
            conn.commit()

    def beat(self) -> None:
        """Keep the run's heartbeat going while this process owns it (etl/owners.py)."""
        if self._heartbeat is None:
            self._heartbeat = owners.Heartbeat(self.dsn, self.run_id).start()

    def write_reports(self, summary: dict, *, markdown=None) -> dict[str, Path] | None:
        """reports/<run id>.{json,md,html}. A disk problem does not fail the run (etl_runs keeps
        its outcome): it is kept in report_error, which the command reports as an error once
        the summary and verdict are printed."""
        try:
            self.report_paths = write_reports(
                summary, self.settings.migrate.reports_dir, markdown=markdown
            )
            self.report_error = None
        except OSError as exc:
            where = exc.filename or self.settings.migrate.reports_dir
            self.report_error = (
                f"the report of run {self.run_id} could not be written to {where}: "
                f"{exc.strerror or exc}"
            )
            log.debug("%s", self.report_error)
            self.report_paths = None
        return self.report_paths

    def conclude(
        self,
        summary: Summary,
        *,
        markdown: Callable[[dict], str] | None = None,
        report: bool = True,
        record: bool = True,
        also: Callable[[psycopg.Connection], None] | None = None,
    ) -> None:
        """The run's end: its summary stamped, its reports written (report) and its end row
        recorded (record: a run without its locks or a dry run changes nothing in etl_runs)."""
        summary.stamp()
        if report:
            self.write_reports(summary.asdict(), markdown=markdown)
        if record:
            self.finish(summary.state, summary=summary.row(), error=summary.error, also=also)

    def end(
        self,
        summary: Summary,
        run_state: str,
        error: str | None = None,
        *,
        markdown: Callable[[dict], str] | None = None,
        also: Callable[[psycopg.Connection], None] | None = None,
        resources: Iterable[Closeable | None] = (),
    ) -> dict[str, Path] | None:
        """The end of a job that holds this run (sync, cutover, fallback, cutover back; the
        `close` of summary.concluded()): the summary's end state, conclude() when the run got
        its locks (a run refused there changes nothing), then the job's resources (followers,
        metrics servers, sources, connections: None for one never opened) and the run itself
        closed, in that order. Returns the report paths."""
        summary.end(run_state, error)
        if self.locked:
            self.conclude(summary, markdown=markdown, also=also)
        for resource in resources:
            if resource is not None:
                resource.close()
        self.close()
        return self.report_paths

    def finish(
        self,
        run_state: str,
        *,
        summary: dict,
        error: str | None = None,
        also: Callable[[psycopg.Connection], None] | None = None,
    ) -> None:
        """The run's end row (and `also`, e.g. audit entries) in one transaction on a fresh
        connection: the working one may be broken. A failure here is logged, not raised: the
        report is written and a migrate run stays resumable."""
        paths = self.report_paths
        self._stop_heartbeat()
        try:
            with pg.connect(self.dsn) as conn, conn.transaction():
                if also is not None:
                    also(conn)
                state.finish_run(
                    conn,
                    self.run_id,
                    run_state,
                    summary=summary,
                    error=error,
                    report_path=str(paths["json"]) if paths else None,
                )
        except psycopg.Error as exc:
            log.warning("could not record the end of %s run %s: %s", self.command, self.run_id, exc)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def close(self) -> None:
        self._stop_heartbeat()
        if self._lock_conn is not None:
            self._lock_conn.close()  # ends the lock's transaction: the locks go with it
            self._lock_conn = None


def _checked_dsn(settings, command: str = "migrate") -> str:
    """The target's DSN, once its schema is known to be the one this etl applies (and, for a
    migrate, once the role is known to hold every privilege it writes with)."""
    dsn = pg.resolve_dsn(settings)
    with pg.connect(dsn) as conn:
        state.require_schema(conn)
        if command == "migrate":
            from etl.grants import require_privileges

            require_privileges(conn)
        mapping = load_mapping(settings.migrate.mapping)
        require_applied(conn, mapping.generic_targets(), mapping.path)
    return dsn
