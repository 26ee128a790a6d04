"""etl preflight: the operator's go/no-go before a night's run (docs/preflight.md).

Every check runs, even after an earlier one failed; a check that needs something that failed
(the PostgreSQL connection, the applied schema, the source) says it was skipped and why. Each
check ends ok, info, warn or fail; the verdict is `blocked` with any fail, `warnings` with any
warn, else `ready` (exit status 2, 1, 0). Read-only: nothing is created, granted or written in
the database or the source. Secrets never reach a detail: every message comes from etl's own
one-line errors (etl.pg.connect, the sources), which name hosts, users and databases only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import make_conninfo

from etl import __version__, pg, target
from etl.errors import EtlError
from etl.report_html import duration
from etl.settings import Settings, safe_dsn

log = logging.getLogger("etl.preflight")

PREFLIGHT_SCHEMA_VERSION = 1
STATUSES = ("ok", "info", "warn", "fail")
MIN_SERVER_VERSION = 140000  # PostgreSQL 14

# The basis of the estimate when this database has no finished migrate to measure: docs/figures.md,
# Performance: `etl migrate --all` loaded 5,505 (dump) and 5,675 (HTTP) docs/s on 2 cores, one
# process, index builds included; 100k generated ATSPro documents are 168 MB of JSON.
DEFAULT_DOCS_PER_SECOND = 5000.0
DEFAULT_BYTES_PER_DOCUMENT = 1700
# Space the loaded rows take per byte of source JSON: jsonb rows, TOAST, their indexes (GIN,
# trigram, full text, bloom) and the audit rows. Measured 1.9x (generated ATSPro data, 20,100
# documents, 38 MB of JSON -> 71 MB of tables and indexes, PostgreSQL 15); rounded up.
DISK_FACTOR = 2.0

SETTINGS = (
    "synchronous_commit",
    "max_wal_size",
    "maintenance_work_mem",
    "idle_in_transaction_session_timeout",
    "statement_timeout",
)


@dataclass
class Check:
    name: str
    status: str  # ok | info | warn | fail
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def asdict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "data": self.data}


@dataclass
class PreflightResult:
    id: str
    created_at: str
    target: str
    source: str
    mapping: str
    checks: list[Check]

    @property
    def status(self) -> str:
        states = {c.status for c in self.checks}
        return "blocked" if "fail" in states else "warnings" if "warn" in states else "ready"

    @property
    def exit_code(self) -> int:
        return {"ready": 0, "warnings": 1, "blocked": 2}[self.status]

    def asdict(self) -> dict[str, Any]:
        return {
            "report_schema_version": PREFLIGHT_SCHEMA_VERSION,
            "kind": "preflight",
            "id": self.id,
            "created_at": self.created_at,
            "etl_version": __version__,
            "target": self.target,
            "source": self.source,
            "mapping": self.mapping,
            "status": self.status,
            "checks": [c.asdict() for c in self.checks],
        }


class Preflight:
    """Preflight(settings, source_spec, sql_dir).run() -> PreflightResult."""

    def __init__(self, settings: Settings, source_spec: str = "arangodb", sql_dir=None):
        from etl.schema import shipped_sql_dir
        from etl.state import new_run_id

        self.settings = settings
        self.source_spec = source_spec
        self.sql_dir = Path(sql_dir) if sql_dir is not None else shipped_sql_dir()
        self.id = new_run_id("preflight")
        self.checks: list[Check] = []
        self.dsn: str | None = None
        self.role: str | None = None
        self.schema_ok = False
        self.wal_size: int | None = None  # bytes
        self.counts: dict[str, int] | None = None  # source collection -> documents
        self.mapped: list[str] | None = None  # the mapping's collections, when it loaded
        self.measured: dict[str, Any] | None = None  # the last finished migrate's batches
        self.source_description: str | None = None  # the opened source's own (no secrets)

    # -- bookkeeping ---------------------------------------------------------------------------
    def add(self, name: str, status: str, detail: str, **data: Any) -> Check:
        assert status in STATUSES, status
        check = Check(name, status, detail, data)
        self.checks.append(check)
        return check

    def skip(self, name: str, why: str) -> None:
        self.add(name, "info", f"skipped: {why}", skipped=True)

    def guarded(self, name: str, fn: Callable[[], None]) -> None:
        """Run one check; a database or etl error it did not expect fails that check only."""
        try:
            fn()
        except (EtlError, psycopg.Error) as exc:
            self.add(name, "fail", f"could not check: {_one_line(exc)}")

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> PreflightResult:
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self._postgres()
        self._source()
        self._estimate()
        self._reports_dir()
        return PreflightResult(
            self.id,
            created,
            self._target_label(),
            self._source_label(),
            self.settings.migrate.mapping,
            self.checks,
        )

    def _reports_dir(self) -> None:
        """The reports directory takes a file: a temporary one made and removed there (or in the
        nearest existing parent, where the directory is not made yet). As root, permission bits
        alone would say yes to everything."""
        import tempfile

        wanted = Path(self.settings.migrate.reports_dir).expanduser().absolute()
        where = wanted
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            if not where.is_dir():
                raise NotADirectoryError(20, "not a directory", str(where))
            with tempfile.NamedTemporaryFile(dir=where, prefix=".etl-preflight-"):
                pass
        except OSError as exc:
            self.add(
                "reports.directory",
                "fail",
                f"{wanted}: cannot write there ({exc.strerror or exc}"
                + (f": {exc.filename}" if exc.filename and str(exc.filename) != str(wanted) else "")
                + "); choose another --reports-dir, ETL_REPORTS_DIR or migrate.reports_dir",
                path=str(wanted),
            )
            return
        made = "writable" if where == wanted else f"will be created (in {where}, writable)"
        self.add("reports.directory", "ok", f"{wanted}: {made}", path=str(wanted))

    # -- PostgreSQL ----------------------------------------------------------------------------
    def _postgres(self) -> None:
        try:
            self.dsn = pg.resolve_dsn(self.settings)
            conn = pg.connect(self.dsn, autocommit=True, application_name="etl-preflight")
        except EtlError as exc:
            self.add("postgres.connection", "fail", str(exc))
            for name in (
                "postgres.version",
                *self._extension_names(),
                "schema",
                "privileges",
                "tables.owner",
                "pooler",
                *(f"setting.{s}" for s in SETTINGS),
                "fallback.capture",
            ):
                self.skip(name, "no PostgreSQL connection")
            return
        with conn:
            self.guarded("postgres.connection", lambda: self._connection(conn))
            self.guarded("extensions", lambda: self._extensions(conn))
            self.guarded("schema", lambda: self._schema(conn))
            self.guarded("privileges", lambda: self._privileges(conn))
            self.guarded("tables.owner", lambda: self._ownership(conn))
            self.guarded("pooler", lambda: self._pooler(conn))
            self.guarded("settings", lambda: self._settings(conn))
            self.guarded("fallback.capture", lambda: self._fallback(conn))
            self.measured = _measured_rate(conn)

    def _connection(self, conn: psycopg.Connection) -> None:
        assert self.dsn is not None  # resolved before connecting
        self.role, db = pg.one(conn, "select current_user, current_database()")
        version = pg.server_version(conn)
        self.add(
            "postgres.connection",
            "ok",
            f"{pg.describe_target(self.dsn)}: login accepted as {self.role}",
            role=self.role,
            database=db,
        )
        number = conn.info.server_version
        if number >= MIN_SERVER_VERSION:
            self.add("postgres.version", "ok", f"PostgreSQL {version}", server_version=version)
        else:
            self.add(
                "postgres.version",
                "fail",
                f"PostgreSQL {version}: etl needs PostgreSQL 14 or newer",
                server_version=version,
            )

    def _extension_names(self) -> list[str]:
        """The names of the extension checks (known from the sql files alone)."""
        from etl.schema import load_migrations, required_extensions

        try:
            return [f"extension.{n}" for n in required_extensions(load_migrations(self.sql_dir))]
        except EtlError:
            return ["extensions"]

    def _extensions(self, conn: psycopg.Connection) -> None:
        from etl.schema import extension_states, extensions_hint, load_migrations

        states = extension_states(conn, load_migrations(self.sql_dir))
        if not states:
            self.add("extensions", "ok", "the schema files create no extension")
            return
        db = pg.scalar(conn, "select current_database()")
        for s in states:
            name = f"extension.{s.name}"
            if s.installed:
                self.add(name, "ok", f"{s.name} is installed", installed=True, file=s.file)
            elif s.problem is None:
                self.add(
                    name,
                    "warn",
                    f"{s.name} is not installed: apply-schema will create it ({s.file};"
                    f" role {self.role} may)",
                    installed=False,
                    file=s.file,
                )
            else:
                self.add(
                    name,
                    "fail",
                    f"{s.problem}: {extensions_hint([s.name], db)}",
                    installed=False,
                    file=s.file,
                )

    def _schema(self, conn: psycopg.Connection) -> None:
        from etl.state import require_schema

        try:
            require_schema(conn)
        except EtlError as exc:
            self.add("schema", "fail", str(exc))
            return
        self.schema_ok = True
        version = pg.schema_version(conn)
        self.add(
            "schema",
            "ok",
            f"applied, migration {version}: the version this etl ships"
            if version
            else "applied (no migration_history to compare with)",
            version=version,
        )

    def _privileges(self, conn: psycopg.Connection) -> None:
        from etl.grants import loader_grants

        if not self.schema_ok and pg.scalar(
            conn, "select to_regclass(%s) is null", (target.table(target.DOCUMENT_TYPES[0]),)
        ):
            self.skip("privileges", "the schema is not applied (no document tables)")
            return
        grants = loader_grants(conn)
        missing: list[str] = []
        for g in grants:
            missing += [f"{p} on {g.name}" for p in _lacking(conn, g)]
        checked = sum(len(g.privileges) for g in grants)
        if missing:
            self.add(
                "privileges",
                "fail",
                f"role {self.role} lacks {', '.join(missing)}: the schema owner runs"
                f" `etl grants --role {self.role}` (it prints the GRANT statements; --apply runs"
                " them)",
                role=self.role,
                missing=missing,
                checked=checked,
            )
        else:
            self.add(
                "privileges",
                "ok",
                f"role {self.role} has all {checked} privileges etl needs on {len(grants)}"
                " objects (what `etl grants` lists)",
                role=self.role,
                missing=[],
                checked=checked,
            )

    def _ownership(self, conn: psycopg.Connection) -> None:
        tables = [target.table(t) for t in target.DOCUMENT_TYPES]
        rows = conn.execute(
            "select t, pg_has_role(current_user, c.relowner, 'USAGE')"
            " from unnest(%s::text[]) with ordinality as u(t, n)"
            " join pg_class c on c.oid = to_regclass(u.t) order by n",
            (tables,),
        ).fetchall()
        if not rows:
            self.skip("tables.owner", "the schema is not applied (no document tables)")
            return
        others = [t for t, owned in rows if not owned]
        if not others:
            self.add(
                "tables.owner",
                "ok",
                f"role {self.role} owns the document tables: deferred index builds run",
                not_owned=[],
            )
            return
        defer = self.settings.migrate.defer_indexes
        self.add(
            "tables.owner",
            "warn" if defer else "info",
            f"role {self.role} does not own {', '.join(others)}: deferred index builds are"
            " skipped for them (their indexes stay during the load, which is slower); run"
            " etl migrate as the owner for the speed-up"
            + (", or set migrate.defer_indexes = false" if defer else ""),
            not_owned=others,
        )

    def _pooler(self, conn: psycopg.Connection) -> None:
        evidence = pg.detect_pooler(conn)
        if not evidence.detected:
            self.add("pooler", "ok", f"direct connection: {evidence.reason}", detected=False)
            return
        try:
            assert self.dsn is not None  # resolved before connecting
            console = pgbouncer_console(self.dsn, conn.info.dbname)
        except psycopg.Error as exc:
            self.add(
                "pooler",
                "warn",
                f"pooler detected ({evidence.reason}), mode unknown: its admin console did not"
                f" answer ({_one_line(exc)}); etl works in session and transaction pooling;"
                " make sure idle_transaction_timeout = 0",
                detected=True,
                evidence=evidence.reason,
                admin_console=False,
            )
            return
        mode = console["pool_mode"]
        idle = _seconds(console["config"].get("idle_transaction_timeout"))
        query = _seconds(console["config"].get("query_timeout"))
        data = {
            "detected": True,
            "evidence": evidence.reason,
            "admin_console": True,
            "version": console["version"],
            "pool_mode": mode,
            "idle_transaction_timeout": idle,
            "query_timeout": query,
        }
        problems: list[tuple[str, str]] = []
        if mode == "statement":
            problems.append(
                (
                    "fail",
                    "pool_mode = statement: etl needs multi-statement transactions (use"
                    " session or transaction pooling for its database)",
                )
            )
        if idle:
            problems.append(
                (
                    "fail",
                    f"idle_transaction_timeout = {idle:g} s: etl holds its run and schema locks"
                    " in an open transaction for the whole run, which PgBouncer would cut; set"
                    " idle_transaction_timeout = 0",
                )
            )
        if query:
            problems.append(
                (
                    "warn",
                    f"query_timeout = {query:g} s cancels any longer statement: a large batch"
                    " merge or a deferred index build can take minutes; set query_timeout = 0",
                )
            )
        what = f"{console['version']} in {mode} pooling ({evidence.reason})"
        if not problems:
            self.add(
                "pooler",
                "ok",
                f"{what}; idle_transaction_timeout = 0: etl works through it",
                **data,
            )
            return
        status = "fail" if any(s == "fail" for s, _ in problems) else "warn"
        self.add("pooler", status, f"{what}: " + "; ".join(p for _, p in problems), **data)

    def _settings(self, conn: psycopg.Connection) -> None:
        rows = {
            name: (shown, raw, unit)
            for name, shown, raw, unit in conn.execute(
                "select name, current_setting(name), setting, unit from pg_settings"
                " where name = any(%s)",
                (list(SETTINGS),),
            )
        }
        for name in SETTINGS:
            if name not in rows:
                self.add(f"setting.{name}", "info", "not reported by this server")
                continue
            shown, raw, unit = rows[name]
            status, note = _setting_note(name, shown, raw)
            if name == "max_wal_size":
                self.wal_size = _setting_bytes(raw, unit)
            self.add(f"setting.{name}", status, f"{shown}: {note}", value=shown)

    def _fallback(self, conn: psycopg.Connection) -> None:
        """How `etl fallback` can capture PostgreSQL's writes here (etl/fallback/capture.py)."""
        from etl.fallback import capture

        m = capture.mechanisms(conn)
        pick = (
            "logical decoding (a replication slot)"
            if m["auto"] == "logical"
            else "triggers on the migrated tables"
        )
        armed = "not armed yet (etl cutover arms it on go)"
        if capture.installed(conn) and (st := capture.state(conn)) is not None:
            armed = (
                f"armed with {st['mechanism']} capture, "
                f"{capture.backlog(conn)['pending_changes']} changes not applied yet"
            )
        self.add(
            "fallback.capture",
            "ok",
            f"--capture auto picks {pick}: {m['why']}; {armed}",
            **m,
        )

    def _target_label(self) -> str:
        if self.dsn is not None:
            return pg.target_label(self.settings, self.dsn)
        configured = self.settings.postgres.dsn.get_secret_value()
        return safe_dsn(configured) if configured else "embedded"

    # -- the source ----------------------------------------------------------------------------
    def _source_label(self) -> str:
        if self.source_description:
            return self.source_description
        kind, _, path = self.source_spec.partition(":")
        if kind == "arangodb" and not path:
            a = self.settings.arango
            parts = urlsplit(a.url)
            host = parts.hostname or ""
            if parts.port:
                host += f":{parts.port}"
            return (
                f"arangodb {parts.scheme}://{host}{parts.path} database {a.database}"
                f" as {a.username} ({a.auth} auth)"
            )
        return self.source_spec

    def _source(self) -> None:
        from etl.mapping import load_mapping
        from etl.sources import open_source

        mapping = None
        try:
            mapping = load_mapping(self.settings.migrate.mapping)
            mapped = [c for c in mapping.collections_in_order() if mapping.for_collection(c)]
            self.mapped = mapped + sorted(set(mapping.collections) - set(mapped))
            self.add(
                "mapping",
                "ok",
                f"{self.settings.migrate.mapping}: mapping version {mapping.version},"
                f" {len(self.mapped)} collections: {', '.join(self.mapped)}",
                version=mapping.version,
                collections=self.mapped,
            )
        except EtlError as exc:
            self.add("mapping", "fail", str(exc))

        source = None
        try:
            source = open_source(self.source_spec, self.settings)
            infos = source.collections()
        except EtlError as exc:
            self.add("source.connection", "fail", str(exc))
            names = (
                [f"collection.{n}" for n in self.mapped] + ["source.unmapped"]
                if self.mapped is not None
                else ["source.collections"]
            )
            for name in names:
                self.skip(name, "the source could not be read")
            return
        finally:
            if source is not None:
                source.close()
        self.counts = {c.name: c.count for c in infos}
        self.source_description = source.description
        self._wal(source)
        self.add(
            "source.connection",
            "ok",
            f"{source.description}: {len(infos)} collections",
            description=source.description,
            collections=len(infos),
        )
        if mapping is None:
            self.skip("source.collections", "the mapping could not be read")
            return
        for name in self.mapped or []:
            cm = mapping.collections[name]
            if cm.edge is not None:
                into = f"{target.table(cm.edge.to_document_type)}.{cm.edge.sets} and metadata.edges"
            else:
                into = ", ".join(dict.fromkeys(t.table for t in cm.targets()))
            if name in self.counts:
                self.add(
                    f"collection.{name}",
                    "ok",
                    f"{self.counts[name]:,} documents -> {into}",
                    count=self.counts[name],
                    into=into,
                )
            else:
                self.add(
                    f"collection.{name}",
                    "fail",
                    f"mapped (-> {into}) but not in the source: migrate and reconcile stop"
                    " (the wrong dump or database?) unless --allow-missing",
                    count=None,
                    into=into,
                )
        unmapped = {n: c for n, c in self.counts.items() if n not in mapping.collections}
        if unmapped:
            listing = ", ".join(
                f"{n}: {c:,} documents, {mapping.unmapped_reason(n)}"
                for n, c in sorted(unmapped.items())
            )
            self.add(
                "source.unmapped",
                "info",
                f"{listing}; migrate --all counts them as unmapped and loads none",
                collections=unmapped,
            )
        else:
            self.add("source.unmapped", "info", "none: every collection is mapped", collections={})

    def _wal(self, source) -> None:
        """Can `etl sync` follow this source's write-ahead log (admin on _system, not a cluster),
        and how far behind is the follower?"""
        from etl.sources.arango import ArangoSource
        from etl.sources.wal import WalReader

        if not isinstance(source, ArangoSource):
            self.skip("source.wal", "a dump or export: `etl sync mark` records the position")
            return
        try:
            now = WalReader(source).last_tick()
        except EtlError as exc:
            self.add(
                "source.wal",
                "warn",
                f"the write-ahead log is not readable ({exc}): etl migrate records no position "
                "and `etl sync` cannot follow the copy (it needs administrate access to _system "
                "on a single server)",
            )
            return
        detail = f"readable: tick {now.tick:,} on server {now.server_id} ({now.version})"
        data: dict[str, Any] = {"tick": now.tick, "server_id": now.server_id}
        row = None
        if self.dsn is not None:
            try:
                with pg.connect(self.dsn, autocommit=True) as conn:
                    if pg.scalar(conn, "select to_regclass('etl_wal_positions')"):
                        row = conn.execute(
                            "select from_tick from etl_wal_positions where kind = 'follow'"
                        ).fetchone()
            except (psycopg.Error, EtlError):
                row = None
        if row:
            data["lag_ticks"] = max(0, now.tick - int(row[0]))
            detail += f"; the follower is {data['lag_ticks']:,} ticks behind"
        self.add("source.wal", "ok", detail, **data)

    # -- the estimate --------------------------------------------------------------------------
    def _estimate(self) -> None:
        if self.counts is None or self.mapped is None:
            why = "no source counts" if self.counts is None else "the mapping could not be read"
            self.skip("estimate.load", why)
            self.skip("estimate.disk", why)
            return
        docs = sum(c for n, c in self.counts.items() if n in self.mapped)
        measured = self.measured
        if measured:
            rate = measured["docs"] / measured["seconds"]
            per_doc = measured["bytes"] / measured["docs"] if measured["bytes"] else None
            basis = (
                f"measured by the last finished migrate here ({measured['run_id']}:"
                f" {measured['docs']:,} documents in {duration(measured['seconds'])} of batches,"
                f" {rate:,.0f} docs/s; index builds not included)"
            )
        else:
            rate, per_doc = DEFAULT_DOCS_PER_SECOND, None
            basis = (
                f"etl's documented default: {DEFAULT_DOCS_PER_SECOND:,.0f} docs/s (docs/figures.md,"
                " Performance: one process on 2 cores, index builds included); no finished"
                " migrate in this database to measure"
            )
        if per_doc is None:
            per_doc = DEFAULT_BYTES_PER_DOCUMENT
            size_basis = (
                f"{DEFAULT_BYTES_PER_DOCUMENT:,} bytes a document, the figure of docs/figures.md"
            )
        else:
            size_basis = f"{per_doc:,.0f} bytes a document, measured"
        nbytes = int(docs * per_doc)
        seconds = docs / rate if rate else None
        self.add(
            "estimate.load",
            "info",
            f"{docs:,} documents in the mapped collections; about {_bytes(nbytes)} of JSON"
            f" ({size_basis}); about {duration(seconds, '?')} in one process; basis: {basis}",
            documents=docs,
            bytes=nbytes,
            bytes_per_document=round(per_doc, 1),
            seconds=round(seconds, 1) if seconds is not None else None,
            docs_per_second=round(rate, 1),
            basis="measured" if measured else "default",
            measured_run=measured["run_id"] if measured else None,
        )
        need = int(nbytes * DISK_FACTOR) + (self.wal_size or 0)
        wal = f" plus max_wal_size ({_bytes(self.wal_size)}) of WAL" if self.wal_size else ""
        self.add(
            "estimate.disk",
            "info",
            f"the load needs about {_bytes(need)} free on the database server:"
            f" {DISK_FACTOR:g}x the JSON for the jsonb rows, their indexes and audit rows{wal};"
            " PostgreSQL does not tell a non-superuser the free disk space: check it (df on the"
            " server, or the provider's console)",
            bytes=need,
            factor=DISK_FACTOR,
            wal_bytes=self.wal_size,
        )


