"""The way back (docs/sync.md, "Rollback after the switch"): `etl fallback` replays
PostgreSQL's writes to ArangoDB; `arm` starts capturing them, `retire` ends it."""

from __future__ import annotations

from typing import Annotated

import typer

from etl.cli.options import Dsn, MappingOfCopy, MetricsPort, settings_from
from etl.cli.output import header
from etl.errors import EtlError
from etl.signals import GracefulStop

fallback_app = typer.Typer(
    help="Replay PostgreSQL's writes to ArangoDB after the cutover (the way back)."
)

# the options of these commands alone (the shared ones are in etl/cli/options.py)
OnConflict = Annotated[
    str,
    typer.Option(
        "--on-conflict",
        help="A document changed in ArangoDB after the cutover: report (default) or overwrite.",
    ),
]
UntilNow = Annotated[
    bool, typer.Option("--until-current", help="Apply everything committed up to now, then exit.")
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Changes per batch.")]
FallbackReportsDir = Annotated[str | None, typer.Option("--reports-dir", help="Where reports go.")]
Capture = Annotated[
    str,
    typer.Option(
        "--capture",
        help="auto (logical decoding where the server allows it, else triggers), trigger or logical.",
    ),
]
ForceRetire = Annotated[bool, typer.Option("--force", help="Also when changes are left unapplied.")]


def fallback_cmd(
    ctx: typer.Context,
    until_current: UntilNow = False,
    metrics_port: MetricsPort = None,
    on_conflict: OnConflict = "report",
    batch_size: BatchSize = 500,
    dsn: Dsn = None,
    mapping: MappingOfCopy = None,
    reports_dir: FallbackReportsDir = None,
):
    """Apply the application's writes to PostgreSQL to ArangoDB, then keep following until
    Ctrl-C or SIGTERM (exit 130). Exit 1 when a conflict or a row etl cannot invert was left.

    Example: etl fallback --until-current
    """
    if ctx.invoked_subcommand is not None:
        return
    from etl.fallback.commands import echo_lines
    from etl.fallback.run import FallbackJob

    if on_conflict not in ("report", "overwrite"):
        raise EtlError(f"--on-conflict {on_conflict!r}", hint="use report or overwrite")
    settings = settings_from(dsn, mapping, reports_dir)
    header(settings, "arangodb")  # the target of the way back
    stopper = GracefulStop()
    job = FallbackJob(
        settings,
        metrics_port=metrics_port,
        on_conflict=on_conflict,
        should_stop=stopper.requested,
        batch=batch_size,
    )
    try:
        with stopper:
            job.execute(until_current=until_current)
    finally:
        for line in echo_lines(job):
            typer.echo(line)
    raise typer.Exit(1 if job.conflicts or job.problems else 0)


def fallback_arm_cmd(dsn: Dsn = None, mapping: MappingOfCopy = None, capture: Capture = "auto"):
    """Capture every later write to the migrated tables (etl cutover does this on go), so that
    `etl fallback` can replay it to ArangoDB.

    Example: etl fallback arm --capture auto
    """
    from etl.errors import ConfigError
    from etl.fallback.capture import CAPTURES
    from etl.fallback.commands import arm

    if capture not in CAPTURES:
        raise ConfigError(f"--capture {capture}: one of {', '.join(CAPTURES)}")
    settings = settings_from(dsn, mapping)
    header(settings)
    st = arm(settings, capture_with=capture)
    m = st["mechanisms"]
    how = (
        "triggers" if st["mechanism"] == "trigger" else f"logical decoding, slot {st['slot_name']}"
    )
    typer.echo(
        f"fallback armed ({how} on {len(st['tables'])} tables, WAL {st['armed_lsn']});"
        f" wal_level {m['wal_level']}, logical decoding "
        + ("available" if m["logical_decoding"] else f"not available: {m['why']}")
    )


def fallback_retire_cmd(force: ForceRetire = False, dsn: Dsn = None):
    """Remove the capture (triggers, or the replication slot) and the captured changes: no way
    back after this.

    Example: etl fallback retire
    """
    from etl.fallback.commands import retire

    settings = settings_from(dsn)
    header(settings)
    done = retire(settings, force=force)
    typer.echo("fallback retired" + (": " + "; ".join(done) if done else " (nothing was armed)"))
