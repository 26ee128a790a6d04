"""The `etl` command line: a thin layer. Each command builds Settings, calls one library
function and prints its result. Every EtlError ends here as one line on stderr and its exit
status (2 for operator errors); a traceback only with --debug."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from etl.errors import EtlError, Interrupted
from etl.settings import Settings, load_settings
from etl.signals import GracefulStop
from etl.units import LEASE_SECONDS


def _no_bool_placeholder() -> None:
    """typer's help shows `<bool>` after every flag, as if it took a value: show nothing."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_bool_placeholder()

if TYPE_CHECKING:
    from etl.migrate import Migration
    from etl.parallel import ParallelMigration

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Migrate ATSPro documents from ArangoDB into PostgreSQL, and prove nothing was lost.",
)


class _Ctx:
    config: str | None = None
    debug: bool = False
    verbose: bool = False
    quiet: bool = False
    role: str | None = None  # the PostgreSQL user, for the `etl grants --role` of a message


CTX = _Ctx()
log = logging.getLogger("etl")

# Options of `etl` itself, also accepted after the subcommand (`etl status -v`): main() moves
# them in front. The second set takes a value.
GLOBAL_FLAGS = ("--debug", "--verbose", "-v", "--quiet", "-q")
GLOBAL_VALUED = ("--config", "--log-level", "--log-file", "--log-format")


def hoist_global_options(argv: list[str]) -> list[str]:
    """argv with etl's global options moved before the subcommand, wherever they were given
    (up to a `--`): operators type them where they think of them."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in GLOBAL_FLAGS:
            front.append(a)
        elif a in GLOBAL_VALUED and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        elif a.split("=", 1)[0] in GLOBAL_VALUED and "=" in a:
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


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
        _refuse(f"--log-level {log_level}: expected one of {', '.join(logs.LEVELS)}")
    if log_format not in logs.FORMATS:
        _refuse(f"--log-format {log_format}: expected one of {', '.join(logs.FORMATS)}")
    if quiet and (verbose or debug):
        _refuse("--quiet with -v or --debug: choose one")
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


def _allow_truncated_option():
    return typer.Option(
        False,
        "--allow-truncated",
        help="A dump or JSONL file cut in the middle of a record: drop the incomplete tail"
        " (a warning) instead of stopping.",
    )


def _settings(**overrides) -> Settings:
    return load_settings(CTX.config, overrides=overrides)


def _notice(line: str) -> None:
    from etl.logs import notice

    notice(line)


def _check_selection(all_: bool, collections: list[str] | None) -> None:
    if all_ and collections:
        _refuse(
            "--all and --collection exclude each other",
            hint="--all for every mapped collection, or --collection NAME for some",
        )


def _show_values(show: bool) -> None:
    """--show-values: reject reasons may quote field values. An environment variable, so that
    worker processes see it too."""
    if show:
        os.environ["ETL_SHOW_VALUES"] = "1"
    else:
        os.environ.pop("ETL_SHOW_VALUES", None)


def _describe_source(settings: Settings, source: str) -> str:
    if source == "arangodb":
        return f"ArangoDB {settings.arango.url}, database {settings.arango.database}"
    kind, sep, path = source.partition(":")
    return f"{kind} {path}" if sep else source


def _header(settings: Settings | None, source: str | None = None) -> None:
    """The first line of every command: which PostgreSQL server and database it works on, and
    which source (never a password). A log record: --quiet drops it, --log-format json keeps it."""
    from etl.pg import describe_settings, role_of

    CTX.role = role_of(settings) if settings is not None else None
    parts = [describe_settings(settings)] if settings is not None else []
    if source is not None and settings is not None:
        parts.append("source " + _describe_source(settings, source))
    log.info("; ".join(parts))


def _refuse(message: str, hint: str | None = None) -> None:
    """A bad combination of options: exit 2 before any server is started."""
    raise EtlError(message, hint=hint)


def _print_json(doc) -> None:
    """The machine-readable result: one JSON document on stdout, nothing else there."""
    import json

    typer.echo(json.dumps(doc, indent=2, default=str, ensure_ascii=False))


def _announce_reports(settings: Settings, existed: bool, paths) -> None:
    """The first report in a new reports directory: say on stderr where reports go."""
    if not existed and paths:
        _notice(
            f"etl: reports go to {Path(settings.migrate.reports_dir).resolve()} (a new directory; "
            "--reports-dir, ETL_REPORTS_DIR or migrate.reports_dir change it)"
        )


def _echo_paths(paths, err: bool = False) -> None:
    """The reports a run wrote, one line (the last line names the main one again); on stderr
    when stdout carries the --json result."""
    if paths:
        line = "reports written: " + ", ".join(str(p) for p in paths.values())
        (_notice if err else typer.echo)(line)


def _report_tail(job) -> str:
    """'; report PATH' for a run's last line, or why there is none."""
    if job.report_paths:  # scripts read "report X.md and Y.json" from it
        return f"; report {job.report_paths['md']} and {job.report_paths['json']}"
    if job.report_error:
        return "; NO REPORT (see the error below)"
    return ""


