"""apply-schema: run sql/NNN_*.sql in version order, each file in one transaction with its
migration_history row (checksums, baseline, repair, an advisory lock against concurrent runs);
also schema status and rollback.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import logging
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from etl.errors import PermanentError, TransientError, is_transient_sqlstate
from etl.pg import connect, one, scalar

log = logging.getLogger(__name__)

# Arbitrary but fixed: every etl process must agree on it. (ASCII "etlschem".)
ADVISORY_LOCK_KEY = 0x65746C736368656D & 0x7FFFFFFFFFFFFFFF

GENERATED_PREFIX = "generic:"  # migration_history versions of generated migrations

_FILE_RE = re.compile(r"^(\d{3})_([A-Za-z0-9_]+)\.sql$")

COMPONENTS = {
    "validation": "rollback.drop_validation_objects()",
    "helpers": "rollback.drop_helper_functions()",
    "tables": "rollback.drop_document_tables()",
    "all": "rollback.rollback_all_migrations()",
}

_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS migration_history (
    version         text PRIMARY KEY,
    name            text NOT NULL,
    checksum        text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    applied_by      text NOT NULL DEFAULT current_user,
    duration_ms     integer,
    success         boolean NOT NULL DEFAULT true,
    execution_notes text
)
"""


@dataclass(frozen=True)
class SchemaFile:
    """One sql/NNN_name.sql file: its version, name, checksum and text."""

    version: str
    name: str
    path: Path
    checksum: str
    sql: str = field(repr=False)

    @property
    def filename(self) -> str:
        return self.path.name

    def asdict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "file": self.filename,
            "checksum": self.checksum,
        }


@dataclass(frozen=True)
class ApplyResult:
    applied: tuple[str, ...] = ()  # file names run now (or that would run, with dry_run)
    skipped: tuple[str, ...] = ()  # already applied and unchanged
    pending: tuple[str, ...] = ()  # not applied after this call (beyond target, or dry_run)
    baselined: tuple[str, ...] = ()
    repaired: tuple[str, ...] = ()
    dry_run: bool = False
    durations_ms: dict[str, int] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)  # dry_run + verbose: file -> its SQL

    def asdict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class SchemaStatus:
    migrations: tuple[dict[str, Any], ...]
    integrity: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.integrity) and bool(self.integrity)

    def asdict(self) -> dict[str, Any]:
        return {
            "migrations": list(self.migrations),
            "integrity": list(self.integrity),
            "ok": self.ok,
        }


@dataclass(frozen=True)
class RollbackResult:
    component: str
    actions: tuple[str, ...]

    def asdict(self) -> dict[str, Any]:
        return {"component": self.component, "actions": list(self.actions)}


# ---------------------------------------------------------------------------------------------
# files


def load_migrations(sql_dir: str | Path) -> list[SchemaFile]:
    """Every sql/NNN_name.sql, ordered by version. Two files with one version are an error."""
    d = Path(sql_dir)
    if not d.is_dir():
        raise PermanentError(
            f"schema directory {d} does not exist", hint="pass the repository's sql/ directory"
        )
    out: dict[str, SchemaFile] = {}
    for p in sorted(d.iterdir()):
        m = _FILE_RE.match(p.name)
        if not m:
            continue
        data = p.read_bytes()
        if m.group(1) in out:
            raise PermanentError(
                f"two migration files with version {m.group(1)}: "
                f"{out[m.group(1)].filename} and {p.name}"
            )
        out[m.group(1)] = SchemaFile(
            m.group(1), m.group(2), p, hashlib.sha256(data).hexdigest(), data.decode("utf-8")
        )
    return [out[k] for k in sorted(out)]


