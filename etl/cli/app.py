"""The `etl` typer app and its global options (--config, --debug, -v, -q, --log-level,
--log-file, --log-format, --version); the commands are registered in etl/cli/__init__.py."""

from __future__ import annotations

import os

import typer

from etl.cli.options import CTX, refuse
from etl.errors import EtlError
from etl.settings import load_settings


def _no_bool_placeholder() -> None:
    """typer's help shows `<bool>` after every flag, as if it took a value: show nothing."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_bool_placeholder()

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Migrate ATSPro documents from ArangoDB into PostgreSQL, and prove nothing was lost.",
)


def _version_text() -> str:
    """etl, the schema it applies, and the Python, psycopg and libpq it runs on."""
    import platform

    import psycopg

    from etl import __version__
    from etl.resources import schema_version, sql_dir

    d = sql_dir()
    libpq = psycopg.pq.version()  # e.g. 170004 for 17.4
    return "\n".join(
        [
            f"etl {__version__}",
            f"schema {schema_version(d) or '(none)'} (applies {d}{os.sep}NNN_*.sql)",
            f"Python {platform.python_version()}",
            f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), "
            f"libpq {libpq // 10000}.{libpq % 10000}",
            _target_line(),
        ]
    )


def _target_line() -> str:
    """Which PostgreSQL etl would use here: the embedded server's place is per project."""
    from etl.pg import describe_settings

    try:
        settings = load_settings(CTX.config)
    except EtlError as exc:
        return f"PostgreSQL: unknown ({exc})"
    text = describe_settings(settings)
    if not settings.postgres.dsn.get_secret_value():
        text += " (this project's; ETL_EMBEDDED_DIR or postgres.embedded_dir moves it)"
    return text


def _version(value: bool) -> None:
    if value:
        typer.echo(_version_text())
        raise typer.Exit()


@app.callback()
def _global(
    config: str | None = typer.Option(
        None,
        "--config",
        help="Settings file (default ./etl.toml, else ./configs/etl.toml; or ETL_SETTINGS).",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and every library's log."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug lines of etl too."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug | info | warning | error (default info)."
    ),
    log_file: str | None = typer.Option(
        None, "--log-file", help="Also append the log lines to this file."
    ),
    log_format: str = typer.Option(
        "text", "--log-format", help="text | json (one JSON object per line, for log shippers)."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the versions of etl, its schema, Python, psycopg and libpq, and exit.",
    ),
):
    """Global options: also accepted after the subcommand (etl status -v)."""
    from etl import logs

    if log_level is not None and log_level.lower() not in logs.LEVELS:
        refuse(f"--log-level {log_level}: expected one of {', '.join(logs.LEVELS)}")
    if log_format not in logs.FORMATS:
        refuse(f"--log-format {log_format}: expected one of {', '.join(logs.FORMATS)}")
    if quiet and (verbose or debug):
        refuse("--quiet with -v or --debug: choose one")
    if log_file:
        try:
            open(log_file, "a", encoding="utf-8").close()
        except OSError as exc:
            raise EtlError(
                f"cannot write the log file {log_file}: {exc.strerror or exc}",
                hint="choose another --log-file",
            ) from None
    CTX.config, CTX.debug, CTX.verbose, CTX.quiet = config, debug, verbose, quiet
    logs.setup(
        level=log_level,
        quiet=quiet,
        verbose=verbose,
        debug=debug,
        log_file=log_file,
        log_format=log_format,
    )