def _raise_report_error(job) -> None:
    """A report that could not be written is an error (exit 2), once the summary and verdict
    are printed and the run is saved in etl_runs."""
    if job.report_error:
        raise EtlError(
            job.report_error,
            hint="the run itself is saved (etl status); make the directory writable or choose"
            " another --reports-dir (etl preflight checks it)",
        )


def _dsn(settings: Settings) -> str:
    from etl.pg import resolve_dsn

    return resolve_dsn(settings)


WIDTH = 100  # status and the other tables fit a terminal of this many columns


def _cell(v) -> str:
    from datetime import UTC, datetime

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


def _echo_table(rows: list[dict], width: int = WIDTH, keep: tuple[str, ...] = ()) -> None:
    """rows as a table that fits `width` columns; the columns in `keep` are never cut (a
    row's error: the operator must read all of it)."""
    if not rows:
        typer.echo("(none)")
        return
    keys = list(rows[0].keys())
    cells = [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    floors = [w if k in keep else max(4, len(k)) for k, w in zip(keys, widths)]
    widths = fit_widths(widths, width, floors)
    typer.echo("  ".join(_clip(k, w).ljust(w) for k, w in zip(keys, widths)).rstrip())
    typer.echo("  ".join("-" * w for w in widths))
    for c in cells:
        typer.echo("  ".join(_clip(v, w).ljust(w) for v, w in zip(c, widths)).rstrip())


# -- preflight -------------------------------------------------------------------------------
@app.command("preflight")
def preflight_cmd(
    source: str = typer.Option("arangodb", "--source", help="arangodb | dump:PATH | jsonl:PATH"),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(
        None, "--mapping", help="Mapping file (default configs/atspro.toml)."
    ),
    reports_dir: str | None = typer.Option(
        None, "--reports-dir", help="Where the report goes (default reports/)."
    ),
    allow_truncated: bool = _allow_truncated_option(),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as one JSON document on stdout (nothing else)."
    ),
):
    """Go/no-go before a night's run: PostgreSQL version, extensions, schema, privileges, pooler,
    server settings, the source and its collections, the estimated size and duration. Changes
    nothing. Exit 0 = ready, 1 = warnings, 2 = blocked.

    Example: etl preflight --source arangodb
    """
    from etl.preflight import Preflight
    from etl.preflight_report import render_table, summary_line, write_reports

    settings = _settings(
        postgres={"dsn": dsn},
        migrate={
            "mapping": mapping,
            "reports_dir": reports_dir,
            "allow_truncated": allow_truncated or None,
        },
    )
    _header(settings, source)
    result = Preflight(settings, source).run()  # the shipped sql files (ETL_SQL_DIR overrides)
    doc = result.asdict()
    if as_json:
        _print_json(doc)
    else:
        typer.echo(render_table(doc))
    line = summary_line(doc)
    try:
        paths = write_reports(doc, settings.migrate.reports_dir)
        line += f"; report {paths['md']}, {paths['json']} and {paths['html']}"
    except OSError as exc:
        _notice(f"warning: could not write the preflight report: {exc}")
    (_notice if as_json else typer.echo)(line)
    raise typer.Exit(result.exit_code)


# -- schema ----------------------------------------------------------------------------------
@app.command("apply-schema")
def apply_schema_cmd(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List pending files (with -v their SQL); change nothing."
    ),
    target: str | None = typer.Option(None, "--target", help="Stop after this version, e.g. 005."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="Record versions up to this one as applied without running them."
    ),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Record the current checksum of files edited after they were applied.",
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(
        None,
        "--mapping",
        help="The mapping whose generic tables to create after the sql files (generated"
        " migrations), e.g. what etl discover wrote; default migrate.mapping (the ATSPro one).",
    ),
):
    """Apply sql/NNN_*.sql in order, recorded in migration_history; with --mapping, then the
    mapping's generic tables.

    Example: etl apply-schema --dry-run -v
    """
    from etl.mapping import load_mapping
    from etl.resources import sql_dir
    from etl.schema import apply_schema

    # the generic tables of --mapping, else of the configured mapping (the shipped ATSPro one
    # has task_results); a bad mapping stops before anything is applied
    settings = _settings(postgres={"dsn": dsn}, migrate={"mapping": mapping})
    _header(settings)
    loaded = load_mapping(settings.migrate.mapping) if target is None else None
    result = apply_schema(
        _dsn(settings),
        sql_dir(),
        target=target,
        dry_run=dry_run,
        baseline=baseline,
        repair=repair,
        verbose=CTX.verbose,
    )
    d = result.asdict()
    labels = {
        "applied": "applied",
        "baselined": "recorded as applied (baseline)",
        "repaired": "checksum repaired",
        "skipped": "already applied",
        "pending": "pending",
    }
    if dry_run:
        labels["baselined"] = "would be recorded as applied (baseline)"
        labels["pending"] = "would apply"
    for key, label in labels.items():
        if d.get(key):
            typer.echo(f"{label}: {', '.join(d[key])}")
    for name, ms in d.get("durations_ms", {}).items():
        typer.echo(f"  {name}: {ms} ms")
    for name, text in d.get("sql", {}).items():
        typer.echo(f"\n-- {name}\n{text}")
    if not any(d.get(k) for k in ("applied", "baselined", "repaired", "pending")):
        typer.echo("schema is up to date; nothing to apply")
    if loaded is not None and loaded.generic_targets() and (not dry_run or not d.get("pending")):
        _apply_mapping(settings, loaded, dry_run)


