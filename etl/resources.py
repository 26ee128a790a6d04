"""The files etl ships inside its package, read with importlib.resources: the schema migrations
(etl/sql/NNN_*.sql), the default mapping (etl/configs/atspro.toml) and the commented settings
template (etl/configs/etl.toml) that `etl init` writes. In the repository, etl/sql and etl/configs
are links to the top-level sql/ and configs/, so a checkout, an editable install and a wheel read
the same bytes (migration_history records each file's sha256).
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path

from etl.errors import ConfigError

_MIGRATION = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


def _shipped(*parts: str) -> Path:
    # pip, pipx and the editable install all put the package on the file system; a zip import
    # would give no Path, and the sql files are read through a Path everywhere else.
    return Path(str(files("etl").joinpath(*parts)))


def sql_dir() -> Path:
    """The schema migrations: ETL_SQL_DIR when set, else the ones shipped with etl."""
    override = os.environ.get("ETL_SQL_DIR")
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise ConfigError(f"environment variable ETL_SQL_DIR: {path} is not a directory")
        return path
    return _shipped("sql")


def default_mapping() -> Path:
    """The ATSPro mapping shipped with etl (migrate.mapping, ETL_MAPPING, --mapping override it)."""
    return _shipped("configs", "atspro.toml")


def settings_template() -> str:
    """The commented settings template `etl init` writes (generated from etl.settings.Settings)."""
    return files("etl").joinpath("configs", "etl.toml").read_text(encoding="utf-8")


def schema_version(d: Path | None = None) -> str | None:
    """The newest migration version this etl applies (e.g. "007"), or None without sql files."""
    d = d if d is not None else _shipped("sql")
    try:
        versions = [m.group(1) for p in d.iterdir() if (m := _MIGRATION.match(p.name))]
    except OSError:
        return None
    return max(versions) if versions else None
