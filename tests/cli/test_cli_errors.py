"""Errors an operator can cause end in one line on stderr and exit status 2, never a traceback.
The CLI runs as a real process: what the operator sees is what is tested."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def etl(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=120,
    )


# the first line of every command: which PostgreSQL and source it works on (a log record)
HEADER = re.compile(r"^\S+ INFO etl: (PostgreSQL|source) ")


def error_lines(stderr: str) -> list[str]:
    """stderr's lines without the first line that names the server and source."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not HEADER.match(ln)]


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


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