# -- helpers -----------------------------------------------------------------------------------


def pgbouncer_console(dsn: str, dbname: str) -> dict[str, Any]:
    """PgBouncer's admin console with the same credentials (database `pgbouncer`; only the
    simple query protocol): its version, SHOW CONFIG, and the pool mode for `dbname` (a
    per-database pool_mode in SHOW DATABASES wins over the global one)."""
    with psycopg.connect(
        make_conninfo(dsn, dbname="pgbouncer"),
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
        connect_timeout=10,
    ) as admin:
        config = {str(r[0]): r[1] for r in admin.execute("SHOW CONFIG").fetchall()}
        version = "PgBouncer"
        try:
            row = admin.execute("SHOW VERSION").fetchone()
            version = str(row[0]) if row else version
        except psycopg.Error:
            pass
        mode = config.get("pool_mode")
        try:
            cur = admin.execute("SHOW DATABASES")
            cols = [d.name for d in cur.description or ()]
            for row in cur.fetchall():
                item = dict(zip(cols, row))
                if item.get("name") == dbname and item.get("pool_mode"):
                    mode = item["pool_mode"]
        except psycopg.Error:
            pass
    return {"version": version, "config": config, "pool_mode": mode}


def _measured_rate(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The batches of the last finished migrate in this database (documents, bytes read, seconds
    of batches), or None: none yet, no run tables, or this role may not read them."""
    try:
        if not pg.scalar(
            conn,
            "select to_regclass('etl_batches') is not null and to_regclass('etl_runs') is not null",
        ):
            return None
        row = conn.execute(
            "select r.run_id, sum(b.docs)::bigint, sum(b.nbytes)::bigint, sum(b.seconds)::float8"
            " from etl_runs r join etl_batches b using (run_id)"
            " where r.command = 'migrate' and r.state = 'finished'"
            " group by r.run_id, r.finished_at having sum(b.docs) > 0 and sum(b.seconds) > 0"
            " order by r.finished_at desc limit 1"
        ).fetchone()
    except psycopg.Error as exc:
        log.info("no measured rate: %s", _one_line(exc))
        return None
    if row is None:
        return None
    return {"run_id": row[0], "docs": row[1], "bytes": row[2], "seconds": row[3]}


def _lacking(conn: psycopg.Connection, g) -> list[str]:
    from etl.grants import lacking

    return lacking(conn, g)


def _setting_note(name: str, shown: str, raw: str) -> tuple[str, str]:
    if name == "synchronous_commit":
        if shown == "off":
            return (
                "warn",
                "a server crash may lose commits the run has already passed (a checkpoint ahead"
                " of its data); set it to on for etl's role or database",
            )
        return "info", "every batch commit is durable before the run goes on"
    if name == "max_wal_size":
        return (
            "info",
            "a load writes at least as much WAL as it stores: a few GB space out the"
            " checkpoints during the load",
        )
    if name == "maintenance_work_mem":
        from etl.indexes import MAINTENANCE_WORK_MEM

        return (
            "info",
            f"etl's deferred index builds set {MAINTENANCE_WORK_MEM} in their own transaction",
        )
    if name == "idle_in_transaction_session_timeout":
        return "info", "etl sets it to 0 for its lock transactions"
    if name == "statement_timeout":
        if raw not in ("0", ""):
            return (
                "warn",
                "a longer statement is cancelled: a large batch merge or a deferred index build"
                " can take minutes; set it to 0 for etl's role",
            )
        return "info", "no limit"
    return "info", ""


_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _setting_bytes(raw: str, unit: str | None) -> int | None:
    """pg_settings' raw value and unit ('1024' and 'MB', or '8kB' blocks) in bytes."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    unit = unit or "B"
    digits = "".join(ch for ch in unit if ch.isdigit())
    base = unit[len(digits) :]
    if base not in _UNITS:
        return None
    return int(value * (int(digits) if digits else 1) * _UNITS[base])


def _seconds(value: Any) -> float:
    """A PgBouncer time setting as SHOW CONFIG prints it (seconds, possibly fractional)."""
    try:
        return float(str(value).strip().rstrip("s") or 0)
    except ValueError:
        return 0.0


def _bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"  # pragma: no cover


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, EtlError):
        return str(exc)
    lines = [" ".join(ln.split()) for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