def split_statements(sql: str) -> list[tuple[int, str]]:
    """Split SQL text into top-level statements: [(line number of its first token, text)].

    Understands '...' (with '' and E'\\'' escapes), "...", $tag$...$tag$, -- and nested /* */
    comments, so semicolons inside function bodies and DO blocks do not split.
    """
    out: list[tuple[int, str]] = []
    i, n, start = 0, len(sql), 0
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "'":
            escaped = (
                i > 0
                and sql[i - 1] in "eE"
                and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            )
            i += 1
            while i < n:
                if escaped and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if sql.startswith("''", i):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif c == '"':
            j = sql.find('"', i + 1)
            i = n if j < 0 else j + 1
        elif c == "$":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = m.group(0)
                j = sql.find(tag, i + len(tag))
                i = n if j < 0 else j + len(tag)
            else:
                i += 1
        elif c == ";":
            _emit(out, sql, start, i + 1)
            i += 1
            start = i
        else:
            i += 1
    _emit(out, sql, start, n)
    return out


def _emit(out: list[tuple[int, str]], sql: str, start: int, end: int) -> None:
    text = sql[start:end]
    # Skip leading whitespace and comments to find where the statement really starts.
    body = _strip_leading_comments(text)
    if not body or body == ";":
        return
    offset = start + (len(text) - len(body))
    out.append((sql.count("\n", 0, offset) + 1, body))


def _strip_leading_comments(text: str) -> str:
    while True:
        t = text.lstrip()
        if t.startswith("--"):
            j = t.find("\n")
            text = "" if j < 0 else t[j + 1 :]
        elif t.startswith("/*"):
            j = t.find("*/")
            text = "" if j < 0 else t[j + 2 :]
        else:
            return t


# ---------------------------------------------------------------------------------------------
# read-only views


def _history_exists(conn: psycopg.Connection) -> bool:
    return scalar(conn, "SELECT to_regclass('migration_history') IS NOT NULL")


def _read_history(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    if not _history_exists(conn):
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT version, name, checksum, applied_at, applied_by, duration_ms, success, "
            "execution_notes FROM migration_history ORDER BY version"
        )
        return {r["version"]: r for r in cur.fetchall() if r["success"]}


def applied(dsn: str) -> list[dict[str, Any]]:
    """The migration_history rows (successful ones), oldest version first. Read-only."""
    with connect(dsn, autocommit=True) as conn:
        return list(_read_history(conn).values())


def pending(dsn: str, sql_dir: str | Path) -> list[SchemaFile]:
    """Files not yet recorded in migration_history. Read-only."""
    migrations = load_migrations(sql_dir)
    with connect(dsn, autocommit=True) as conn:
        done = _read_history(conn)
    return [m for m in migrations if m.version not in done]


# ---------------------------------------------------------------------------------------------
# apply


