"""Deferred index builds for the first bulk load into empty tables (as pgloader does).

Maintaining GIN, trigram, full-text and bloom indexes row by row costs far more than building
them once over the loaded table. When a target table is EMPTY at the start of a run, its
non-unique secondary indexes are dropped, and built again when the run ends (finished, failed
or interrupted). Primary keys and unique indexes stay: they enforce identity and business rules
during the load. Each definition is written to etl_deferred_indexes in the same transaction as
its DROP, so a crash (SIGKILL, power loss) cannot lose an index: the next `etl migrate` rebuilds
whatever that table still lists before doing anything else.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import Future

import psycopg
from psycopg import sql

from etl.pg import scalar
from etl.target import ident

log = logging.getLogger("etl.indexes")

# Enough memory for one sort-based GIN/btree build of a few million rows; the session setting
# only applies to the rebuilding connection.
MAINTENANCE_WORK_MEM = "512MB"


def defer(conn: psycopg.Connection, run_id: str, tables: list[str]) -> list[str]:
    """Drop the secondary indexes of those tables that are empty; return the dropped names.
    Runs in the caller's transaction (a dry run rolls it back)."""
    dropped: list[str] = []
    with conn.transaction():
        for table in _owned(conn, tables, "kept its indexes for the load (slower)"):
            if scalar(conn, sql.SQL("select exists (select 1 from {})").format(ident(table))):
                continue
            # the table's own indexes, and those of its search table (sql/014), listed under
            # the table: built when it is done, after its vectors (search_table_of)
            rows = conn.execute(
                "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),"
                " (select nspname from pg_namespace n join pg_class c on c.relnamespace = n.oid"
                "  where c.oid = i.indexrelid), i.indexrelid::regclass::text from pg_index i"
                " where i.indrelid = any(array[%s::regclass, to_regclass(%s)])"
                " and not i.indisprimary and not i.indisunique"
                " and not i.indisexclusion and i.indisvalid"
                " and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid)",
                (table, f"{table}_search"),
            ).fetchall()
            for name, definition, schema, _ in rows:
                conn.execute(
                    "insert into etl_deferred_indexes (index_name, table_name, definition, run_id)"
                    " values (%s, %s, %s, %s) on conflict (index_name) do nothing",
                    (name, table, definition, run_id),
                )
                # a generic table's index is schema-qualified ("arango.users_data_gin")
                bare = name.rpartition(".")[2]
                conn.execute(sql.SQL("drop index {}").format(sql.Identifier(schema, bare)))
                dropped.append(name)
    if dropped:
        log.info(
            "deferred %d index builds until the end of the load: %s",
            len(dropped),
            ", ".join(dropped),
        )
    return dropped


def _owned(conn: psycopg.Connection, tables: list[str], otherwise: str) -> list[str]:
    """The tables whose indexes this role may drop and create (it owns them, or is a member
    of their owner). For the others one warning line: a loader role keeps every default
    working, only without the speed-up (the owner runs `etl migrate` for that)."""
    if not tables:
        return []
    owned = [
        t
        for (t,) in conn.execute(
            "select t from unnest(%s::text[]) with ordinality as u(t, n)"
            " where pg_has_role(current_user, (select relowner from pg_class"
            "                                   where oid = u.t::regclass), 'USAGE')"
            " order by n",
            (tables,),
        )
    ]
    others = [t for t in tables if t not in owned]
    if others:
        who = scalar(conn, "select current_user")
        log.warning(
            "role %s does not own %s: %s (index builds need the owner: run etl migrate as the"
            " owner for them, or set migrate.defer_indexes = false to silence this)",
            who,
            ", ".join(others),
            otherwise,
        )
    return owned


def plan(conn: psycopg.Connection, tables: list[str] | None = None) -> list[tuple[str, str]]:
    """(name, definition) of the indexes etl_deferred_indexes lists for `tables` (or all) whose
    table this role owns, the costliest first (full text, then GIN, then the rest), so that
    builds on several connections finish together."""
    with conn.transaction():  # never leave an implicit transaction open: see migrate.py
        listed = [
            t
            for (t,) in conn.execute(
                "select distinct table_name from etl_deferred_indexes"
                " where %s::text[] is null or table_name = any(%s::text[]) order by 1",
                (tables, tables),
            )
        ]
        owned = _owned(conn, listed, "its deferred indexes stay listed in etl_deferred_indexes")
        todo = conn.execute(
            "select index_name, definition from etl_deferred_indexes"
            " where table_name = any(%s::text[]) order by table_name, index_name",
            (owned,),
        ).fetchall()
    return sorted(todo, key=lambda t: _cost_rank(t[1]))


# "CREATE INDEX ... ON public.resume_documents_search USING gin (search_vector)": an index of a
# search table (sql/014). While it is listed, the table's trigger leaves the vectors to its build.
_SEARCH_INDEX = re.compile(r" ON (\S+)_search USING ")


def search_table_of(definition: str) -> str | None:
    """The document table whose vectors an index of a search table needs, else None."""
    m = _SEARCH_INDEX.search(definition)
    return m.group(1) if m else None


def _cost_rank(definition: str) -> int:
    if "search_vector(" in definition or search_table_of(definition):  # the full-text ones
        return 0
    if " USING gin " in definition:
        return 1
    return 2


