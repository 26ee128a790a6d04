"""A role that lacks a privilege: one line naming the privilege, the object and the `etl grants`
command that fixes it, exit 2, before the run starts; preflight checks every schema and table
the mapping writes (the ATSPro mapping sends task_results to schema arango)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.helpers import assert_one_line_error, error_lines, etl, pg_env

# what a DBA grants for "the seed's schema": DML on everything in public, nothing elsewhere
PUBLIC_ONLY = [
    "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role}",
]


@pytest.fixture(scope="module")
def dump(dump_of):
    return dump_of(5, seed=4)


@pytest.fixture
def public_only_loader(schema_db, new_role):
    role = new_role(schema_db)
    with psycopg.connect(schema_db, autocommit=True) as conn:
        db = conn.execute("select quote_ident(current_database())").fetchone()[0]
        for stmt in PUBLIC_ONLY:
            conn.execute(stmt.format(db=db, role=f'"{role}"'))
    return role, make_conninfo(schema_db, user=role)


def test_migrate_without_usage_on_the_generic_schema_is_one_line(
    public_only_loader, dump, tmp_path
):
    role, dsn = public_only_loader
    env = pg_env(dsn, tmp_path, "r")
    proc = etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    assert_one_line_error(proc, "lacks USAGE on SCHEMA arango", f"etl grants --role {role}")
    assert "unexpected" not in proc.stderr


def test_preflight_checks_the_schemas_and_tables_the_mapping_writes(
    public_only_loader, dump, tmp_path
):
    role, dsn = public_only_loader
    env = pg_env(dsn, tmp_path, "r")
    proc = etl("preflight", "--source", f"dump:{dump}", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "USAGE on arango" in proc.stdout and "arango.task_results" in proc.stdout
    assert f"etl grants --role {role}" in proc.stdout


def test_a_privilege_met_without_a_check_is_one_line_too(schema_db, new_role):
    role = new_role(schema_db)  # may connect, nothing else
    proc = etl("status", env={"ETL_PG_DSN": make_conninfo(schema_db, user=role)})
    assert_one_line_error(proc, "permission denied", f"etl grants --role {role} --apply")
    assert error_lines(proc.stderr)[0].startswith(f"error: role {role} lacks a privilege on ")