def apply_schema(
    dsn: str,
    sql_dir: str | Path,
    *,
    target: str | None = None,
    dry_run: bool = False,
    baseline: str | None = None,
    repair: bool = False,
    verbose: bool = False,
    lock_timeout_s: float = 60.0,
) -> ApplyResult:
    migrations = load_migrations(sql_dir)
    target = _version_arg(target, "target", migrations)
    baseline = _version_arg(baseline, "baseline", migrations)
    if target is not None and baseline is not None and baseline > target:
        raise PermanentError(f"--baseline {baseline} is beyond --target {target}")
    wanted = [m for m in migrations if target is None or m.version <= target]

    if dry_run:
        with connect(dsn, autocommit=True) as conn:
            done = _read_history(conn)
            changed = _check_checksums(wanted, done, repair=repair, dry_run=True)
            todo = [m for m in wanted if m.version not in done]
            check_extensions(conn, _to_run(todo, baseline))
        return ApplyResult(
            applied=(),
            skipped=tuple(m.filename for m in wanted if m.version in done),
            pending=tuple(m.filename for m in todo),
            baselined=tuple(
                m.filename for m in todo if baseline is not None and m.version <= baseline
            ),
            repaired=tuple(m.filename for m in changed),
            dry_run=True,
            sql={m.filename: m.sql for m in todo} if verbose else {},
        )

    with _schema_lock(dsn, lock_timeout_s), connect(dsn, autocommit=True) as conn:
        who = f"{_os_user()} as {scalar(conn, 'SELECT current_user')}"
        conn.execute(_HISTORY_DDL)
        done = _read_history(conn)
        repaired = _check_checksums(wanted, done, repair=repair, dry_run=False)
        for m in repaired:
            old = done[m.version]["checksum"]
            conn.execute(
                "UPDATE migration_history SET checksum = %s, execution_notes = concat_ws(E'\\n', "
                "execution_notes, %s::text) WHERE version = %s",
                (
                    m.checksum,
                    f"repair {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by {who}: "
                    f"checksum {old} -> {m.checksum}",
                    m.version,
                ),
            )
            log.info("repaired checksum of %s", m.filename)
        baselined: list[str] = []
        if baseline is not None:
            for m in wanted:
                if m.version <= baseline and m.version not in done:
                    conn.execute(
                        "INSERT INTO migration_history (version, name, checksum, applied_by, duration_ms, "
                        "success, execution_notes) VALUES (%s, %s, %s, %s, 0, true, %s)",
                        (
                            m.version,
                            m.name,
                            m.checksum,
                            who,
                            f"baseline: recorded as applied without running (--baseline {baseline})",
                        ),
                    )
                    baselined.append(m.filename)
                    done[m.version] = {"checksum": m.checksum}
        check_extensions(conn, [m for m in wanted if m.version not in done])
        ran: list[str] = []
        durations: dict[str, int] = {}
        skipped = [m.filename for m in wanted if m.version in done and m.filename not in baselined]
        for m in wanted:
            if m.version in done:
                continue
            durations[m.filename] = _apply_one(conn, m, who, lock_timeout_s, verbose)
            ran.append(m.filename)
    left = [m.filename for m in migrations if m.version not in done and m.filename not in ran]
    return ApplyResult(
        applied=tuple(ran),
        skipped=tuple(skipped),
        pending=tuple(left),
        baselined=tuple(baselined),
        repaired=tuple(m.filename for m in repaired),
        durations_ms=durations,
    )


_CREATE_EXTENSION = re.compile(
    r'^\s*CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([\w-]+)"?', re.IGNORECASE
)


def _to_run(todo: list[SchemaFile], baseline: str | None) -> list[SchemaFile]:
    return [m for m in todo if baseline is None or m.version > baseline]


def required_extensions(files: list[SchemaFile]) -> dict[str, str]:
    """extension -> the first file whose top-level CREATE EXTENSION needs it (an extension
    created inside a DO block with its own fallback is optional and not listed)."""
    out: dict[str, str] = {}
    for f in files:
        for _line, stmt in split_statements(f.sql):
            m = _CREATE_EXTENSION.match(_strip_leading_comments(stmt))
            if m:
                out.setdefault(m.group(1), f.filename)
    return out


@dataclass(frozen=True)
class ExtensionState:
    """One extension the schema files create, as this role on this database sees it."""

    name: str
    file: str  # the first file that creates it
    installed: bool
    problem: str | None  # why this role cannot create it; None: installed, or it can

    @property
    def creatable(self) -> bool:
        return not self.installed and self.problem is None


def extension_states(conn: psycopg.Connection, files: list[SchemaFile]) -> list[ExtensionState]:
    """For every extension the files create: installed, creatable by this role (superuser, or
    a trusted extension and CREATE on the database), or why not. Read-only."""
    needed = required_extensions(files)
    if not needed:
        return []
    rows = conn.execute(
        "SELECT a.name, e.extname IS NOT NULL,"
        " coalesce((SELECT bool_or(v.trusted) FROM pg_available_extension_versions v"
        "           WHERE v.name = a.name), false)"
        " FROM unnest(%s::text[]) AS a(name) LEFT JOIN pg_extension e ON e.extname = a.name"
        " WHERE a.name IN (SELECT name FROM pg_available_extensions) OR e.extname IS NOT NULL",
        (list(needed),),
    ).fetchall()
    role, db, superuser, can_create = one(
        conn,
        "SELECT current_user, current_database(), (SELECT rolsuper FROM pg_roles"
        " WHERE rolname = current_user), has_database_privilege(current_database(), 'CREATE')",
    )
    known = {name: (installed, trusted) for name, installed, trusted in rows}
    out = []
    for ext, filename in needed.items():
        problem = None
        installed = ext in known and known[ext][0]
        if ext not in known:
            problem = f'extension "{ext}" ({filename}) is not available on this server'
        elif not installed and not superuser:
            if not known[ext][1]:
                problem = (
                    f'extension "{ext}" ({filename}) is available but only a superuser can'
                    " create it"
                )
            elif not can_create:
                problem = (
                    f'extension "{ext}" ({filename}) needs CREATE on database {db},'
                    f" which {role} lacks"
                )
        out.append(ExtensionState(ext, filename, installed, problem))
    return out