def build(conn: psycopg.Connection, name: str, definition: str) -> float:
    """Build one listed index; it commits with the removal of its row (a failure leaves the
    row for the next attempt). Returns the seconds it took."""
    t0 = time.perf_counter()
    # pg_get_indexdef gives "CREATE [UNIQUE] INDEX name ON ..."; IF NOT EXISTS makes a rebuild
    # after a crash between the build and the bookkeeping harmless.
    statement = re.sub(
        r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX IF NOT EXISTS ", definition, count=1
    )
    with conn.transaction():
        conn.execute(f"set local maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        documents = search_table_of(definition)
        if documents is not None:  # the vectors the load left to this build, then their index
            conn.execute("select etl_fill_search_vectors(%s::regclass)", (documents,))
        conn.execute(statement)
        conn.execute("delete from etl_deferred_indexes where index_name = %s", (name,))
    return time.perf_counter() - t0


def rebuild(conn: psycopg.Connection, tables: list[str] | None = None) -> list[tuple[str, float]]:
    """Build the indexes etl_deferred_indexes lists (of `tables`, or all), one after another
    on this connection. Returns (name, seconds) per index."""
    built = [(name, build(conn, name, definition)) for name, definition in plan(conn, tables)]
    if built:
        log.info("built %d deferred indexes in %.1fs", len(built), sum(s for _, s in built))
    return built


def analyze(conn: psycopg.Connection, tables: list[str]) -> float | None:
    """Planner statistics for the tables a finished load wrote (and their search tables,
    sql/014), once their indexes are back: a bulk load leaves none, and autovacuum may be off
    or not come round before `etl sync` starts. Seen at 1M documents without them: `update
    research_results set resume_id = null where resume_id = any(...)` planned as a scan of
    111k rows (the default estimate of 0.5% per key), 11 such scans reading 2.3 GB in one
    apply. About 8 s at 1M documents. Runs in its own transaction, or a savepoint of the
    caller's: a failure (a statement_timeout, say) is a warning, the rows are in and
    autovacuum analyzes later. Returns the seconds taken, None when it failed."""
    t0 = time.perf_counter()
    names = [ident(t + suffix).as_string(conn) for t in tables for suffix in ("", "_search")]
    # ANALYZE of a table this role may not maintain is only a server WARNING: asked first
    may = "pg_has_role(c.relowner, 'MEMBER')"
    if conn.info.server_version >= 170000:
        may += " or has_table_privilege(c.oid, 'MAINTAIN')"
    try:
        with conn.transaction():
            found = conn.execute(
                f"select c.oid::regclass::text, {may} from unnest(%s::text[]) n"
                " join pg_class c on c.oid = to_regclass(n)",
                (names,),
            ).fetchall()
            for name, allowed in found:
                if allowed:  # regclass text: quoted
                    conn.execute(sql.SQL("analyze {}").format(sql.SQL(name)))
    except psycopg.Error as exc:
        log.warning("could not gather planner statistics (run ANALYZE): %s", exc)
        return None
    seconds = time.perf_counter() - t0
    refused = [name for name, allowed in found if not allowed]
    if refused:
        log.warning(
            "no planner statistics for %s: this role may not ANALYZE them (run ANALYZE as their "
            "owner before `etl sync`, or grant MAINTAIN on PostgreSQL 17+)",
            ", ".join(refused),
        )
    log.info("planner statistics for %d tables in %.1fs", len(found) - len(refused), seconds)
    return seconds


def pending(conn: psycopg.Connection) -> list[str]:
    with conn.transaction():
        return [
            r[0] for r in conn.execute("select index_name from etl_deferred_indexes order by 1")
        ]


# Index builds are one backend each (GIN builds are not parallel before PostgreSQL 18): two
# connections keep two cores busy at the end of a run, when nothing else is left to load.
BUILD_CONNECTIONS = 2


class BackgroundBuilder:
    """Builds finished tables' indexes on connections of its own (BUILD_CONNECTIONS, one index
    per connection at a time, the costliest first) while the next collections load, and the
    rest when the run ends (finish()).
    Errors are logged, not raised: whatever is left is built again at the end of the run."""

    def __init__(self, dsn: str, connections: int = BUILD_CONNECTIONS):
        from concurrent.futures import ThreadPoolExecutor

        self.dsn = dsn
        # Two builds at once also while collections load: measured faster than one at a time
        # (the full-text builds are the longest tasks of a run and start sooner).
        self._pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="etl-index")
        self._futures: list[Future[list[tuple[str, float]]]] = []
        self._queued: set[str] = set()

    def submit(self, tables: list[str] | None) -> None:
        """Queue the builds of these tables' indexes (None: every listed one)."""
        from etl import pg

        try:
            with pg.connect(self.dsn, application_name="etl-index-build") as conn:
                todo = plan(conn, tables)
        except Exception as exc:  # noqa: BLE001 - rebuilt at the end of the run instead
            log.warning("could not list the deferred indexes (built at the end): %s", exc)
            return
        for name, definition in todo:
            if name not in self._queued:  # queued before: building or built already
                self._queued.add(name)
                self._futures.append(self._pool.submit(self._build, name, definition))

    def _build(self, name: str, definition: str) -> list[tuple[str, float]]:
        from etl import pg

        try:
            with pg.connect(self.dsn, application_name="etl-index-build") as conn:
                return [(name, build(conn, name, definition))]
        except Exception as exc:  # noqa: BLE001 - rebuilt at the end of the run instead
            log.warning(
                "background build of index %s failed (retried at the end of the run): %s",
                name,
                exc,
            )
            return []

    def finish(self) -> list[tuple[str, float]]:
        """Nothing is left to load: every listed index, on the builder's connections."""
        self.submit(None)
        return self.wait()

    def wait(self) -> list[tuple[str, float]]:
        built = []
        for f in self._futures:
            built.extend(f.result())
        self._pool.shutdown(wait=True)
        if built:
            log.info("built %d deferred indexes in %.1fs", len(built), sum(s for _, s in built))
        return built
