"""Change capture: `etl sync` (follow the WAL), `etl sync mark` and `renew` (pin a position
before a dump), `etl cutover` (the switch, and `--to arangodb` the way back)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from etl.cli.options import Dsn, MetricsPort, ReportsDir, settings_from
from etl.cli.output import header
from etl.errors import EtlError
from etl.signals import GracefulStop

sync_app = typer.Typer(
    help="Follow ArangoDB's write-ahead log after the bulk copy (zero-downtime migration)."
)

# the options of these commands alone (the shared ones are in etl/cli/options.py)
UntilTick = Annotated[
    bool,
    typer.Option(
        "--until-current",
        help="Apply everything up to the server's tick at start, then exit 0 (scripts, tests).",
    ),
]
CopyMapping = Annotated[
    str | None,
    typer.Option("--mapping", help="Mapping file (the one the copy was made with)."),
]
AssumeFrozen = Annotated[
    bool,
    typer.Option("--assume-frozen", help="Do not ask: writes to ArangoDB are already frozen."),
]
FreezeSample = Annotated[
    float | None,
    typer.Option(
        "--sample",
        min=0.01,
        max=100,
        help="Also reconcile a random P% of the keys inside the freeze (default: none; every "
        "changed key is verified anyway).",
    ),
]
Full = Annotated[
    bool,
    typer.Option(
        "--full", help="Also run a full reconcile inside the freeze (grows with the data)."
    ),
]
FreezeWorkers = Annotated[
    int, typer.Option("--workers", min=1, help="Processes of the reconcile inside the freeze.")
]
To = Annotated[
    str, typer.Option("--to", help="postgresql (the migration) or arangodb (the way back).")
]


def sync_cmd(
    ctx: typer.Context,
    until_current: UntilTick = False,
    metrics_port: MetricsPort = None,
    dsn: Dsn = None,
    mapping: CopyMapping = None,
    reports_dir: ReportsDir = None,
):
    """Apply every change committed in ArangoDB since the copy started, then keep following
    until Ctrl-C or SIGTERM (exit 130; `etl sync` goes on from there).

    Example: etl sync --metrics-port 9108
    """
    if ctx.invoked_subcommand is not None:
        return
    from etl.sync.run import SyncJob

    settings = settings_from(dsn, mapping, reports_dir)
    header(settings, "arangodb")
    stopper = GracefulStop()
    job = SyncJob(settings, metrics_port=metrics_port, should_stop=stopper.requested)
    try:
        with stopper:
            doc = job.execute(until_current=until_current)
    finally:
        _echo_sync(job)
    raise typer.Exit(0 if doc["state"] == "finished" else 1)


def _echo_sync(job: Any) -> None:
    s = job.doc.get("sync")
    if s:
        typer.echo(
            f"sync: position tick {s['position_tick']}, server tick {s['server_tick']} "
            f"(lag {s['lag_ticks']} ticks); {s['changes_read']} changes read"
            + (
                f"; lag p50 {s['lag']['p50_ms']} ms, p99 {s['lag']['p99_ms']} ms"
                if s.get("lag")
                else ""
            )
        )
        for collection, ops in s["applied"].items():
            typer.echo(f"  {collection}: " + ", ".join(f"{op} {n}" for op, n in ops.items()))
    if job.report_paths:
        typer.echo(f"run {job.doc['run_id']}: {job.doc['state']}; report {job.report_paths['md']}")
    report_error = getattr(getattr(job, "run", None), "report_error", None)
    if report_error:  # never silent (etl.runs.Run.write_reports)
        typer.echo(f"error: {report_error}", err=True)


def sync_mark_cmd(dsn: Dsn = None):
    """Record ArangoDB's WAL position now and pin it, BEFORE arangodump: `etl migrate --source
    dump:...` links to it and `etl sync` follows from it. The pin lasts 2 h (renew it with
    `etl sync renew` for a longer dump).

    Example: etl sync mark && arangodump ... && etl migrate --all --source dump:./dump
    """
    from etl import pg
    from etl.sources.arango import ArangoSource
    from etl.state import new_run_id, require_schema
    from etl.sync import positions
    from etl.sync.start import mark

    settings = settings_from(dsn)
    header(settings, "arangodb")
    with pg.connect(pg.resolve_dsn(settings)) as conn:
        require_schema(conn)
        positions.require_tables(conn)
        with ArangoSource(settings.arango) as source:
            p = mark(source, new_run_id("mark"))
        positions.record(conn, p)
        conn.commit()
    typer.echo(
        f"marked tick {p.start_tick} of ArangoDB server {p.server_id} (mark {p.run_id}, "
        f"syncer {p.syncer_id}); the server keeps its log from here for 2 h: start arangodump now"
    )


def sync_renew_cmd(dsn: Dsn = None):
    """Renew the latest mark's WAL registration for another 2 h (while a long dump runs)."""
    from etl import pg
    from etl.errors import PermanentError
    from etl.sources.arango import ArangoSource
    from etl.sources.wal import WalReader
    from etl.sync import positions

    settings = settings_from(dsn)
    header(settings, "arangodb")
    with pg.connect(pg.resolve_dsn(settings)) as conn:
        positions.require_tables(conn)
        p = positions.latest(conn, "mark")
    if p is None or p.syncer_id is None:
        raise PermanentError("no mark to renew", hint="run `etl sync mark` first")
    with ArangoSource(settings.arango) as source:
        WalReader(source).pin(p.start_tick, p.syncer_id)
    typer.echo(f"renewed mark {p.run_id} at tick {p.start_tick} for 2 h")


def cutover_cmd(
    assume_frozen: AssumeFrozen = False,
    sample: FreezeSample = None,
    full: Full = False,
    workers: FreezeWorkers = 1,
    dsn: Dsn = None,
    mapping: Annotated[str | None, typer.Option("--mapping", help="Mapping file.")] = None,
    reports_dir: ReportsDir = None,
    to: To = "postgresql",
):
    """Switch over: catch up, ask for the write freeze, apply the last changes, verify every key
    changed since the copy against ArangoDB, and say go (exit 0) or no-go (exit 1: the report
    names the keys and fields). The report gives the final tick and the freeze's length.

    Example: etl cutover
    """
    from etl.sync.cutover import Cutover

    settings = settings_from(dsn, mapping, reports_dir)
    header(settings, "arangodb")
    if to not in ("postgresql", "arangodb"):
        raise EtlError(f"--to {to!r}", hint="use postgresql or arangodb")
    if to == "arangodb":  # the way back (etl/fallback, docs/sync.md)
        from etl.fallback.commands import cutover_back

        raise typer.Exit(
            cutover_back(
                settings, assume_frozen=assume_frozen, sample=sample, workers=workers,
                echo=typer.echo, confirm=typer.confirm,
            )
        )  # fmt: skip

    def confirm() -> bool:
        if assume_frozen:
            return True
        return typer.confirm("Are writes to ArangoDB frozen (application stopped or read-only)?")

    stopper = GracefulStop()
    cut = Cutover(
        settings, confirm_freeze=confirm, sample=sample, full=full, workers=workers, say=typer.echo
    )
    try:
        with stopper:
            cut.job.should_stop = stopper.requested
            doc = cut.run()
    finally:
        _echo_sync(cut.job)
    _echo_verdict(doc)
    raise typer.Exit(0 if cut.go else 1)


def _echo_verdict(doc: Any) -> None:
    verified = sum((doc.get("keys_verified_in_freeze") or {}).values())
    typer.echo(
        f"cutover: {doc['verdict'].upper()}; final tick {doc.get('final_tick')}, writes frozen "
        f"for {doc.get('freeze_seconds')} s; {verified} changed keys verified in the freeze"
        + (f"; reconcile: {doc['reconcile_result']}" if doc.get("reconcile_result") else "")
    )
    for reason in doc.get("no_go_reasons") or []:
        typer.echo(f"  no-go: {reason}")