def extensions_hint(names: list[str], db: str) -> str:
    """Whom to ask for extensions this role cannot create."""
    statements = ", ".join(f"CREATE EXTENSION {n}" for n in names)
    return (
        f"ask your provider or DBA to run {statements} in database {db} (managed services:"
        " enable them in the parameter/extension settings), then run apply-schema again"
    )


def check_extensions(conn: psycopg.Connection, files: list[SchemaFile]) -> None:
    """Before any file runs: every extension the files create exists, or this role can create
    it. Otherwise one line naming each missing extension and whom to ask (nothing applied)."""
    problems = [s for s in extension_states(conn, files) if s.problem]
    if problems:
        db = scalar(conn, "SELECT current_database()")
        raise PermanentError(
            f"PostgreSQL {'; '.join(s.problem or '' for s in problems)}; nothing was applied",
            hint=extensions_hint([s.name for s in problems], db),
        )


def _os_user() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _version_arg(value: str | None, flag: str, migrations: list[SchemaFile]) -> str | None:
    if value is None:
        return None
    v = str(value).strip()
    if v.isdigit():
        v = v.zfill(3)
    known = {m.version for m in migrations}
    if v not in known:
        raise PermanentError(
            f"--{flag} {value}: no migration with that version",
            hint="known: " + ", ".join(sorted(known)),
        )
    return v


def _check_checksums(
    wanted: list[SchemaFile], done: dict[str, dict[str, Any]], *, repair: bool, dry_run: bool
) -> list[SchemaFile]:
    changed = [m for m in wanted if m.version in done and done[m.version]["checksum"] != m.checksum]
    if changed and not repair:
        parts = [
            f"{m.filename} was applied with checksum {done[m.version]['checksum']} but the file now has "
            f"{m.checksum}"
            for m in changed
        ]
        raise PermanentError(
            "refusing to continue: " + "; ".join(parts),
            hint="applied migrations are never re-run; review the change, then run "
            "`etl apply-schema --repair` to record the new checksum",
        )
    return changed


def schema_lock(dsn: str, timeout_s: float = 60.0):
    """The lock apply-schema holds (for the generated migrations of etl.generic.apply)."""
    return _schema_lock(dsn, timeout_s)


def os_user() -> str:
    return _os_user()


@contextmanager
def _schema_lock(dsn: str, timeout_s: float):
    """Serialise apply-schema runs: a transaction-level advisory lock held, for the whole run,
    by a connection whose transaction stays open (so it also holds through PgBouncer in
    transaction pooling). The second run waits up to timeout_s, then fails naming the holder."""
    conn = connect(dsn, application_name="etl-apply-schema-lock")
    try:
        conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        conn.execute(f"SET LOCAL lock_timeout = '{int(max(timeout_s, 0) * 1000)}ms'")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            raise _lock_held(conn, timeout_s) from None
        yield
    finally:
        conn.close()  # ends the transaction, and the lock with it


def _lock_held(conn: psycopg.Connection, timeout_s: float) -> TransientError:
    holder = conn.execute(
        "SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objid = (%s::bigint & 4294967295)::oid AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
        (ADVISORY_LOCK_KEY,),
    ).fetchone()
    who = (
        f"pid {holder[0]} ({holder[1] or 'no application name'}, from {holder[2] or 'local socket'}, "
        f"since {holder[3]:%Y-%m-%d %H:%M:%S})"
        if holder
        else "another session"
    )
    return TransientError(
        f"another apply-schema is running on this database ({who}); waited {timeout_s:g}s for its lock",
        hint="wait for it to finish and run apply-schema again",
    )


