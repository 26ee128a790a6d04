"""`etl status` (recent runs, checkpoints, reconciles, change capture; tables fit 100 columns)
and `etl purge-rejects`."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from etl.cli.options import DsnPlain, check_run_id, settings_from
from etl.cli.output import cell, duration, echo_table, header, print_json
from etl.errors import EtlError
from etl.settings import Settings

# the options of these commands alone (the shared ones are in etl/cli/options.py)
Limit = Annotated[int, typer.Option("--limit", min=1, help="How many recent runs.")]
OneRun = Annotated[
    str | None, typer.Option("--run", help="One run: its state, checkpoints and work units.")
]
Watch = Annotated[
    bool,
    typer.Option(
        "--watch", help="Show it again every --every seconds until Ctrl-C (or --run ends)."
    ),
]
Every = Annotated[float, typer.Option("--every", min=0.1, help="Seconds between --watch updates.")]
StatusJson = Annotated[
    bool,
    typer.Option("--json", help="Print the status as one JSON document on stdout (nothing else)."),
]
RunToPurge = Annotated[
    str, typer.Option("--run", help="Run id whose rejected documents to delete.")
]


def status_cmd(
    limit: Limit = 10,
    run: OneRun = None,
    watch: Watch = False,
    every: Every = 5.0,
    as_json: StatusJson = False,
    dsn: DsnPlain = None,
):
    """Recent runs with their state, checkpoints, and the latest reconcile per collection; the
    embedded server's place when etl uses it. Tables fit 100 columns.

    Example: etl status --run migrate-20261124T030000Z-ab12cd --watch
    """
    if run is not None:
        check_run_id(run)
    from etl.pg import resolve_dsn

    settings = settings_from(dsn)
    header(settings)
    target = resolve_dsn(settings)
    try:
        _status_loop(settings, target, limit, run, watch, every, as_json)
    except KeyboardInterrupt:  # --watch ends with Ctrl-C: nothing was running to stop
        if not watch:
            raise


def _status_loop(
    settings: Settings,
    dsn: str,
    limit: int,
    run: str | None,
    watch: bool,
    every: float,
    as_json: bool,
) -> None:
    from etl.status import status

    while True:
        info: dict[str, Any] = status(dsn, limit=limit, run=run)
        if run is not None and not info["runs"]:
            raise EtlError(f"no run {run!r} in this database", hint="etl status lists the runs")
        if not settings.postgres.dsn.get_secret_value():
            info["embedded_dir"] = str(Path(settings.postgres.embedded_dir).expanduser())
        if as_json:
            print_json(info)
        else:
            _echo_status(info, run)
        running = any(r.get("state") == "running" for r in info["runs"])
        if not watch or (run is not None and not running):
            return
        time.sleep(every)
        if not as_json:
            typer.echo("")


def _echo_status(info: dict, run: str | None) -> None:
    if info.get("embedded_dir"):
        typer.echo(f"PostgreSQL: the embedded server at {info['embedded_dir']}\n")
    typer.echo("Run" if run else "Runs")
    echo_table([_run_view(r) for r in info["runs"]], keep=("run_id", "state", "error"))
    typer.echo(f"\nCheckpoints of {'the run' if run else 'the latest migrate run'}")
    echo_table([_short_keys(r) for r in info["checkpoints"]])
    if info["work_units"]:
        typer.echo(f"\nWork units of {'the run' if run else 'the latest migrate run'} (--workers)")
        echo_table(info["work_units"])
    typer.echo("\nLatest reconcile per collection")
    echo_table(info["reconciles"])
    if info.get("rejects"):
        typer.echo("\nRejects now in etl_rejects (live: a key read again loses its old ones)")
        echo_table(info["rejects"])
    if info.get("sync"):
        typer.echo("\nChange capture (etl sync)")
        echo_table([{k: v for k, v in r.items() if k != "updated_at"} for r in info["sync"]])
        if info.get("sync_applied"):
            echo_table(info["sync_applied"])
        if info.get("sync_verified"):
            typer.echo("\nChanged keys verified against ArangoDB (etl sync, etl cutover)")
            echo_table(info["sync_verified"])
    if info.get("fallback"):
        typer.echo("\nThe way back (etl fallback): change table and lag")
        echo_table(info["fallback"])
        if info.get("fallback_applied"):
            echo_table(info["fallback_applied"])


def _run_view(row: dict) -> dict:
    """A run as the status table shows it in 100 columns: the run id names the command, its
    length replaces the finish time; --json has every column."""
    out: dict = {}
    for key, value in row.items():
        if key in ("command", "finished_at", "heartbeat_at"):
            continue
        if key == "started_at":
            out["started"] = cell(value)[5:] if isinstance(value, datetime) else value
            end = row.get("finished_at") or row.get("heartbeat_at")
            took = (end - value).total_seconds() if isinstance(end, datetime) and value else None
            out["took"] = duration(took) if took is not None else ""
        else:
            out[key] = value
    return out


# the checkpoint counts under short headers, so that the table fits 100 columns
_SHORT = {
    "position": "last key",
    "batches": "batch",
    "inserted": "ins",
    "updated": "upd",
    "unchanged": "same",
    "rejected": "rej",
    "unmapped": "unmap",
    "dangling": "dangl",
    "updated_at": "at",
}


def _short_keys(row: dict) -> dict:
    return {_SHORT.get(k, k): v for k, v in row.items()}


def purge_rejects_cmd(run: RunToPurge, dsn: DsnPlain = None):
    """Delete the rejected source documents a run kept in etl_rejects (they hold source data)."""
    from etl import pg, state

    check_run_id(run)
    settings = settings_from(dsn)
    header(settings)
    with pg.connect(pg.resolve_dsn(settings)) as conn:
        state.require_schema(conn)
        if conn.execute("select 1 from etl_runs where run_id = %s", (run,)).fetchone() is None:
            raise EtlError(f"no run {run!r} in this database", hint="etl status lists the runs")
        n = state.purge_rejects(conn, run)
    typer.echo(f"deleted {n} rejected document(s) of run {run}")
