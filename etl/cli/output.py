"""How commands print: the header line, notices on stderr, the --json document, tables that fit
100 columns, and the lines naming the reports a run wrote."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

from etl.cli.options import CTX
from etl.errors import EtlError
from etl.settings import Settings

log = logging.getLogger("etl")

WIDTH = 100  # status and the other tables fit a terminal of this many columns


def notice(line: str) -> None:
    from etl.logs import notice as log_notice

    log_notice(line)


def say(line: str, as_json: bool) -> None:
    """A run's last line: on stdout, or on stderr when stdout carries the --json result."""
    (notice if as_json else typer.echo)(line)


def describe_source(settings: Settings, source: str) -> str:
    if source == "arangodb":
        return f"ArangoDB {settings.arango.url}, database {settings.arango.database}"
    kind, sep, path = source.partition(":")
    return f"{kind} {path}" if sep else source


def header(settings: Settings | None, source: str | None = None) -> None:
    """The first line of every command: which PostgreSQL server and database it works on, and
    which source (never a password). A log record: --quiet drops it, --log-format json keeps it."""
    from etl.pg import describe_settings, role_of

    CTX.role = role_of(settings) if settings is not None else None
    parts = [describe_settings(settings)] if settings is not None else []
    if source is not None and settings is not None:
        parts.append("source " + describe_source(settings, source))
    log.info("; ".join(parts))


def print_json(doc: Any) -> None:
    """The machine-readable result: one JSON document on stdout, nothing else there."""
    typer.echo(json.dumps(doc, indent=2, default=str, ensure_ascii=False))


def show(doc: dict, render: Callable[[dict], str], as_json: bool) -> None:
    """A result: the JSON document with --json, else its table."""
    if as_json:
        print_json(doc)
    else:
        typer.echo(render(doc))


def announce_reports(settings: Settings, existed: bool, paths: Mapping | None) -> None:
    """The first report in a new reports directory: say on stderr where reports go."""
    if not existed and paths:
        notice(
            f"etl: reports go to {Path(settings.migrate.reports_dir).resolve()} (a new directory; "
            "--reports-dir, ETL_REPORTS_DIR or migrate.reports_dir change it)"
        )


def echo_paths(paths: Mapping | None, err: bool = False) -> None:
    """The reports a run wrote, one line (the last line names the main one again); on stderr
    when stdout carries the --json result."""
    if paths:
        line = "reports written: " + ", ".join(str(p) for p in paths.values())
        (notice if err else typer.echo)(line)


def report_tail(job: Any) -> str:
    """'; report PATH' for a run's last line, or why there is none."""
    if job.report_paths:  # scripts read "report X.md and Y.json" from it
        return f"; report {job.report_paths['md']} and {job.report_paths['json']}"
    if job.report_error:
        return "; NO REPORT (see the error below)"
    return ""


def raise_report_error(job: Any) -> None:
    """A report that could not be written is an error (exit 2), once the summary and verdict
    are printed and the run is saved in etl_runs."""
    if job.report_error:
        raise EtlError(
            job.report_error,
            hint="the run itself is saved (etl status); make the directory writable or choose"
            " another --reports-dir (etl preflight checks it)",
        )


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):  # UTC, to the second: the JSON output has the full value
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if v.tzinfo else str(v)
    return " ".join(str(v).split())  # one line per row, whatever the cell holds


def fit_widths(widths: list[int], total: int, floors: list[int] | None = None) -> list[int]:
    """Narrow the widest columns, one character at a time, until the row (with two spaces
    between columns) fits `total`: none below its floor (its header: a test or a script may
    look for it), the first column (it names the row: a run id, a collection) last."""
    w = list(widths)
    low = floors or [5] * len(w)
    while sum(w) + 2 * (len(w) - 1) > total:
        cuttable = [j for j in range(1, len(w)) if w[j] > low[j]]
        if cuttable:
            i = max(cuttable, key=lambda j: w[j])
        elif w[0] > low[0]:
            i = 0
        else:
            break
        w[i] -= 1
    return w


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def echo_table(rows: list[dict], width: int = WIDTH, keep: tuple[str, ...] = ()) -> None:
    """rows as a table that fits `width` columns; the columns in `keep` are never cut (a
    row's error: the operator must read all of it)."""
    if not rows:
        typer.echo("(none)")
        return
    keys = list(rows[0].keys())
    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    floors = [w if k in keep else max(4, len(k)) for k, w in zip(keys, widths, strict=True)]
    widths = fit_widths(widths, width, floors)
    typer.echo("  ".join(_clip(k, w).ljust(w) for k, w in zip(keys, widths, strict=True)).rstrip())
    typer.echo("  ".join("-" * w for w in widths))
    for c in cells:
        typer.echo("  ".join(_clip(v, w).ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def show_run(job: Any, doc: dict, render: Callable[[dict], str], last: str, as_json: bool) -> None:
    """A run's summary, the reports it wrote, and its last line (which names the main report)."""
    show(doc, render, as_json)
    echo_paths(job.report_paths, err=as_json)
    say(last + report_tail(job), as_json)


def end_run(settings: Settings, reports_existed: bool, job: Any, exit_code: int) -> NoReturn:
    """After the summary: where reports go (a new directory), a report that failed (exit 2),
    else the run's exit status."""
    announce_reports(settings, reports_existed, job.report_paths)
    raise_report_error(job)
    raise typer.Exit(exit_code)