def _apply_one(
    conn: psycopg.Connection, m: SchemaFile, who: str, lock_timeout_s: float, verbose: bool
) -> int:
    statements = split_statements(m.sql)
    t0 = time.monotonic()
    current: tuple[int, int, str] | None = None
    try:
        with conn.transaction():
            # Waiting for a lock held by the live application must not hang the deploy forever.
            conn.execute(f"SET LOCAL lock_timeout = '{int(max(lock_timeout_s, 0) * 1000)}ms'")
            for no, (line, stmt) in enumerate(statements, 1):
                current = (no, line, stmt)
                if verbose:
                    log.info("%s statement %d (line %d)", m.filename, no, line)
                conn.execute(stmt, prepare=False)
            current = None
            ms = int((time.monotonic() - t0) * 1000)
            conn.execute(
                "INSERT INTO migration_history (version, name, checksum, applied_by, duration_ms, success, "
                "execution_notes) VALUES (%s, %s, %s, %s, %s, true, %s) "
                "ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, "
                "applied_at = now(), applied_by = EXCLUDED.applied_by, duration_ms = EXCLUDED.duration_ms, "
                "success = true, execution_notes = EXCLUDED.execution_notes",
                (
                    m.version,
                    m.name,
                    m.checksum,
                    who,
                    ms,
                    f"{len(statements)} statements; server {conn.info.parameter_status('server_version')}",
                ),
            )
    except psycopg.Error as exc:
        raise _file_error(m, current, exc) from None
    log.info("applied %s in %d ms", m.filename, ms)
    return ms


def _file_error(
    m: SchemaFile, current: tuple[int, int, str] | None, exc: psycopg.Error
) -> Exception:
    diag = exc.diag
    primary = diag.message_primary or str(exc).strip().splitlines()[0]
    sqlstate = exc.sqlstate or "?"
    where = ""
    if current is not None:
        no, line, stmt = current
        if diag.statement_position:
            pos = int(diag.statement_position) - 1
            line += stmt.count("\n", 0, max(pos, 0))
        first = " ".join(stmt.split())
        first = first if len(first) <= 80 else first[:77] + "..."
        where = f" at statement {no} (line {line}: {first})"
    detail = ""
    if diag.context:
        detail += f"; context: {' / '.join(diag.context.strip().splitlines()[:2])}"
    if diag.message_detail:
        detail += f"; detail: {diag.message_detail}"
    ext = _missing_extension(primary, current[2] if current else "")
    state = f"{m.filename} was rolled back; the database stays at the previous version"
    if ext:
        return PermanentError(
            f'required PostgreSQL extension "{ext}" is not available on the server: {m.filename}{where}: '
            f"{primary}",
            hint=f"install it (e.g. the postgresql-contrib package) or ask the DBA; {state}",
        )
    cls = TransientError if is_transient_sqlstate(sqlstate) else PermanentError
    return cls(
        f"{m.filename}{where} failed: {primary} [SQLSTATE {sqlstate}]{detail}",
        hint=f"{state}; fix the file or the database and run apply-schema again",
    )


def _missing_extension(message: str, stmt: str) -> str | None:
    m = re.search(r'extension "([^"]+)"', message)
    low = message.lower()
    if m and ("not available" in low or "control file" in low or "not installed" in low):
        return m.group(1)
    if re.search(r"control file", low) and (
        s := re.search(r'CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([\w-]+)', stmt, re.I)
    ):
        return s.group(1)
    return None


# ---------------------------------------------------------------------------------------------
# does the database have the schema this etl ships?


def shipped_sql_dir() -> Path:
    """The sql/ directory this etl was installed with (ETL_SQL_DIR overrides it, as for the CLI)."""
    from etl.resources import sql_dir

    return sql_dir()


