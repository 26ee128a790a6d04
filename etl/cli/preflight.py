"""`etl preflight`: go/no-go before a night's run."""

from __future__ import annotations

from typing import Annotated

import typer

from etl.cli.options import AllowTruncated, AsJson, Dsn, Source, settings_from
from etl.cli.output import header, notice, say, show

# the options of these commands alone (the shared ones are in etl/cli/options.py)
PreflightMapping = Annotated[
    str | None, typer.Option("--mapping", help="Mapping file (default configs/atspro.toml).")
]
PreflightReportsDir = Annotated[
    str | None,
    typer.Option("--reports-dir", help="Where the report goes (default reports/)."),
]


def preflight_cmd(
    source: Source = "arangodb",
    dsn: Dsn = None,
    mapping: PreflightMapping = None,
    reports_dir: PreflightReportsDir = None,
    allow_truncated: AllowTruncated = False,
    as_json: AsJson = False,
):
    """Go/no-go before a night's run: PostgreSQL version, extensions, schema, privileges, pooler,
    server settings, the source and its collections, the estimated size and duration. Changes
    nothing. Exit 0 = ready, 1 = warnings, 2 = blocked.

    Example: etl preflight --source arangodb
    """
    from etl.preflight import Preflight
    from etl.preflight_report import render_table, summary_line, write_reports

    settings = settings_from(dsn, mapping, reports_dir, allow_truncated)
    header(settings, source)
    result = Preflight(settings, source).run()  # the shipped sql files (ETL_SQL_DIR overrides)
    doc = result.asdict()
    show(doc, render_table, as_json)
    line = summary_line(doc)
    try:
        paths = write_reports(doc, settings.migrate.reports_dir)
        line += f"; report {paths['md']}, {paths['json']} and {paths['html']}"
    except OSError as exc:
        notice(f"warning: could not write the preflight report: {exc}")
    say(line, as_json)
    raise typer.Exit(result.exit_code)
