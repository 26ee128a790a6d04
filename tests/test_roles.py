"""Production roles: the schema owner applies the schema; a loader role that has only what
`etl grants` prints migrates, reconciles and sees status with every default; a role that may
not create an extension the schema needs is stopped before anything is applied."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.datagen import generate, write_dump
from tests.helpers import error_lines, etl, pg_env


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    path = tmp_path_factory.mktemp("dump") / "atspro"
    write_dump(path, generate(120, seed=8, bad=True), gzip=False)
    return path


def test_a_loader_with_the_printed_grants_migrates_and_reconciles(
    schema_db, new_role, dump, tmp_path
):
    loader = new_role(schema_db)
    owner_env = {"ETL_PG_DSN": schema_db}
    printed = etl("grants", "--role", loader, env=owner_env)
    assert printed.returncode == 0, printed.stderr
    statements = [s for s in printed.stdout.splitlines() if s.strip()]
    assert all(s.startswith("GRANT ") and s.endswith(f'TO "{loader}";') for s in statements)
    assert not any(" ALL " in s or "CREATE" in s.split(" ON ")[0] for s in statements)
    with psycopg.connect(schema_db, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)

    env = pg_env(make_conninfo(schema_db, user=loader), tmp_path)
    migrated = etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    assert migrated.returncode == 1, migrated.stderr  # 1: the dump's bad documents are rejects
    assert "Traceback" not in migrated.stderr
    # the one step that needs ownership is skipped with one line saying what was kept and why
    warned = [ln for ln in migrated.stderr.splitlines() if "does not own" in ln]
    assert len(warned) == 1 and "kept its indexes" in warned[0], migrated.stderr
    # and the statistics it may not gather are said, not skipped silently by the server
    unanalyzed = [ln for ln in migrated.stderr.splitlines() if "no planner statistics" in ln]
    assert len(unanalyzed) == 1 and "resume_documents" in unanalyzed[0], migrated.stderr
    reconciled = etl("reconcile", "--all", "--source", f"dump:{dump}", env=env)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "everything matches" in reconciled.stdout
    status = etl("status", env=env)
    assert status.returncode == 0, status.stderr
    with psycopg.connect(schema_db) as conn:
        # the indexes are all there (none was dropped by a role that could not build it back)
        assert conn.execute("select count(*) from etl_deferred_indexes").fetchone()[0] == 0
        owners = conn.execute(
            "select distinct tableowner from pg_tables where tablename like '%%_documents'"
        ).fetchall()
        assert loader not in {o for (o,) in owners}
    # and the loader can do no more than that: no DDL on the owner's tables
    with psycopg.connect(make_conninfo(schema_db, user=loader)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("drop index idx_resume_documents_parsed_data_gin")


def test_grants_of_an_unknown_role_or_schema_is_one_line(empty_db, schema_db):
    proc = etl("grants", "--role", "no_such_role_x", env={"ETL_PG_DSN": schema_db})
    assert proc.returncode == 2 and error_lines(proc.stderr)[0].startswith(
        "error: role 'no_such_role_x'"
    )
    proc = etl("grants", "--role", "postgres", env={"ETL_PG_DSN": empty_db})
    assert proc.returncode == 2 and "apply-schema" in proc.stderr
    assert len(error_lines(proc.stderr)) == 1


def test_an_extension_the_role_cannot_create_stops_apply_schema_before_anything(
    pg_admin_dsn, new_role
):
    """A managed server's owner role is no superuser: bloom (not a trusted extension) cannot be
    created by it. apply-schema says so in one line and applies nothing."""
    name = f"etl_test_{uuid.uuid4().hex[:12]}"
    db = make_conninfo(pg_admin_dsn, dbname=name)
    owner = new_role(db)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner "{owner}"')
    try:
        proc = etl("apply-schema", env={"ETL_PG_DSN": make_conninfo(db, user=owner)})
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: PostgreSQL extension "), lines
        assert (
            '"bloom"' in lines[0] and "superuser" in lines[0] and "nothing was applied" in lines[0]
        )
        assert "CREATE EXTENSION bloom" in lines[0]
        assert '"pg_trgm"' not in lines[0]  # trusted: the database owner may create it
        with psycopg.connect(db) as conn:
            assert conn.execute("select count(*) from migration_history").fetchone()[0] == 0
            assert conn.execute("select to_regclass('resume_documents')").fetchone()[0] is None
        # the dry run says the same before an operator tries
        dry = etl("apply-schema", "--dry-run", env={"ETL_PG_DSN": make_conninfo(db, user=owner)})
        assert dry.returncode == 2 and '"bloom"' in dry.stderr
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