def check_schema_version(conn: psycopg.Connection, sql_dir: str | Path | None = None) -> None:
    """Refuse (PermanentError, one line) a database whose migration_history is not the schema
    this etl ships: a version this etl does not know (a newer etl applied it), a shipped version
    not applied yet (an older schema), or one applied from a different file (checksum). Without
    migration_history (a schema made by hand) or without the sql/ files there is nothing to
    compare, and nothing is refused. Read-only."""
    d = Path(sql_dir) if sql_dir is not None else shipped_sql_dir()
    if not d.is_dir():
        return
    if not _history_exists(conn):
        return
    # the generated migrations of generic tables (etl.generic.apply) are not sql/ files
    done = {v: r for v, r in _read_history(conn).items() if not v.startswith(GENERATED_PREFIX)}
    shipped = {m.version: m for m in load_migrations(d)}
    if not done or not shipped:
        return
    unknown = sorted(v for v in done if v not in shipped)
    if unknown:
        raise PermanentError(
            f"the database schema has migration {', '.join(unknown)}, newer than this etl knows "
            f"(up to {max(shipped)}): it was upgraded by a newer etl",
            hint="upgrade etl to the version that applied it",
        )
    missing = sorted(v for v in shipped if v not in done)
    if missing:
        raise PermanentError(
            f"the database schema is older than this etl: migration {', '.join(missing)} not applied",
            hint="run `etl apply-schema`",
        )
    changed = sorted(v for v in shipped if done[v]["checksum"] != shipped[v].checksum)
    if changed:
        m = shipped[changed[0]]
        raise PermanentError(
            f"the database schema is another version: {m.filename} was applied with checksum "
            f"{done[m.version]['checksum'][:12]}... but this etl ships {m.checksum[:12]}..."
            + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""),
            hint="run `etl apply-schema` (review the change, then --repair), or use the etl that applied it",
        )


# ---------------------------------------------------------------------------------------------
# status and rollback


def schema_status(dsn: str) -> SchemaStatus:
    """check_migration_status() and verify_schema_integrity() rows. Read-only."""
    with connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        has = cur.execute(
            "SELECT to_regprocedure('check_migration_status()') IS NOT NULL AS m, "
            "to_regprocedure('verify_schema_integrity()') IS NOT NULL AS v"
        ).fetchone()
        if not has or not has["m"] or not has["v"]:
            raise PermanentError(
                "schema status functions are missing (migration 007 not applied)",
                hint="run `etl apply-schema`",
            )
        migrations = cur.execute("SELECT * FROM check_migration_status()").fetchall()
        integrity = cur.execute("SELECT * FROM verify_schema_integrity()").fetchall()
    return SchemaStatus(tuple(migrations), tuple(integrity))


GENERIC_HELPERS = ("etl_jsonb_bigint(jsonb)", "etl_jsonb_timestamptz(jsonb)")


def _rollback_generic(conn: psycopg.Connection) -> list[str]:
    """The generated migrations (etl.generic.apply), newest objects first: each generic table
    recorded as generic:<schema>.<table> and its row; then, per schema, the typed columns'
    helper functions and the schema itself when etl created it (a generic:<schema> row) and
    nothing else is left in it. What is kept is said too."""
    if not _history_exists(conn):
        return []
    out: list[str] = []
    versions = [
        v
        for (v,) in conn.execute(
            "SELECT version FROM migration_history WHERE starts_with(version, %s) ORDER BY 1",
            (GENERATED_PREFIX,),
        )
    ]
    names = [v.removeprefix(GENERATED_PREFIX) for v in versions]
    tables = [n for n in names if "." in n]
    for t in tables:
        if scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (t,)):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(*t.split("."))))
            out.append(f"dropped table {t}")
        conn.execute("DELETE FROM migration_history WHERE version = %s", (GENERATED_PREFIX + t,))
        out.append(f"deleted migration_history {GENERATED_PREFIX}{t}")
    for schema in sorted({t.split(".")[0] for t in tables} | {n for n in names if "." not in n}):
        if scalar(conn, "SELECT to_regnamespace(%s) IS NULL", (schema,)):
            continue
        for fn in GENERIC_HELPERS:
            q = f"{schema}.{fn}"
            if scalar(conn, "SELECT to_regprocedure(%s) IS NULL", (q,)):
                continue
            drop = sql.SQL("DROP FUNCTION {}.{}").format(sql.Identifier(schema), sql.SQL(fn))
            if _drop_if_unused(conn, drop):
                out.append(f"dropped function {q}")
            else:
                out.append(f"kept function {q}: other objects depend on it")
        if schema not in names:
            continue  # the schema was there before etl: kept
        if _drop_if_unused(conn, sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema))):
            conn.execute(
                "DELETE FROM migration_history WHERE version = %s", (GENERATED_PREFIX + schema,)
            )
            out += [
                f"dropped schema {schema}",
                f"deleted migration_history {GENERATED_PREFIX}{schema}",
            ]
        else:
            out.append(f"kept schema {schema}: it holds objects etl did not create")
    return out