def _apply_mapping(settings: Settings, mapping, dry_run: bool) -> None:
    from etl.generic.apply import apply_mapping

    targets = mapping.generic_targets()
    result = apply_mapping(_dsn(settings), targets, mapping.path, dry_run=dry_run)
    verb = "would " if dry_run else ""
    for label, tables in (
        (f"{verb}create", result.created),
        (f"{verb}add columns or indexes to", result.altered),
        (f"{verb}recreate (empty)", result.recreated),
        ("unchanged", result.unchanged),
    ):
        if tables:
            typer.echo(f"generic tables {label}: {', '.join(tables)}")
    if CTX.verbose:
        for version, stmts in result.sql.items():
            typer.echo(f"\n-- {version}\n" + ";\n".join(stmts) + ";")


@app.command("discover")
def discover_cmd(
    source: str = typer.Option("arangodb", "--source", help="arangodb | dump:PATH | jsonl:PATH"),
    out: Path = typer.Option(..., "--out", help="The mapping file to write."),
    sample: int = typer.Option(
        10_000, "--sample", min=1, help="Documents sampled per collection (reservoir)."
    ),
    schema: str = typer.Option("arango", "--schema", help="PostgreSQL schema of the tables."),
    include_system: bool = typer.Option(
        False, "--include-system", help="Also map system collections (names starting with _)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
):
    """Write a mapping for any ArangoDB database: one generic JSONB table per collection, with
    typed columns and indexes chosen from its indexes and a sample, commented for review.

    Example: etl discover --source dump:/backups/shop --out shop.toml
    """
    from etl.generic.discover import discover, open_source
    from etl.generic.names import IDENT_RE
    from etl.generic.render import render
    from etl.mapping import load_mapping

    if not IDENT_RE.match(schema):
        raise EtlError(f"--schema {schema!r}: not a plain lower-case identifier (a-z, 0-9, _)")
    if out.exists() and not force:
        raise EtlError(f"{out} exists; not overwritten", hint="choose another --out, or --force")
    settings = _settings()
    log.info("source %s", _describe_source(settings, source))
    src = open_source(source, settings)
    try:
        found = discover(
            src, sample=sample, schema=schema, include_system=include_system, seed=seed
        )
    finally:
        src.close()
    text = render(found)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EtlError(f"cannot write {out}: {exc.strerror or exc}") from None
    load_mapping(out)  # what was written must load: a bug here is not the operator's
    n_typed = sum(1 for c in found.collections for a in c.attributes.values() if a.typed)
    typer.echo(
        f"wrote {out}: {len(found.collections)} collections, {n_typed} typed columns, "
        f"{sum(len([i for i in c.indexes if i.translated]) for c in found.collections)}"
        " indexes translated; review it, then `etl apply-schema --mapping "
        f"{out}`"
    )


@app.command("schema-status")
def schema_status_cmd(dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN.")):
    """Show check_migration_status() and verify_schema_integrity() as tables."""
    from etl.schema import schema_status

    settings = _settings(postgres={"dsn": dsn})
    _header(settings)
    status = schema_status(_dsn(settings)).asdict()
    typer.echo("Migrations")
    _echo_table(status["migrations"])
    typer.echo("\nIntegrity checks")
    _echo_table(status["integrity"])
    bad = [r for r in status["integrity"] if r.get("status") != "ok"]
    if not bad:
        typer.echo(f"\nall {len(status['integrity'])} integrity checks ok")
    if bad:
        typer.echo(f"\n{len(bad)} integrity check(s) not ok")
        raise typer.Exit(1)


@app.command("grants")
def grants_cmd(
    role: str = typer.Option(..., "--role", help="The loader role (it must exist)."),
    apply: bool = typer.Option(False, "--apply", help="Run the statements (as the owner)."),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (the schema owner's)."),
):
    """Print the GRANT statements a loader role needs to migrate, reconcile and see status,
    read from the applied schema (or run them with --apply).

    Example: etl grants --role etl_loader | psql "$OWNER_DSN"
    """
    from etl import pg
    from etl.grants import apply_grants, grant_statements

    settings = _settings(postgres={"dsn": dsn})
    _header(settings)
    with pg.connect(_dsn(settings)) as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
        if exists is None:
            raise EtlError(
                f"role {role!r} does not exist",
                hint=f"create it first: CREATE ROLE {role} LOGIN PASSWORD '...'",
            )
        statements = apply_grants(conn, role) if apply else grant_statements(conn, role)
    for stmt in statements:
        typer.echo(stmt)
    if apply:
        _notice(f"applied {len(statements)} statements for role {role}")


@app.command("rollback")
def rollback_cmd(
    component: str = typer.Option("all", "--component", help="validation | helpers | tables | all"),
    yes: bool = typer.Option(False, "--yes", help="Confirm: this drops objects and data."),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN."),
):
    """Run the rollback functions of sql/007 (tables and all DROP DATA); all also drops the
    generic tables etl created (apply-schema --mapping) and their schema when etl made it."""
    if component not in ("validation", "helpers", "tables", "all"):
        raise typer.BadParameter(
            "expected validation, helpers, tables or all", param_hint="--component"
        )
    if not yes:
        raise EtlError(
            f"rollback --component {component} drops database objects", hint="add --yes to confirm"
        )
    from etl.schema import rollback

    settings = _settings(postgres={"dsn": dsn})
    _header(settings)
    result = rollback(_dsn(settings), component).asdict()
    typer.echo(f"rolled back: {component}")
    for action in result["actions"]:
        typer.echo(f"  {action}")


# -- migrate ---------------------------------------------------------------------------------
@app.command("migrate")
def migrate_cmd(
    collection: list[str] | None = typer.Option(
        None, "--collection", "-c", help="Collection to migrate (repeatable)."
    ),
    all_: bool = typer.Option(False, "--all", help="Every mapped collection, in dependency order."),
    source: str = typer.Option("arangodb", "--source", help="arangodb | dump:PATH | jsonl:PATH"),
    batch: int | None = typer.Option(
        None, "--batch", min=1, help="Documents per batch (default from settings: 5000)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the last interrupted or failed run."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Load inside a transaction that is rolled back; write the dry-run report.",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="At most N documents per collection (trials)."
    ),
    since_key: str | None = typer.Option(
        None, "--since-key", help="Start after this _key (trials)."
    ),
    from_tick: int | None = typer.Option(
        None,
        "--from-tick",
        min=1,
        help="The WAL tick this copy starts at, for `etl sync` (a dump source; default: the "
        "latest `etl sync mark`).",
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(
        None, "--mapping", help="Mapping file (default: the ATSPro mapping shipped with etl)."
    ),
    reports_dir: str | None = typer.Option(
        None, "--reports-dir", help="Where reports go (default reports/)."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Worker processes: collections and key ranges in parallel (other machines join with `etl worker --run ID`).",
    ),
    lease_seconds: float = typer.Option(
        LEASE_SECONDS,
        "--lease-seconds",
        min=1,
        help="With --workers: a dead worker's unit is taken over after this long.",
    ),
    allow_missing: bool = typer.Option(
        False,
        "--allow-missing",
        help="Go on when the source lacks mapped collections (the wrong dump stops otherwise).",
    ),
    allow_truncated: bool = _allow_truncated_option(),
    max_rejects: str = typer.Option(
        "0",
        "--max-rejects",
        metavar="N|N%",
        help="Exit 1 only when this run's new rejects (documents no earlier run rejected)"
        " exceed N, or N% of the documents read.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the summary as one JSON document on stdout (nothing else)."
    ),
    show_values: bool = typer.Option(
        False,
        "--show-values",
        help="Quote field values in reject reasons (they may be personal data; default: not).",
    ),
):
    """Extract, transform and load collections in batches; resumable and idempotent.

    Example: etl migrate --collection resumes --batch 5000
    """
    from etl.migrate import Migration
    from etl.progress import Progress

    _check_selection(all_, collection)
    _show_values(show_values)
    # --batch reaches the run one way only (Migration's batch_size): on --resume it replaces
    # the interrupted run's batch size, which a settings value must not
    from etl.rejects import RejectLimit
    from etl.report import render_table

    limit_rejects = RejectLimit.parse(max_rejects)
    settings = _settings(
        postgres={"dsn": dsn},
        migrate={
            "mapping": mapping,
            "reports_dir": reports_dir,
            "allow_truncated": allow_truncated or None,
        },
    )
    _header(settings, "the interrupted run's" if resume and source == "arangodb" else source)
    reports_existed = Path(settings.migrate.reports_dir).exists()
    stopper = GracefulStop()
    progress = Progress()
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
    if workers > 1:
        from etl.parallel import ParallelMigration

        job: Migration | ParallelMigration = ParallelMigration(migration, workers, lease_seconds)
    else:
        job = migration
    exit_code, verdict = 0, ""
    try:
        with stopper:
            summary = job.run()
        over, verdict = limit_rejects.judge(settings, summary)
        exit_code = 1 if over else 0
    finally:
        progress.close()
        if job.summary is not None and job.summary.collections:
            if as_json:
                _print_json(job.summary.asdict())
            else:
                typer.echo(render_table(job.summary.asdict()))
            _echo_paths(job.report_paths, err=as_json)
            (_notice if as_json else typer.echo)(
                f"run {job.summary.run_id}: {job.summary.state}"
                + (f"; {verdict}" if verdict else "")
                + _report_tail(job)
            )
    _announce_reports(settings, reports_existed, job.report_paths)
    _raise_report_error(job)
    raise typer.Exit(exit_code)


@app.command("worker")
def worker_cmd(
    run: str = typer.Option(
        ..., "--run", help="The parallel migrate run to work on (etl status lists runs)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on this machine."),
    lease_seconds: float = typer.Option(
        LEASE_SECONDS,
        "--lease-seconds",
        min=1,
        help="A dead worker's unit is taken over after this long.",
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (the run's database)."),
    reports_dir: str | None = typer.Option(
        None, "--reports-dir", help="Where the report goes if this machine finishes the run."
    ),
):
    """Join a parallel migrate run started by `etl migrate --workers N`, on this or another machine:
    claim its work units until none is left. Exit 0 when the run is complete.

    Example: etl worker --run migrate-20261124-0300-ab12cd --workers 2
    """
    from etl import parallel

    settings = _settings(postgres={"dsn": dsn}, migrate={"reports_dir": reports_dir})
    _header(settings, f"of run {run}")
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


# -- change capture ---------------------------------------------------------------------------
sync_app = typer.Typer(
    help="Follow ArangoDB's write-ahead log after the bulk copy (zero-downtime migration)."
)
app.add_typer(sync_app, name="sync")


@sync_app.callback(invoke_without_command=True)
def sync_cmd(
    ctx: typer.Context,
    until_current: bool = typer.Option(
        False,
        "--until-current",
        help="Apply everything up to the server's tick at start, then exit 0 (scripts, tests).",
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port."
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(
        None, "--mapping", help="Mapping file (the one the copy was made with)."
    ),
    reports_dir: str | None = typer.Option(
        None, "--reports-dir", help="Where reports go (default reports/)."
    ),
):
    """Apply every change committed in ArangoDB since the copy started, then keep following
    until Ctrl-C or SIGTERM (exit 130; `etl sync` goes on from there).

    Example: etl sync --metrics-port 9108
    """
    if ctx.invoked_subcommand is not None:
        return
    from etl.sync.run import SyncJob

    settings = _settings(
        postgres={"dsn": dsn}, migrate={"mapping": mapping, "reports_dir": reports_dir}
    )
    _header(settings, "arangodb")
    stopper = GracefulStop()
    job = SyncJob(settings, metrics_port=metrics_port, should_stop=stopper.requested)
    try:
        with stopper:
            doc = job.execute(until_current=until_current)
    finally:
        _echo_sync(job)
    raise typer.Exit(0 if doc["state"] == "finished" else 1)


def _echo_sync(job) -> None:
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


@sync_app.command("mark")
def sync_mark_cmd(
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
):
    """Record ArangoDB's WAL position now and pin it, BEFORE arangodump: `etl migrate --source
    dump:...` links to it and `etl sync` follows from it. The pin lasts 2 h (renew it with
    `etl sync renew` for a longer dump).

    Example: etl sync mark && arangodump ... && etl migrate --all --source dump:./dump
    """
    from etl import pg
    from etl.sources.arango import ArangoSource
    from etl.state import new_run_id
    from etl.sync import positions
    from etl.sync.start import mark

    settings = _settings(postgres={"dsn": dsn})
    _header(settings, "arangodb")
    target = pg.resolve_dsn(settings)
    with pg.connect(target) as conn:
        from etl.state import require_schema

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


@sync_app.command("renew")
def sync_renew_cmd(
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
):
    """Renew the latest mark's WAL registration for another 2 h (while a long dump runs)."""
    from etl import pg
    from etl.errors import PermanentError
    from etl.sources.arango import ArangoSource
    from etl.sources.wal import WalReader
    from etl.sync import positions

    settings = _settings(postgres={"dsn": dsn})
    _header(settings, "arangodb")
    with pg.connect(pg.resolve_dsn(settings)) as conn:
        positions.require_tables(conn)
        p = positions.latest(conn, "mark")
    if p is None or p.syncer_id is None:
        raise PermanentError("no mark to renew", hint="run `etl sync mark` first")
    with ArangoSource(settings.arango) as source:
        WalReader(source).pin(p.start_tick, p.syncer_id)
    typer.echo(f"renewed mark {p.run_id} at tick {p.start_tick} for 2 h")


@app.command("cutover")
def cutover_cmd(
    assume_frozen: bool = typer.Option(
        False, "--assume-frozen", help="Do not ask: writes to ArangoDB are already frozen."
    ),
    sample: float | None = typer.Option(
        None,
        "--sample",
        min=0.01,
        max=100,
        help="Also reconcile a random P% of the keys inside the freeze (default: none; every "
        "changed key is verified anyway).",
    ),
    full: bool = typer.Option(
        False, "--full", help="Also run a full reconcile inside the freeze (grows with the data)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes of the reconcile inside the freeze."
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping file."),
    reports_dir: str | None = typer.Option(
        None, "--reports-dir", help="Where reports go (default reports/)."
    ),
    to: str = typer.Option(
        "postgresql", "--to", help="postgresql (the migration) or arangodb (the way back)."
    ),
):
    """Switch over: catch up, ask for the write freeze, apply the last changes, verify every key
    changed since the copy against ArangoDB, and say go (exit 0) or no-go (exit 1: the report
    names the keys and fields). The report gives the final tick and the freeze's length.

    Example: etl cutover
    """
    from etl.sync.cutover import Cutover

    settings = _settings(
        postgres={"dsn": dsn}, migrate={"mapping": mapping, "reports_dir": reports_dir}
    )
    _header(settings, "arangodb")
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
        settings,
        confirm_freeze=confirm,
        sample=sample,
        full=full,
        workers=workers,
        say=typer.echo,
    )
    try:
        with stopper:
            cut.job.should_stop = stopper.requested
            doc = cut.run()
    finally:
        _echo_sync(cut.job)
    verified = sum((doc.get("keys_verified_in_freeze") or {}).values())
    typer.echo(
        f"cutover: {doc['verdict'].upper()}; final tick {doc.get('final_tick')}, writes frozen "
        f"for {doc.get('freeze_seconds')} s; {verified} changed keys verified in the freeze"
        + (f"; reconcile: {doc['reconcile_result']}" if doc.get("reconcile_result") else "")
    )
    for reason in doc.get("no_go_reasons") or []:
        typer.echo(f"  no-go: {reason}")
    raise typer.Exit(0 if cut.go else 1)


# -- the way back: etl fallback (docs/sync.md, "Rollback after the switch") -----------------------
fallback_app = typer.Typer(
    help="Replay PostgreSQL's writes to ArangoDB after the cutover (the way back)."
)
app.add_typer(fallback_app, name="fallback")
_ON_CONFLICT = typer.Option(
    "report",
    "--on-conflict",
    help="A document changed in ArangoDB after the cutover: report (default) or overwrite.",
)


@fallback_app.callback(invoke_without_command=True)
def fallback_cmd(
    ctx: typer.Context,
    until_current: bool = typer.Option(
        False, "--until-current", help="Apply everything committed up to now, then exit."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port."
    ),
    on_conflict: str = _ON_CONFLICT,
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Changes per batch."),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping file of the copy."),
    reports_dir: str | None = typer.Option(None, "--reports-dir", help="Where reports go."),
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
    settings = _settings(
        postgres={"dsn": dsn}, migrate={"mapping": mapping, "reports_dir": reports_dir}
    )
    _header(settings, "arangodb")  # the target of the way back
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


@fallback_app.command("arm")
def fallback_arm_cmd(
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping file of the copy."),
    capture: str = typer.Option(
        "auto",
        "--capture",
        help="auto (logical decoding where the server allows it, else triggers), trigger or logical.",
    ),
):
    """Capture every later write to the migrated tables (etl cutover does this on go), so that
    `etl fallback` can replay it to ArangoDB.

    Example: etl fallback arm --capture auto
    """
    from etl.fallback.capture import CAPTURES
    from etl.fallback.commands import arm

    if capture not in CAPTURES:
        from etl.errors import ConfigError

        raise ConfigError(f"--capture {capture}: one of {', '.join(CAPTURES)}")
    settings = _settings(postgres={"dsn": dsn}, migrate={"mapping": mapping})
    _header(settings)
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


@fallback_app.command("retire")
def fallback_retire_cmd(
    force: bool = typer.Option(False, "--force", help="Also when changes are left unapplied."),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
):
    """Remove the capture (triggers, or the replication slot) and the captured changes: no way
    back after this.

    Example: etl fallback retire
    """
    from etl.fallback.commands import retire

    settings = _settings(postgres={"dsn": dsn})
    _header(settings)
    done = retire(settings, force=force)
    typer.echo("fallback retired" + (": " + "; ".join(done) if done else " (nothing was armed)"))


# -- reconcile -------------------------------------------------------------------------------
@app.command("reconcile")
def reconcile_cmd(
    collection: list[str] | None = typer.Option(
        None, "--collection", "-c", help="Collection to check (repeatable)."
    ),
    all_: bool = typer.Option(False, "--all", help="Every collection, in dependency order."),
    source: str = typer.Option("arangodb", "--source", help="arangodb | dump:PATH | jsonl:PATH"),
    sample: float | None = typer.Option(
        None,
        "--sample",
        min=0.01,
        max=100,
        help="Check only a random P% of the keys (a fast pre-check).",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the --sample choice (default random; the report names it)."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Processes that digest key ranges of a collection in parallel (ArangoDB source).",
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN (overrides ETL_PG_DSN)."),
    mapping: str | None = typer.Option(
        None, "--mapping", help="Mapping file (default: the ATSPro mapping shipped with etl)."
    ),
    reports_dir: str | None = typer.Option(
        None, "--reports-dir", help="Where reports go (default reports/)."
    ),
    allow_missing: bool = typer.Option(
        False,
        "--allow-missing",
        help="Go on when the source lacks mapped collections (reported as not checked).",
    ),
    while_running: bool = typer.Option(
        False,
        "--while-running",
        help="Compare even while an etl migrate of the same collections runs.",
    ),
    allow_truncated: bool = _allow_truncated_option(),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as one JSON document on stdout (nothing else)."
    ),
):
    """Compare source and target: counts, content digests per key range, every missing, extra and
    differing key with the fields that differ. Exit 0 = everything matches, 1 = differences.

    Example: etl reconcile --all --source dump:./atspro-dump --sample 10
    """
    from etl.errors import Interrupted
    from etl.progress import Progress
    from etl.reconcile import Reconciliation, render_table

    _check_selection(all_, collection)
    settings = _settings(
        postgres={"dsn": dsn},
        migrate={
            "mapping": mapping,
            "reports_dir": reports_dir,
            "allow_truncated": allow_truncated or None,
        },
    )
    _header(settings, source)
    reports_existed = Path(settings.migrate.reports_dir).exists()
    progress = Progress()
    current: dict[str, Any] = {"name": None, "done": 0}

    def on_progress(name: str, done: int, total: int | None) -> None:
        # a new collection, or a second pass over the same one: a new bar counting from 0
        if name != current["name"] or done < current["done"]:
            progress.start(name, total, first=0)
        current["name"], current["done"] = name, done
        progress.update(name, done, total)

    rec = Reconciliation(
        settings,
        collections=collection,
        all_=all_,
        source=source,
        sample=sample,
        seed=seed,
        on_progress=on_progress,
        workers=workers,
        allow_missing=allow_missing,
        while_running=while_running,
    )
    exit_code = 0
    try:
        summary = rec.run()
        exit_code = 1 if summary.has_differences else 0
    except KeyboardInterrupt:
        raise Interrupted("reconcile stopped; it changed nothing (run it again)") from None
    finally:
        progress.close()
        final = rec.summary
        if final is not None and (final.collections or final.state == "finished"):
            doc = final.asdict()
            if as_json:
                _print_json(doc)
            else:
                typer.echo(render_table(doc))
            _echo_paths(rec.report_paths, err=as_json)
            (_notice if as_json else typer.echo)(
                f"run {final.run_id}: {doc['verdict']}" + _report_tail(rec)
            )
    _announce_reports(settings, reports_existed, rec.report_paths)
    _raise_report_error(rec)
    raise typer.Exit(exit_code)


# -- status and housekeeping -------------------------------------------------------------------
@app.command("status")
def status_cmd(
    limit: int = typer.Option(10, "--limit", min=1, help="How many recent runs."),
    run: str | None = typer.Option(
        None, "--run", help="One run: its state, checkpoints and work units."
    ),
    watch: bool = typer.Option(
        False, "--watch", help="Show it again every --every seconds until Ctrl-C (or --run ends)."
    ),
    every: float = typer.Option(5.0, "--every", min=0.1, help="Seconds between --watch updates."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the status as one JSON document on stdout (nothing else)."
    ),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN."),
):
    """Recent runs with their state, checkpoints, and the latest reconcile per collection; the
    embedded server's place when etl uses it. Tables fit 100 columns.

    Example: etl status --run migrate-20261124T030000Z-ab12cd --watch
    """

    from etl.status import status

    if run is not None:
        _check_run_id(run)
    settings = _settings(postgres={"dsn": dsn})
    _header(settings)
    dsn_ = _dsn(settings)
    try:
        _status_loop(settings, dsn_, limit, run, watch, every, as_json, status)
    except KeyboardInterrupt:  # --watch ends with Ctrl-C: nothing was running to stop
        if not watch:
            raise


def _status_loop(settings, dsn_, limit, run, watch, every, as_json, status) -> None:
    import time

    while True:
        info = status(dsn_, limit=limit, run=run)
        if run is not None and not info["runs"]:
            raise EtlError(f"no run {run!r} in this database", hint="etl status lists the runs")
        if not settings.postgres.dsn.get_secret_value():
            info["embedded_dir"] = str(Path(settings.postgres.embedded_dir).expanduser())
        if as_json:
            _print_json(info)
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
    _echo_table([_run_view(r) for r in info["runs"]], keep=("run_id", "state", "error"))
    typer.echo(f"\nCheckpoints of {'the run' if run else 'the latest migrate run'}")
    _echo_table([_short_keys(r) for r in info["checkpoints"]])
    if info["work_units"]:
        typer.echo(f"\nWork units of {'the run' if run else 'the latest migrate run'} (--workers)")
        _echo_table(info["work_units"])
    typer.echo("\nLatest reconcile per collection")
    _echo_table(info["reconciles"])
    if info.get("rejects"):
        typer.echo("\nRejects now in etl_rejects (live: a key read again loses its old ones)")
        _echo_table(info["rejects"])
    if info.get("sync"):
        typer.echo("\nChange capture (etl sync)")
        _echo_table([{k: v for k, v in r.items() if k != "updated_at"} for r in info["sync"]])
        if info.get("sync_applied"):
            _echo_table(info["sync_applied"])
        if info.get("sync_verified"):
            typer.echo("\nChanged keys verified against ArangoDB (etl sync, etl cutover)")
            _echo_table(info["sync_verified"])
    if info.get("fallback"):
        typer.echo("\nThe way back (etl fallback): change table and lag")
        _echo_table(info["fallback"])
        if info.get("fallback_applied"):
            _echo_table(info["fallback_applied"])


def _run_view(row: dict) -> dict:
    """A run as the status table shows it in 100 columns: the run id names the command, its
    length replaces the finish time; --json has every column."""
    from datetime import datetime

    out: dict = {}
    for key, value in row.items():
        if key in ("command", "finished_at", "heartbeat_at"):
            continue
        if key == "started_at":
            out["started"] = _cell(value)[5:] if isinstance(value, datetime) else value
            end = row.get("finished_at") or row.get("heartbeat_at")
            took = (end - value).total_seconds() if isinstance(end, datetime) and value else None
            out["took"] = _duration(took) if took is not None else ""
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


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# run ids are <command>-<UTC time>-<6 hex> (etl/state.py new_run_id); checked before connecting
_RUN_ID = r"[a-z][a-z-]*-\d{8}T\d{6}Z-[0-9a-f]{6}"


def _check_run_id(run: str) -> None:
    import re

    if not re.fullmatch(_RUN_ID, run):
        _refuse(
            f"{run!r} is not a run id (they look like migrate-20261124T030000Z-ab12cd)",
            hint="etl status lists the runs",
        )


@app.command("purge-rejects")
def purge_rejects_cmd(
    run: str = typer.Option(..., "--run", help="Run id whose rejected documents to delete."),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN."),
):
    """Delete the rejected source documents a run kept in etl_rejects (they hold source data)."""
    from etl import pg, state

    _check_run_id(run)
    settings = _settings(postgres={"dsn": dsn})
    _header(settings)
    with pg.connect(_dsn(settings)) as conn:
        state.require_schema(conn)
        if conn.execute("select 1 from etl_runs where run_id = %s", (run,)).fetchone() is None:
            raise EtlError(f"no run {run!r} in this database", hint="etl status lists the runs")
        n = state.purge_rejects(conn, run)
    typer.echo(f"deleted {n} rejected document(s) of run {run}")


@app.command("pg-url")
def pg_url_cmd():
    """Print the DSN of the PostgreSQL etl uses (starting the embedded one if needed), for psql."""
    from etl.pg import resolve_dsn

    settings = _settings()
    _header(settings)
    dsn = resolve_dsn(settings, announce=False)
    if settings.postgres.dsn.get_secret_value():
        from etl.settings import safe_dsn

        dsn = safe_dsn(dsn)
    typer.echo(dsn)
    _notice(f"connect with: psql '{dsn}'")


@app.command("pg-stop")
def pg_stop_cmd():
    """Stop the embedded PostgreSQL server (its data stays in postgres.embedded_dir)."""
    from etl.pg import stop_embedded

    settings = _settings()
    _header(settings)
    typer.echo(stop_embedded(settings.postgres.embedded_dir))


@app.command("init")
def init_cmd(
    directory: str = typer.Argument(".", help="Where to write etl.toml (default: here)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing etl.toml."),
):
    """Write etl.toml, a commented settings template: every key at its default, with its
    environment variable, for an operator to fill in. etl reads ./etl.toml where it runs.

    Example: etl init ~/atspro-night
    """
    from etl.resources import settings_template

    target = Path(directory) / "etl.toml"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EtlError(f"cannot create the directory {directory}: {exc.strerror or exc}") from None
    try:
        fd = os.open(target, flags, 0o600)  # it may come to hold a password: owner only
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(settings_template())
    except FileExistsError:
        raise EtlError(f"{target} already exists", hint="etl init --force overwrites it") from None
    except OSError as exc:
        raise EtlError(f"cannot write {target}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {target}: every setting, commented out at its default")
    if Path(directory).resolve() != Path.cwd():
        typer.echo(f"etl reads it when run in {directory} (elsewhere: --config {target})")


def _privilege_error(exc: BaseException) -> str | None:
    """A privilege the role lacks, met where no check came first: the object and the command
    that grants it (PostgreSQL's message names the object, not the privilege)."""
    import re

    import psycopg

    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return None
    text = str(exc).splitlines()[0] if str(exc) else "permission denied"
    m = re.search(r"permission denied for (\w+) (\S+)", text)
    what = f"a privilege on {m.group(1)} {m.group(2)}" if m else "a privilege"
    role = CTX.role or "ROLE"
    return (
        f"role {role} lacks {what} ({text}): the schema owner runs "
        f"`etl grants --role {role} --apply` (etl preflight lists what is missing)"
    )


def _say_error(line: str) -> None:
    """The last line: plain text, or with --log-format json a record like every other line."""
    from etl import logs

    if logs.json_format():
        log.error(line)
    else:
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Typer/click handle usage errors (exit 2) and normal exits; every EtlError
    becomes one line on stderr with its exit status; anything else is a bug, shown in one line
    (traceback with --debug) with exit status 3."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="etl")
    except Interrupted as exc:
        _say_error(f"etl: interrupted: {exc}")
        sys.exit(exc.exit_code)
    except EtlError as exc:
        if CTX.debug:
            import traceback

            traceback.print_exc()
        _say_error(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(
            "etl: aborted (the batch in flight was rolled back; etl migrate --resume continues)",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception as exc:
        if CTX.debug:
            raise
        missing = _privilege_error(exc)
        if missing:
            _say_error(f"error: {missing}")
            sys.exit(2)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(3)
