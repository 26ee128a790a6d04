"""This machine: `etl pg-url`, `etl pg-stop` (the embedded server) and `etl init` (a settings
template)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from etl.cli.options import settings_from
from etl.cli.output import header, notice
from etl.errors import EtlError


def pg_url_cmd():
    """Print the DSN of the PostgreSQL etl uses (starting the embedded one if needed), for psql."""
    from etl.pg import resolve_dsn
    from etl.settings import safe_dsn

    settings = settings_from()
    header(settings)
    dsn = resolve_dsn(settings, announce=False)
    if settings.postgres.dsn.get_secret_value():
        dsn = safe_dsn(dsn)
    typer.echo(dsn)
    notice(f"connect with: psql '{dsn}'")


def pg_stop_cmd():
    """Stop the embedded PostgreSQL server (its data stays in postgres.embedded_dir)."""
    from etl.pg import stop_embedded

    settings = settings_from()
    header(settings)
    typer.echo(stop_embedded(settings.postgres.embedded_dir))


def init_cmd(
    directory: Annotated[
        str, typer.Argument(help="Where to write etl.toml (default: here).")
    ] = ".",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing etl.toml.")] = False,
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
