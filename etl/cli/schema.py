"""The target schema: `etl apply-schema`, `discover`, `schema-status`, `grants`, `rollback`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from etl.cli.options import CTX, Dsn, DsnPlain, Source, settings_from
from etl.cli.output import describe_source, echo_table, header, log, notice
from etl.errors import EtlError
from etl.settings import Settings

# the options of these commands alone (the shared ones are in etl/cli/options.py)
SchemaMapping = Annotated[
    str | None,
    typer.Option(
        "--mapping",
        help="The mapping whose generic tables to create after the sql files (generated"
        " migrations), e.g. what etl discover wrote; default migrate.mapping (the ATSPro one).",
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="List pending files (with -v their SQL); change nothing.")
]
Target = Annotated[str | None, typer.Option("--target", help="Stop after this version, e.g. 005.")]
Baseline = Annotated[
    str | None,
    typer.Option(
        "--baseline", help="Record versions up to this one as applied without running them."
    ),
]
Repair = Annotated[
    bool,
    typer.Option(
        "--repair", help="Record the current checksum of files edited after they were applied."
    ),
]
DiscoverSample = Annotated[
    int, typer.Option("--sample", min=1, help="Documents sampled per collection (reservoir).")
]
PgSchema = Annotated[str, typer.Option("--schema", help="PostgreSQL schema of the tables.")]
IncludeSystem = Annotated[
    bool,
    typer.Option("--include-system", help="Also map system collections (names starting with _)."),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the sample.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")]
Role = Annotated[str, typer.Option("--role", help="The loader role (it must exist).")]
Apply = Annotated[bool, typer.Option("--apply", help="Run the statements (as the owner).")]
OwnerDsn = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL DSN (the schema owner's).")]
Component = Annotated[str, typer.Option("--component", help="validation | helpers | tables | all")]
Yes = Annotated[bool, typer.Option("--yes", help="Confirm: this drops objects and data.")]


def apply_schema_cmd(
    dry_run: DryRun = False,
    target: Target = None,
    baseline: Baseline = None,
    repair: Repair = False,
    dsn: Dsn = None,
    mapping: SchemaMapping = None,
):
    """Apply sql/NNN_*.sql in order, recorded in migration_history; with --mapping, then the
    mapping's generic tables.

    Example: etl apply-schema --dry-run -v
    """
    from etl.mapping import load_mapping
    from etl.pg import resolve_dsn
    from etl.resources import sql_dir
    from etl.schema import apply_schema

    # the generic tables of --mapping, else of the configured mapping (the shipped ATSPro one
    # has task_results); a bad mapping stops before anything is applied
    settings = settings_from(dsn, mapping)
    header(settings)
    loaded = load_mapping(settings.migrate.mapping) if target is None else None
    result = apply_schema(
        resolve_dsn(settings),
        sql_dir(),
        target=target,
        dry_run=dry_run,
        baseline=baseline,
        repair=repair,
        verbose=CTX.verbose,
    )
    d = result.asdict()
    _echo_applied(d, dry_run)
    if loaded is not None and loaded.generic_targets() and (not dry_run or not d.get("pending")):
        _apply_mapping(settings, loaded, dry_run)


def _echo_applied(d: dict, dry_run: bool) -> None:
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


def _apply_mapping(settings: Settings, mapping: Any, dry_run: bool) -> None:
    from etl.generic.apply import apply_mapping
    from etl.pg import resolve_dsn

    targets = mapping.generic_targets()
    result = apply_mapping(resolve_dsn(settings), targets, mapping.path, dry_run=dry_run)
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


def discover_cmd(
    source: Source = "arangodb",
    out: Path = typer.Option(..., "--out", help="The mapping file to write."),  # required
    sample: DiscoverSample = 10_000,
    schema: PgSchema = "arango",
    include_system: IncludeSystem = False,
    seed: Seed = 0,
    force: Force = False,
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
    settings = settings_from()
    log.info("source %s", describe_source(settings, source))
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


def schema_status_cmd(dsn: DsnPlain = None):
    """Show check_migration_status() and verify_schema_integrity() as tables."""
    from etl.pg import resolve_dsn
    from etl.schema import schema_status

    settings = settings_from(dsn)
    header(settings)
    status = schema_status(resolve_dsn(settings)).asdict()
    typer.echo("Migrations")
    echo_table(status["migrations"])
    typer.echo("\nIntegrity checks")
    echo_table(status["integrity"])
    bad = [r for r in status["integrity"] if r.get("status") != "ok"]
    if not bad:
        typer.echo(f"\nall {len(status['integrity'])} integrity checks ok")
    if bad:
        typer.echo(f"\n{len(bad)} integrity check(s) not ok")
        raise typer.Exit(1)


def grants_cmd(role: Role, apply: Apply = False, dsn: OwnerDsn = None):
    """Print the GRANT statements a loader role needs to migrate, reconcile and see status,
    read from the applied schema (or run them with --apply).

    Example: etl grants --role etl_loader | psql "$OWNER_DSN"
    """
    from etl import pg
    from etl.grants import apply_grants, grant_statements

    settings = settings_from(dsn)
    header(settings)
    with pg.connect(pg.resolve_dsn(settings)) as conn:
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
        notice(f"applied {len(statements)} statements for role {role}")


def rollback_cmd(component: Component = "all", yes: Yes = False, dsn: DsnPlain = None):
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
    from etl.pg import resolve_dsn
    from etl.schema import rollback

    settings = settings_from(dsn)
    header(settings)
    result = rollback(resolve_dsn(settings), component).asdict()
    typer.echo(f"rolled back: {component}")
    for action in result["actions"]:
        typer.echo(f"  {action}")
