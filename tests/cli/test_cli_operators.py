"""Habits of operators and their tools, through the real `etl` process: libpq's environment,
the first line naming the server and the source, logging options anywhere on the line and in
JSON, machine-readable results, option mistakes refused before any server starts."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.helpers import assert_one_line_error, etl, pg_env

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")


@pytest.fixture(scope="module")
def dump(dump_of):
    return dump_of(6, seed=3)


def libpq_env(dsn: str, tmp_path: Path) -> dict:
    """The server of `dsn` as a DBA's shell names it: PG* variables, no ETL_PG_DSN."""
    p = conninfo_to_dict(dsn)
    env = {
        "PGHOST": p.get("host") or "127.0.0.1",
        "PGPORT": str(p.get("port") or 5432),
        "PGDATABASE": p["dbname"],
        "PGUSER": p.get("user") or "postgres",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "ETL_REPORTS_DIR": str(tmp_path / "reports"),
    }
    env["PGPASSWORD"] = p.get("password") or "pw-not-shown-71"
    return env


def first_line(proc) -> str:
    return (proc.stderr.splitlines() or [""])[0]


# -- 10: libpq's conventions ----------------------------------------------------------------------


def test_libpq_environment_is_used_and_named_not_the_embedded_server(schema_db, tmp_path):
    env = libpq_env(schema_db, tmp_path)
    proc = etl("status", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = first_line(proc)
    assert f"PostgreSQL {env['PGHOST']}:{env['PGPORT']}, database {env['PGDATABASE']}" in line
    assert "PGHOST" in line and "embedded" not in proc.stderr
    assert not (tmp_path / "xdg").exists()  # no embedded server was started
    assert env["PGPASSWORD"] not in proc.stdout + proc.stderr


def test_etl_pg_dsn_then_dsn_flag_come_before_libpq_environment(schema_db, tmp_path):
    env = libpq_env(schema_db, tmp_path) | {"PGDATABASE": "no_such_db_etl"}
    assert etl("status", env=env, cwd=tmp_path).returncode == 2  # libpq's wrong database
    ok = etl("status", env=env | {"ETL_PG_DSN": schema_db}, cwd=tmp_path)
    assert ok.returncode == 0 and "(from ETL_PG_DSN)" in first_line(ok), ok.stderr
    wrong = env | {"ETL_PG_DSN": "postgresql://postgres@127.0.0.1:1/x"}
    flag = etl("status", "--dsn", schema_db, env=wrong, cwd=tmp_path)
    assert flag.returncode == 0 and "(from --dsn)" in first_line(flag), flag.stderr


def test_pgservice_names_the_service(schema_db, tmp_path):
    p = conninfo_to_dict(schema_db)
    services = tmp_path / "pg_service.conf"
    lines = [f"{k}={v}" for k, v in p.items() if k in ("host", "port", "dbname", "user")]
    services.write_text("[night]\n" + "\n".join(lines) + "\n")
    env = {"PGSERVICEFILE": str(services), "PGSERVICE": "night", "XDG_DATA_HOME": str(tmp_path)}
    proc = etl("status", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PostgreSQL service night (from libpq environment PGSERVICE)" in first_line(proc)


def test_every_command_says_first_which_server_database_and_source(schema_db, tmp_path, dump):
    db = conninfo_to_dict(schema_db)["dbname"]
    env = pg_env(schema_db, tmp_path, "r")
    commands = [
        ["status"],
        ["schema-status"],
        ["apply-schema", "--dry-run"],
        ["grants", "--role", "postgres"],
        ["migrate", "--all", "--source", f"dump:{dump}", "--dry-run"],
        ["reconcile", "--all", "--source", f"dump:{dump}"],
        ["preflight", "--source", f"dump:{dump}"],
    ]
    for args in commands:
        proc = etl(*args, env=env, cwd=tmp_path)
        line = first_line(proc)
        assert f"database {db} (from ETL_PG_DSN)" in line, (args, proc.stderr)
        if "--source" in args:
            assert f"source dump {dump}" in line, (args, line)


# -- 13: logging ----------------------------------------------------------------------------------


def test_json_log_lines_with_iso_times_to_stderr_and_file_options_after_subcommand(
    schema_db, tmp_path
):
    log = tmp_path / "etl.log"
    env = {"ETL_PG_DSN": schema_db}
    proc = etl("status", "--log-format", "json", "--log-file", str(log), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and lines == log.read_text().splitlines()
    for ln in lines:
        rec = json.loads(ln)
        assert ISO.match(rec["time"]) and datetime.fromisoformat(rec["time"]).tzinfo, rec
        assert {"level", "logger", "message"} <= rec.keys()
    assert "PostgreSQL" in json.loads(lines[0])["message"]
    # an error is a JSON record too, the last line
    bad = etl("status", "--log-format=json", env={"ETL_PG_DSN": "postgresql://x@127.0.0.1:1/x"})
    assert bad.returncode == 2
    assert json.loads(bad.stderr.splitlines()[-1])["message"].startswith("error: cannot reach")


def test_text_log_lines_have_iso_times_with_zone_and_quiet_keeps_them_off(schema_db, tmp_path):
    env = {"ETL_PG_DSN": schema_db}
    proc = etl("status", env=env, cwd=tmp_path)
    stamp = first_line(proc).split(" ", 1)[0]
    assert ISO.match(stamp), proc.stderr
    for args in (["status", "--quiet"], ["-q", "status"], ["status", "--log-level", "warning"]):
        quiet = etl(*args, env=env, cwd=tmp_path)
        assert quiet.returncode == 0 and quiet.stderr == "", (args, quiet.stderr)
        assert "Runs" in quiet.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--log-level", "loud"],
        ["status", "--log-format", "xml"],
        ["status", "-q", "-v"],
        ["status", "--log-file", "/nonexistent-dir/etl.log"],
    ],
)
def test_bad_logging_options_are_one_line(args, tmp_path):
    proc = etl(*args, env={"XDG_DATA_HOME": str(tmp_path)}, cwd=tmp_path)
    assert_one_line_error(proc, args[-1].split("/")[-1] if "/" in args[-1] else args[-1])
    assert not list(tmp_path.glob("etl/projects/*")), "a server was started"


# -- 14: machine-readable output ------------------------------------------------------------------


def test_json_results_on_stdout_and_nothing_else(schema_db, tmp_path, dump):
    env = pg_env(schema_db, tmp_path, "r")
    src = f"dump:{dump}"
    migrated = etl("migrate", "--all", "--source", src, "--json", env=env, cwd=tmp_path)
    assert migrated.returncode in (0, 1), migrated.stderr
    summary = json.loads(migrated.stdout)
    assert summary["run_id"].startswith("migrate-") and summary["collections"]
    rec = etl("reconcile", "--all", "--source", src, "--json", env=env, cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    assert json.loads(rec.stdout)["run_id"].startswith("reconcile-")
    pre = etl("preflight", "--source", src, "--json", env=env, cwd=tmp_path)
    assert pre.returncode in (0, 1), pre.stderr
    assert "checks" in json.loads(pre.stdout) or json.loads(pre.stdout)
    status = json.loads(etl("status", "--json", env=env, cwd=tmp_path).stdout)
    assert {r["run_id"] for r in status["runs"]} >= {summary["run_id"]}
    one = etl("status", "--run", summary["run_id"], "--json", env=env, cwd=tmp_path)
    assert [r["run_id"] for r in json.loads(one.stdout)["runs"]] == [summary["run_id"]]
    # --watch of a run that has ended shows it once and returns
    watched = etl("status", "--run", summary["run_id"], "--watch", env=env, cwd=tmp_path)
    assert watched.returncode == 0 and watched.stdout.count("Checkpoints of the run") == 1
    plain = etl("status", env=env, cwd=tmp_path)
    assert max(len(ln) for ln in plain.stdout.splitlines()) <= 100, plain.stdout


def test_json_logs_and_json_result_together_every_line_an_object(schema_db, tmp_path, dump):
    env = pg_env(schema_db, tmp_path, "new-reports")
    args = ["migrate", "-c", "resumes", "--source", f"dump:{dump}", "--json"]
    proc = etl(*args, "--log-format", "json", env=env, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["collections"]
    records = [json.loads(ln) for ln in proc.stderr.splitlines()]  # none is plain text
    said = " ".join(r["message"] for r in records)
    assert "reports go to" in said and "run migrate-" in said


@pytest.mark.parametrize("command", ["status", "purge-rejects"])
def test_an_unknown_run_is_one_line(schema_db, command):
    proc = etl(command, "--run", "migrate-20260101T000000Z-abcdef", env={"ETL_PG_DSN": schema_db})
    assert_one_line_error(proc, "no run 'migrate-20260101T000000Z-abcdef'", "etl status")


# -- 15: option mistakes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["migrate", "--all", "--collection", "resumes", "--source", "dump:/x"],
        ["reconcile", "--all", "-c", "resumes"],
        ["purge-rejects", "--run", "last-night"],
        ["status", "--run", "x"],
    ],
)
def test_option_mistakes_are_refused_before_any_server_starts(args, tmp_path):
    proc = etl(*args, env={"XDG_DATA_HOME": str(tmp_path / "xdg")}, cwd=tmp_path)
    assert_one_line_error(proc)
    assert not (tmp_path / "xdg").exists(), "the embedded server was started"


def test_help_shows_no_bool_placeholders():
    import typer.main

    from etl.cli import app

    group = typer.main.get_command(app)
    paths = [[]] + [[name] for name in group.commands]
    paths += [["sync", name] for name in group.commands["sync"].commands]
    for path in paths:
        proc = etl(*path, "--help")
        assert proc.returncode == 0, path
        assert "<bool>" not in proc.stdout and "BOOLEAN" not in proc.stdout, path
