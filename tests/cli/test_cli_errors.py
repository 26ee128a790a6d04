"""Errors an operator can cause end in one line on stderr and exit status 2, never a traceback.
The CLI runs as a real process: what the operator sees is what is tested."""

from tests.helpers import assert_one_line_error, etl


def test_cli_unreachable_postgres_names_host_and_port():
    proc = etl("apply-schema", env={"ETL_PG_DSN": "postgresql://postgres@127.0.0.1:1/postgres"})
    assert_one_line_error(proc, "127.0.0.1:1", "cannot reach PostgreSQL")


def test_cli_unknown_role_is_a_refused_login(pg_admin_dsn):
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(pg_admin_dsn, user="no_such_role_etl", password="topsecret-1")
    proc = etl("apply-schema", env={"ETL_PG_DSN": dsn})
    assert_one_line_error(proc, "refused the login")
    assert "topsecret-1" not in proc.stderr + proc.stdout


def test_cli_malformed_settings_file(tmp_path):
    bad = tmp_path / "etl.toml"
    bad.write_text("[migrate]\nbatch_size = 'many'\n")
    proc = etl("--config", str(bad), "status")
    assert_one_line_error(proc, "etl.toml", "migrate.batch_size")


def test_cli_schema_not_applied(empty_db):
    proc = etl("status", env={"ETL_PG_DSN": empty_db})
    assert_one_line_error(proc, "schema is not applied", "etl apply-schema")


def test_cli_rollback_requires_yes(empty_db):
    proc = etl("rollback", "--component", "all", env={"ETL_PG_DSN": empty_db})
    assert_one_line_error(proc, "--yes")


def test_cli_help_lists_commands_and_no_secret():
    proc = etl("--help", env={"ETL_ARANGO_PASSWORD": "hunter2-secret"})
    assert proc.returncode == 0
    for cmd in ("apply-schema", "schema-status", "migrate", "status", "rollback", "pg-url"):
        assert cmd in proc.stdout
    assert "hunter2-secret" not in proc.stdout
