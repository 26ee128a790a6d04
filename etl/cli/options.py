"""What every command shares before it runs: the invocation's global state (CTX), the options
several commands declare (typer `Annotated` aliases, declared once here), the one way to build
Settings from them, and the option checks made before any server starts."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, NoReturn

import typer

from etl.errors import EtlError
from etl.settings import Settings, load_settings


class _Ctx:
    config: str | None = None
    debug: bool = False
    verbose: bool = False
    quiet: bool = False
    role: str | None = None  # the PostgreSQL user, for the `etl grants --role` of a message


CTX = _Ctx()

# -- shared options: the help text an operator reads is part of the contract; a command whose
# text differs declares its own variant beside the others here
_DSN = "PostgreSQL DSN (overrides ETL_PG_DSN)."
Dsn = Annotated[str | None, typer.Option("--dsn", help=_DSN)]
DsnPlain = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL DSN.")]
Mapping = Annotated[
    str | None,
    typer.Option("--mapping", help="Mapping file (default: the ATSPro mapping shipped with etl)."),
]
MappingOfCopy = Annotated[str | None, typer.Option("--mapping", help="Mapping file of the copy.")]
ReportsDir = Annotated[
    str | None, typer.Option("--reports-dir", help="Where reports go (default reports/).")
]
Source = Annotated[str, typer.Option("--source", help="arangodb | dump:PATH | jsonl:PATH")]
AllowTruncated = Annotated[
    bool,
    typer.Option(
        "--allow-truncated",
        help="A dump or JSONL file cut in the middle of a record: drop the incomplete tail"
        " (a warning) instead of stopping.",
    ),
]
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print the result as one JSON document on stdout (nothing else)."),
]
MetricsPort = Annotated[
    int | None,
    typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port."),
]


def settings_from(
    dsn: str | None = None,
    mapping: str | None = None,
    reports_dir: str | None = None,
    allow_truncated: bool = False,
) -> Settings:
    """Settings from the settings file and environment, with the common options over them
    (an option not given leaves the setting as it is)."""
    overrides: dict[str, dict[str, Any]] = {
        "postgres": {"dsn": dsn},
        "migrate": {
            "mapping": mapping,
            "reports_dir": reports_dir,
            "allow_truncated": allow_truncated or None,
        },
    }
    return load_settings(CTX.config, overrides=overrides)


def refuse(message: str, hint: str | None = None) -> NoReturn:
    """A bad combination of options: exit 2 before any server is started."""
    raise EtlError(message, hint=hint)


def check_selection(all_: bool, collections: list[str] | None) -> None:
    if all_ and collections:
        refuse(
            "--all and --collection exclude each other",
            hint="--all for every mapped collection, or --collection NAME for some",
        )


def set_show_values(show: bool) -> None:
    """--show-values: reject reasons may quote field values. An environment variable, so that
    worker processes see it too."""
    if show:
        os.environ["ETL_SHOW_VALUES"] = "1"
    else:
        os.environ.pop("ETL_SHOW_VALUES", None)


# run ids are <command>-<UTC time>-<6 hex> (etl/state.py new_run_id); checked before connecting
_RUN_ID = r"[a-z][a-z-]*-\d{8}T\d{6}Z-[0-9a-f]{6}"


def check_run_id(run: str) -> None:
    if not re.fullmatch(_RUN_ID, run):
        refuse(
            f"{run!r} is not a run id (they look like migrate-20261124T030000Z-ab12cd)",
            hint="etl status lists the runs",
        )