def _drop_if_unused(conn: psycopg.Connection, stmt: sql.Composed) -> bool:
    """Run a DROP without CASCADE in a savepoint; False when other objects still need it."""
    try:
        with conn.transaction():
            conn.execute(stmt)
        return True
    except psycopg.errors.DependentObjectsStillExist:
        return False


def rollback(dsn: str, component: str) -> RollbackResult:
    """Run one rollback function (validation|helpers|tables|all) in one transaction."""
    if component not in COMPONENTS:
        raise PermanentError(
            f"unknown rollback component {component!r}", hint="use one of: " + ", ".join(COMPONENTS)
        )
    fn = COMPONENTS[component]
    with connect(dsn) as conn:
        if scalar(conn, "SELECT to_regnamespace('rollback') IS NULL"):
            raise PermanentError(
                "the rollback functions are missing (migration 007 not applied)",
                hint="nothing to roll back, or run `etl apply-schema` first",
            )
        conn.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        try:
            rows = [(a,) for a in _rollback_generic(conn)] if component == "all" else []
            if component in ("helpers", "tables", "all") and scalar(
                conn,
                "SELECT to_regprocedure('rollback.rollback_search_tables(boolean)') IS NOT NULL",
            ):  # 014 before what drops 004's functions or the tables (and with them 005's
                # expression indexes: not rebuilt only to be dropped)
                rows += conn.execute(
                    "SELECT * FROM rollback.rollback_search_tables(restore_indexes => false)"
                ).fetchall()
            if component in ("validation", "tables", "all") and scalar(
                conn,
                "SELECT to_regprocedure('rollback.rollback_audit_update_by_column()') IS NOT NULL",
            ):  # 011 (006's audit function, cheaper) before what undoes 006
                rows += conn.execute(
                    "SELECT * FROM rollback.rollback_audit_update_by_column()"
                ).fetchall()
            if component == "all" and scalar(
                conn,
                "SELECT to_regprocedure('rollback.rollback_merge_update_first()') IS NOT NULL",
            ):  # 013 (007's merge core, updates first) before anything older
                rows += conn.execute(
                    "SELECT * FROM rollback.rollback_merge_update_first()"
                ).fetchall()
            if component == "all" and scalar(
                conn, "SELECT to_regprocedure('rollback.rollback_fallback()') IS NOT NULL"
            ):  # 010 and 012 (etl fallback's capture) before 009 and 008
                rows += conn.execute("SELECT * FROM rollback.rollback_fallback()").fetchall()
            if component == "all" and scalar(
                conn, "SELECT to_regprocedure('rollback.rollback_sync_verification()') IS NOT NULL"
            ):  # 009 before 008: newest to oldest
                rows += conn.execute(
                    "SELECT * FROM rollback.rollback_sync_verification()"
                ).fetchall()
            if component == "all" and scalar(
                conn, "SELECT to_regprocedure('rollback.rollback_change_capture()') IS NOT NULL"
            ):  # 008 first: newest to oldest
                rows += conn.execute("SELECT * FROM rollback.rollback_change_capture()").fetchall()
            rows += conn.execute(f"SELECT * FROM {fn}").fetchall()
        except psycopg.Error as exc:
            raise PermanentError(
                f"{fn} failed: {exc.diag.message_primary or exc} [SQLSTATE {exc.sqlstate}]",
                hint="nothing was changed",
            ) from None
        conn.commit()
    return RollbackResult(component, tuple(r[0] for r in rows))
