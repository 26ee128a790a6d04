"""`etl migrate` (the bulk copy, one process or --workers N) and `etl worker` (joins a parallel
run from another machine)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from etl.cli.options import (
    AllowTruncated,
    Dsn,
    Mapping,
    ReportsDir,
    Source,
    check_selection,
    set_show_values,
    settings_from,
)
from etl.cli.output import end_run, header, show_run
from etl.errors import EtlError, Interrupted
from etl.signals import GracefulStop
from etl.units import LEASE_SECONDS

if TYPE_CHECKING:
    from etl.migrate import Migration
    from etl.parallel import ParallelMigration

# the options of these commands alone (the shared ones are in etl/cli/options.py)
Collections = Annotated[
    list[str] | None,
    typer.Option("--collection", "-c", help="Collection to migrate (repeatable)."),
]
All = Annotated[bool, typer.Option("--all", help="Every mapped collection, in dependency order.")]
Batch = Annotated[
    int | None,
    typer.Option("--batch", min=1, help="Documents per batch (default from settings: 5000)."),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the last interrupted or failed run.")
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Load inside a transaction that is rolled back; write the dry-run report.",
    ),
]
Limit = Annotated[
    int | None,
    typer.Option("--limit", min=1, help="At most N documents per collection (trials)."),
]
SinceKey = Annotated[
    str | None, typer.Option("--since-key", help="Start after this _key (trials).")
]
FromTick = Annotated[
    int | None,
    typer.Option(
        "--from-tick",
        min=1,
        help="The WAL tick this copy starts at, for `etl sync` (a dump source; default: the "
        "latest `etl sync mark`).",
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes: collections and key ranges in parallel (other machines join with `etl worker --run ID`).",
    ),
]
Lease = Annotated[
    float,
    typer.Option(
        "--lease-seconds",
        min=1,
        help="With --workers: a dead worker's unit is taken over after this long.",
    ),
]
AllowMissing = Annotated[
    bool,
    typer.Option(
        "--allow-missing",
        help="Go on when the source lacks mapped collections (the wrong dump stops otherwise).",
    ),
]
MaxRejects = Annotated[
    str,
    typer.Option(
        "--max-rejects",
        metavar="N|N%",
        help="Exit 1 only when this run's new rejects (documents no earlier run rejected)"
        " exceed N, or N% of the documents read.",
    ),
]
SummaryJson = Annotated[
    bool,
    typer.Option("--json", help="Print the summary as one JSON document on stdout (nothing else)."),
]
ShowValues = Annotated[
    bool,
    typer.Option(
        "--show-values",
        help="Quote field values in reject reasons (they may be personal data; default: not).",
    ),
]
RunToJoin = Annotated[
    str, typer.Option("--run", help="The parallel migrate run to work on (etl status lists runs).")
]
LocalWorkers = Annotated[
    int, typer.Option("--workers", min=1, help="Worker processes on this machine.")
]
WorkerLease = Annotated[
    float,
    typer.Option(
        "--lease-seconds", min=1, help="A dead worker's unit is taken over after this long."
    ),
]
RunDsn = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL DSN (the run's database).")]
WorkerReportsDir = Annotated[
    str | None,
    typer.Option("--reports-dir", help="Where the report goes if this machine finishes the run."),
]


def migrate_cmd(
    collection: Collections = None,
    all_: All = False,
    source: Source = "arangodb",
    batch: Batch = None,
    resume: Resume = False,
    dry_run: DryRun = False,
    limit: Limit = None,
    since_key: SinceKey = None,
    from_tick: FromTick = None,
    dsn: Dsn = None,
    mapping: Mapping = None,
    reports_dir: ReportsDir = None,
    workers: Workers = 1,
    lease_seconds: Lease = LEASE_SECONDS,
    allow_missing: AllowMissing = False,
    allow_truncated: AllowTruncated = False,
    max_rejects: MaxRejects = "0",
    as_json: SummaryJson = False,
    show_values: ShowValues = False,
):
    """Extract, transform and load collections in batches; resumable and idempotent.

    Example: etl migrate --collection resumes --batch 5000
    """
    from etl.migrate import Migration
    from etl.progress import Progress
    from etl.rejects import RejectLimit
    from etl.report import render_table

    check_selection(all_, collection)
    set_show_values(show_values)
    limit_rejects = RejectLimit.parse(max_rejects)
    settings = settings_from(dsn, mapping, reports_dir, allow_truncated)
    header(settings, "the interrupted run's" if resume and source == "arangodb" else source)
    reports_existed = Path(settings.migrate.reports_dir).exists()
    stopper, progress = GracefulStop(), Progress()
    # --batch reaches the run one way only (Migration's batch_size): on --resume it replaces
    # the interrupted run's batch size, which a settings value must not
    migration = Migration(
        settings,
        collections=collection,
        all_=all_,
        source=source,
        batch_size=batch,
        resume=resume,
        dry_run=dry_run,
        limit=limit,
        since_key=since_key,
        from_tick=from_tick,
        on_progress=progress.update,
        on_collection=progress.start,
        should_stop=stopper.requested,
        allow_missing=allow_missing,
    )
    job = _parallel(migration, workers, lease_seconds)
    exit_code, verdict = 0, ""
    try:
        with stopper:
            summary = job.run()
        over, verdict = limit_rejects.judge(settings, summary)
        exit_code = 1 if over else 0
    finally:
        progress.close()
        s = job.summary
        if s is not None and s.collections:
            last = f"run {s.run_id}: {s.state}" + (f"; {verdict}" if verdict else "")
            show_run(job, s.asdict(), render_table, last, as_json)
    end_run(settings, reports_existed, job, exit_code)


def _parallel(
    migration: Migration, workers: int, lease_seconds: float
) -> Migration | ParallelMigration:
    """--workers N: the same run, its collections and key ranges in N processes."""
    if workers <= 1:
        return migration
    from etl.parallel import ParallelMigration

    return ParallelMigration(migration, workers, lease_seconds)


def worker_cmd(
    run: RunToJoin,
    workers: LocalWorkers = 1,
    lease_seconds: WorkerLease = LEASE_SECONDS,
    dsn: RunDsn = None,
    reports_dir: WorkerReportsDir = None,
):
    """Join a parallel migrate run started by `etl migrate --workers N`, on this or another machine:
    claim its work units until none is left. Exit 0 when the run is complete.

    Example: etl worker --run migrate-20261124-0300-ab12cd --workers 2
    """
    from etl import parallel

    settings = settings_from(dsn, reports_dir=reports_dir)
    header(settings, f"of run {run}")
    stopper = GracefulStop()
    with stopper:
        joined = parallel.join(
            settings,
            run,
            workers=workers,
            lease_seconds=lease_seconds,
            should_stop=stopper.requested,
        )
    if stopper.requested():
        raise Interrupted(
            f"worker stopped; run {run} goes on with the other workers",
            hint=f"join again with `etl worker --run {run}`",
        )
    prog = joined.progress
    typer.echo(
        f"run {run}: {joined.state}; units done {prog.done}, running {prog.running}, "
        f"pending {prog.pending}, failed {prog.failed}"
        + (f"; report {joined.report_path}" if joined.report_path else "")
        + (f" (this process: {joined.done})" if workers == 1 else "")
    )
    if prog.failed:
        raise EtlError(f"run {run} stopped: {prog.errors[0] if prog.errors else 'a unit failed'}")
