"""The `etl` command line: a thin layer. Each command parses its options, builds Settings
(options.settings_from), calls one library object and prints its result (output); every
EtlError ends in main as one line on stderr and its exit status (2 for operator errors).

One module per command family; this table registers them, in the order the help lists them."""

from __future__ import annotations

from etl.cli import fallback, local, migrate, preflight, reconcile, schema, status, sync
from etl.cli.app import app
from etl.cli.main import hoist_global_options, main

app.command("preflight")(preflight.preflight_cmd)
app.command("apply-schema")(schema.apply_schema_cmd)
app.command("discover")(schema.discover_cmd)
app.command("schema-status")(schema.schema_status_cmd)
app.command("grants")(schema.grants_cmd)
app.command("rollback")(schema.rollback_cmd)
app.command("migrate")(migrate.migrate_cmd)
app.command("worker")(migrate.worker_cmd)

app.add_typer(sync.sync_app, name="sync")
sync.sync_app.callback(invoke_without_command=True)(sync.sync_cmd)
sync.sync_app.command("mark")(sync.sync_mark_cmd)
sync.sync_app.command("renew")(sync.sync_renew_cmd)
app.command("cutover")(sync.cutover_cmd)

app.add_typer(fallback.fallback_app, name="fallback")
fallback.fallback_app.callback(invoke_without_command=True)(fallback.fallback_cmd)
fallback.fallback_app.command("arm")(fallback.fallback_arm_cmd)
fallback.fallback_app.command("retire")(fallback.fallback_retire_cmd)

app.command("reconcile")(reconcile.reconcile_cmd)
app.command("status")(status.status_cmd)
app.command("purge-rejects")(status.purge_rejects_cmd)
app.command("pg-url")(local.pg_url_cmd)
app.command("pg-stop")(local.pg_stop_cmd)
app.command("init")(local.init_cmd)

__all__ = ["app", "hoist_global_options", "main"]
