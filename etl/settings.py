"""Settings: connections, batch size, policies.

Precedence, highest first: command-line flag > environment variable > settings file > default.
The settings file is `configs/etl.toml` (or the path in ETL_SETTINGS / --config). Every value is
validated before any work starts; an error names the file (or variable), the key and the problem.
Passwords are SecretStr: they print as '**********' everywhere, including repr() and reports.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from etl.errors import ConfigError

DEFAULT_SETTINGS_FILE = Path("configs/etl.toml")
DEFAULT_MAPPING_FILE = Path("configs/atspro.toml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArangoSettings(_Strict):
    url: str = "http://127.0.0.1:8529"
    database: str = "atspro"
    username: str = "root"
    password: SecretStr = SecretStr("")
    auth: Literal["basic", "jwt"] = "basic"
    verify_tls: bool = True
    ca_file: str = ""  # a CA bundle for https; empty = the system's
    request_timeout: float = Field(60.0, gt=0)
    retry_attempts: int = Field(6, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        problem = arango_name_problem(v)
        if problem:
            raise ValueError(f"not a valid ArangoDB database name: {problem}")
        return v


def arango_name_problem(name: str, max_bytes: int = 128) -> str | None:
    """Why `name` cannot be an ArangoDB database or collection name, or None. ArangoDB never
    allows these characters, and python-arango puts names into URL paths unescaped
    (/_db/<db>/_api/collection/<name>), where "/", "?", "#", "%" or ".." would address another
    database, collection or API."""
    if not name or name != name.strip() or name in (".", ".."):
        return "empty, '.', '..' or surrounded by spaces"
    if len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"longer than {max_bytes} bytes"
    bad = sorted({c for c in name if c in "/\\:?#%" or not c.isprintable()})
    if bad:
        return "contains " + ", ".join(repr(c) for c in bad)
    return None


class PostgresSettings(_Strict):
    # Empty dsn = the embedded server in embedded_dir. The DSN may hold a password: it is kept
    # as a secret and shown only through safe_dsn().
    dsn: SecretStr = SecretStr("")
    embedded_dir: str = ".etl/pgdata"
    retry_attempts: int = Field(6, ge=1, le=100)


class MigrateSettings(_Strict):
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    mapping: str = str(DEFAULT_MAPPING_FILE)
    reports_dir: str = "reports"
    # Drop the secondary indexes of EMPTY target tables for the load and build them once at the
    # end (etl/indexes.py). Turn off when the application is already reading the target tables.
    defer_indexes: bool = True


class Settings(_Strict):
    arango: ArangoSettings = ArangoSettings()
    postgres: PostgresSettings = PostgresSettings()
    migrate: MigrateSettings = MigrateSettings()
    source_file: str | None = None  # which settings file was read, for messages and reports


# Environment variable -> (section, key)
ENV_VARS: dict[str, tuple[str, str]] = {
    "ETL_ARANGO_URL": ("arango", "url"),
    "ETL_ARANGO_DB": ("arango", "database"),
    "ETL_ARANGO_USER": ("arango", "username"),
    "ETL_ARANGO_PASSWORD": ("arango", "password"),
    "ETL_ARANGO_AUTH": ("arango", "auth"),
    "ETL_ARANGO_VERIFY_TLS": ("arango", "verify_tls"),
    "ETL_ARANGO_CA_FILE": ("arango", "ca_file"),
    "ETL_ARANGO_TIMEOUT": ("arango", "request_timeout"),
    "ETL_PG_DSN": ("postgres", "dsn"),
    "ETL_EMBEDDED_DIR": ("postgres", "embedded_dir"),
    "ETL_BATCH_SIZE": ("migrate", "batch_size"),
    "ETL_MAPPING": ("migrate", "mapping"),
    "ETL_REPORTS_DIR": ("migrate", "reports_dir"),
    "ETL_DEFER_INDEXES": ("migrate", "defer_indexes"),
}


def load_settings(
    path: str | Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Build Settings from file, environment and flag overrides (`{"arango": {"url": ...}}`)."""
    env = os.environ if env is None else env
    explicit = path or env.get("ETL_SETTINGS")
    file = Path(explicit) if explicit else DEFAULT_SETTINGS_FILE
    data: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], str] = {}
    if file.exists():
        try:
            with file.open("rb") as fh:
                raw = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"settings file {file}: cannot be read: {exc}") from None
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise ConfigError(
                    f"settings file {file}: key '{section}': expected a [{section}] table"
                )
            data[section] = dict(values)
            for key in values:
                origin[(section, key)] = f"settings file {file}"
    elif explicit:
        raise ConfigError(f"settings file {file} does not exist (check --config or ETL_SETTINGS)")

    for var, (section, key) in ENV_VARS.items():
        if var in env and env[var] != "":
            data.setdefault(section, {})[key] = env[var]
            origin[(section, key)] = f"environment variable {var}"

    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                data.setdefault(section, {})[key] = value
                origin[(section, key)] = "command-line flag"

    try:
        return Settings(**data, source_file=str(file) if file.exists() else None)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        where = (
            origin.get(loc[:2], f"settings file {file}")
            if len(loc) >= 2
            else f"settings file {file}"
        )
        key = ".".join(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{where}: key '{key}': {msg}") from None


def safe_dsn(dsn: str) -> str:
    """A DSN fit for logs and reports: the password replaced by '***'."""
    if not dsn:
        return "embedded"
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable dsn>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)
