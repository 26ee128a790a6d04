"""Never a misleading green (issue 25, items 1-9): what `etl` prints and returns is true. Each
test runs the real `etl` process as an operator would and reads its output and exit status."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.datagen import generate, write_dump
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed
from tests.helpers import REPO, etl, kill_after_batches


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    """A small ATSPro dump with every bad-input case (so a first migrate keeps rejects)."""
    path = tmp_path_factory.mktemp("dump") / "atspro"
    write_dump(path, generate(20, seed=3, bad=True), gzip=False)
    return path


@pytest.fixture(scope="module")
def partial_dump(tmp_path_factory) -> Path:
    """The same shape without the jobs collection (a partial dump)."""
    path = tmp_path_factory.mktemp("partial") / "atspro"
    write_dump(path, generate(5, seed=3), gzip=False)
    for p in path.glob("jobs_*"):
        p.unlink()
    return path


def env_of(dsn: str, tmp_path: Path, **extra) -> dict:
    return {"ETL_PG_DSN": dsn, "ETL_REPORTS_DIR": str(tmp_path / "reports"), **extra}


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def one_row(dsn: str, query: str, *params):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchone()


# -- 1. a source without the mapped collections --------------------------------------------------


@pytest.mark.parametrize("command", ["migrate", "reconcile"])
def test_a_dump_without_mapped_collections_stops_naming_them(
    partial_dump, schema_db, tmp_path, command
):
    proc = etl(
        command, "--all", "--source", f"dump:{partial_dump}", env=env_of(schema_db, tmp_path)
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = last_line(proc.stderr)
    assert err.startswith("error: collection 'jobs' does not exist"), err
    assert "it has: documents, job_research, resumes, task_results" in err
    assert "--allow-missing" in err
    assert "everything matches" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_wrong_dump_loads_nothing_and_says_so(schema_db, tmp_path):
    other = tmp_path / "shop"
    write_dump(other, {"orders": [{"_key": "1", "total": 3}]}, gzip=False)
    proc = etl("migrate", "--all", "--source", f"dump:{other}", env=env_of(schema_db, tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "it has: orders" in proc.stderr and "resumes" in proc.stderr
    assert one_row(schema_db, "select count(*) from etl_runs where command = 'migrate'")[0] == 0


def test_an_arango_database_without_the_collections_stops(arango_server, schema_db, tmp_path):
    seed(arango_server, DATABASE, "resumes", [{"_key": "1", "user_id": "u"}])
    env = env_of(
        schema_db,
        tmp_path,
        ETL_ARANGO_URL=arango_server.url,
        ETL_ARANGO_DB=DATABASE,
        ETL_ARANGO_USER="root",
        ETL_ARANGO_PASSWORD=ROOT_PASSWORD,
    )
    for command in ("migrate", "reconcile"):
        proc = etl(command, "--all", env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "'jobs'" in proc.stderr and "it has: resumes" in proc.stderr, proc.stderr


def test_allow_missing_goes_on_and_reconcile_never_calls_it_a_match(
    partial_dump, schema_db, tmp_path
):
    env = env_of(schema_db, tmp_path)
    src = f"dump:{partial_dump}"
    # the edges to the missing jobs are rejected (dangling): the limit lets them be
    proc = etl(
        "migrate", "--all", "--source", src, "--allow-missing", "--max-rejects", "100%", env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "left out (--allow-missing): jobs" in proc.stderr
    proc = etl("reconcile", "--all", "--source", src, "--allow-missing", env=env)
    row = [ln for ln in proc.stdout.splitlines() if ln.startswith("jobs ")]
    assert row and "not in source" in row[0], proc.stdout
    verdict = last_line(proc.stdout)
    assert "NOT CHECKED, not in the source: jobs" in verdict, verdict
    from tests.test_report_schema import validate

    doc = validate(next((tmp_path / "reports").glob("reconcile-*.json")))
    assert doc["not_in_source"] == ["jobs"] and "NOT CHECKED" in doc["verdict"]


def test_a_failed_reconcile_never_says_everything_matches(dump, schema_db, tmp_path):
    env = env_of(schema_db, tmp_path)
    etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    trunc = tmp_path / "trunc"
    write_dump(trunc, generate(20, seed=3, bad=True), gzip=False)
    data = next(trunc.glob("task_results_*.data.json"))  # the last collection compared
    data.write_bytes(data.read_bytes()[:-40])  # it ends in the middle of a record
    proc = etl("reconcile", "--all", "--source", f"dump:{trunc}", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "everything matches" not in proc.stdout
    assert "failed, no verdict" in last_line(proc.stdout), proc.stdout


# -- 2. an unwritable reports directory ----------------------------------------------------------


def test_an_unwritable_reports_dir_prints_the_verdict_then_fails(dump, schema_db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    env = env_of(schema_db, tmp_path, ETL_REPORTS_DIR=str(blocker / "reports"))
    for command in ("migrate", "reconcile"):
        proc = etl(command, "--all", "--source", f"dump:{dump}", env=env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "source_count" in proc.stdout  # the summary table
        assert "NO REPORT" in last_line(proc.stdout), proc.stdout
        err = last_line(proc.stderr)
        assert err.startswith("error: the report of run ") and str(blocker) in err, err
        assert "Traceback" not in proc.stderr
        # the work is saved: the run's end is recorded
        state = one_row(
            schema_db,
            "select state from etl_runs where command = %s order by started_at desc limit 1",
            command,
        )[0]
        assert state == "finished"
    proc = etl("preflight", "--source", f"dump:{dump}", env=env)
    assert proc.returncode == 2, proc.stdout
    line = [ln for ln in proc.stdout.splitlines() if "reports.directory" in ln]
    assert line and "cannot write there" in line[0], proc.stdout


def test_preflight_says_where_reports_go(dump, schema_db, tmp_path):
    proc = etl("preflight", "--source", f"dump:{dump}", env=env_of(schema_db, tmp_path))
    line = [ln for ln in proc.stdout.splitlines() if "reports.directory" in ln]
    assert line and "will be created" in line[0], proc.stdout
    assert not (tmp_path / "reports" / ".etl-preflight").exists()


# -- 3. a sampled reconcile in etl status --------------------------------------------------------


def test_status_shows_a_sampled_reconcile_as_sampled(dump, schema_db, tmp_path):
    env = env_of(schema_db, tmp_path)
    etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    proc = etl("reconcile", "--all", "--source", f"dump:{dump}", "--sample", "50", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sampled 50%" in last_line(proc.stdout)
    status = etl("status", env=env).stdout
    rows = status.split("Latest reconcile per collection")[1]
    assert "match (sampled 50%)" in rows, rows
    assert not re.search(r"\bmatch\s+\d", rows), rows  # never a bare match


# -- 4 and 5. runs that are running, or were killed ----------------------------------------------


def fake_run(dsn: str, run_id: str, *, pid: int, host: str | None = None, age: float = 0) -> None:
    """An etl_runs row as a migrate process leaves it while it runs (or when it was killed)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into etl_runs (run_id, command, state, started_at, heartbeat_at, options,"
            " host, pid) values (%s, 'migrate', 'running', now() - interval '1 hour',"
            " now() - make_interval(secs => %s), %s, %s, %s)",
            (
                run_id,
                age,
                json.dumps({"collections": ["resumes", "jobs"], "source_spec": "arangodb"}),
                host or socket.gethostname(),
                pid,
            ),
        )


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_reconcile_refuses_beside_a_live_migrate(dump, schema_db, tmp_path):
    env = env_of(schema_db, tmp_path)
    fake_run(schema_db, "migrate-live", pid=os.getpid())  # this test process: alive
    args = ("reconcile", "--collection", "jobs", "--source", f"dump:{dump}")
    proc = etl(*args, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = last_line(proc.stderr)
    assert "migrate-live" in err and "jobs" in err and "--while-running" in err, err
    assert f"pid {os.getpid()}" in err
    proc = etl(*args, "--while-running", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    assert "run reconcile-" in last_line(proc.stdout)


def test_reconcile_is_not_stopped_by_a_dead_migrate(dump, schema_db, tmp_path):
    fake_run(schema_db, "migrate-dead", pid=dead_pid())
    fake_run(schema_db, "migrate-far-silent", pid=1, host="elsewhere.example", age=600)
    proc = etl(
        "reconcile",
        "--collection",
        "jobs",
        "--source",
        f"dump:{dump}",
        env=env_of(schema_db, tmp_path),
    )
    assert proc.returncode in (0, 1), proc.stderr


def test_status_shows_stale_runs_as_interrupted(schema_db, tmp_path):
    fake_run(schema_db, "migrate-killed-here", pid=dead_pid())
    fake_run(schema_db, "migrate-silent-far", pid=4242, host="elsewhere.example", age=600)
    fake_run(schema_db, "migrate-busy-far", pid=4242, host="elsewhere.example", age=1)
    out = etl("status", env=env_of(schema_db, tmp_path)).stdout
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("migrate-")}
    assert (
        " interrupted " in rows["migrate-killed-here"] and "is gone" in rows["migrate-killed-here"]
    )
    assert (
        " interrupted " in rows["migrate-silent-far"]
        and "no heartbeat" in rows["migrate-silent-far"]
    )
    assert " running " in rows["migrate-busy-far"], rows


def test_resume_refuses_at_once_a_run_whose_owner_lives(schema_db, tmp_path):
    fake_run(schema_db, "migrate-owned", pid=os.getpid())
    proc = etl("migrate", "--resume", "--collection", "jobs", env=env_of(schema_db, tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = last_line(proc.stderr)
    assert "run migrate-owned is still running in another etl migrate" in err, err
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in err
    # nothing was taken over
    assert one_row(schema_db, "select pid from etl_runs where run_id = 'migrate-owned'")[0] == (
        os.getpid()
    )


def test_a_killed_migrate_is_interrupted_and_resumable(tmp_path, schema_db):
    src = tmp_path / "big"
    write_dump(src, generate(400, seed=5), gzip=False)
    env = env_of(schema_db, tmp_path)
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etl",
            "migrate",
            "--all",
            "--source",
            f"dump:{src}",
            "--batch",
            "20",
        ],
        env={**full, **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_after_batches(proc, schema_db, 3)
    assert proc.returncode == -signal.SIGKILL
    run_id, host, pid = one_row(
        schema_db, "select run_id, host, pid from etl_runs where command = 'migrate'"
    )
    assert (host, pid) == (socket.gethostname(), proc.pid)
    out = etl("status", env=env).stdout
    row = [ln for ln in out.splitlines() if ln.startswith(run_id)][0]
    assert " interrupted " in row and f"process {proc.pid}" in row, row
    resumed = etl("migrate", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run {run_id}: finished" in last_line(resumed.stdout)


def test_the_heartbeat_beats_while_a_run_is_busy(schema_db):
    from etl.owners import Heartbeat

    fake_run(schema_db, "migrate-beating", pid=os.getpid(), age=120)
    beat = Heartbeat(schema_db, "migrate-beating", every=0.05).start()
    try:
        import time

        deadline = time.monotonic() + 10
        age = 120.0
        while time.monotonic() < deadline and age > 5:
            time.sleep(0.05)
            age = one_row(
                schema_db,
                "select extract(epoch from now() - heartbeat_at) from etl_runs where run_id = %s",
                "migrate-beating",
            )[0]
    finally:
        beat.stop()
    assert age < 5


# -- 6. --max-rejects ----------------------------------------------------------------------------


def test_max_rejects_counts_only_this_runs_new_rejects(dump, schema_db, tmp_path):
    env = env_of(schema_db, tmp_path)
    src = ("--all", "--source", f"dump:{dump}")
    first = etl("migrate", *src, env=env)
    assert first.returncode == 1, first.stderr
    line = last_line(first.stdout)
    m = re.search(
        r"TOO MANY REJECTS: (\d+) new rejects \(limit 0\); report (\S+\.md) and \S+\.json$", line
    )
    assert m and int(m.group(1)) > 0, line
    assert Path(m.group(2)).is_file()
    written = [ln for ln in first.stdout.splitlines() if ln.startswith("reports written: ")]
    assert written, first.stdout
    for p in written[0].removeprefix("reports written: ").split(", "):
        assert Path(p).is_file(), p
    # a rerun that changed nothing rejects the same documents: nothing new, exit 0
    again = etl("migrate", *src, env=env)
    assert again.returncode == 0, again.stdout
    assert f"0 new rejects (limit 0), {m.group(1)} rejected by earlier runs too" in last_line(
        again.stdout
    )


def test_max_rejects_takes_a_percentage(dump, schema_db, tmp_path):
    proc = etl(
        "migrate",
        "--all",
        "--source",
        f"dump:{dump}",
        "--max-rejects",
        "50%",
        env=env_of(schema_db, tmp_path),
    )
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"\d+ new rejects \(limit 50% of \d+ read = \d+\)", last_line(proc.stdout))


def test_max_rejects_refuses_a_malformed_limit(schema_db, tmp_path):
    proc = etl("migrate", "--all", "--max-rejects", "lots", env=env_of(schema_db, tmp_path))
    assert proc.returncode == 2
    assert "--max-rejects" in proc.stderr and "expected a count" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# -- 7. every flag a message names exists --------------------------------------------------------

# flags of other programs that messages quote (with the program's name beside them)
FOREIGN_FLAGS = {
    "--dump-vpack": "arangodump",
    "--overwrite": "arangodump",
    "--encryption": "arangorestore --encryption.keyfile",
    "--variant": "bench/run.py",
    "--cleanup-duplicate-attributes": "arangorestore",
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def cli_flags() -> set[str]:
    import typer.main

    from etl.cli import app

    found: set[str] = set()

    def walk(cmd) -> None:
        for param in cmd.params:
            found.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def test_every_flag_named_in_a_message_exists():
    flags = cli_flags()
    assert {"--max-rejects", "--allow-missing", "--allow-truncated", "--while-running"} <= flags
    unknown = {}
    for path in sorted((REPO / "etl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if "var(--" in node.value:  # CSS custom properties of the HTML reports
                continue
            for flag in FLAG.findall(node.value):
                if flag not in flags and flag not in FOREIGN_FLAGS:
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    unknown.setdefault(flag, []).append(where)
    assert not unknown, f"messages name flags no command has: {unknown}"


def test_the_truncated_dump_hint_names_a_flag_that_works(schema_db, tmp_path):
    src = tmp_path / "cut"
    write_dump(src, generate(5, seed=2), gzip=False)
    data = next(src.glob("jobs_*.data.json"))
    data.write_bytes(data.read_bytes()[:-30])
    env = env_of(schema_db, tmp_path)
    proc = etl("migrate", "--all", "--source", f"dump:{src}", env=env)
    assert proc.returncode == 2 and "--allow-truncated" in proc.stderr, proc.stderr
    proc = etl("migrate", "--all", "--source", f"dump:{src}", "--allow-truncated", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "incomplete tail was dropped" in proc.stderr


# -- 8. make demo ------------------------------------------------------------------------------


def test_demo_always_reconciles(schema_db, tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    env.update(
        env_of(schema_db, tmp_path),
        DEMO_RESUMES="30",
        DEMO_DUMP=str(tmp_path / "demo-dump"),
        DEMO_ETL=str(bin_dir / "etl"),
        DEMO_PYTHON=sys.executable,
    )
    proc = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== etl reconcile" in proc.stdout and "run reconcile-" in proc.stdout, proc.stdout


def test_no_script_guards_with_grep_q_under_pipefail():
    for script in (REPO / "scripts").glob("*.sh"):
        text = script.read_text(encoding="utf-8")
        if "pipefail" in text:
            code = [ln.split("#")[0] for ln in text.splitlines()]
            assert not [ln for ln in code if re.search(r"\|\s*grep\s+-\w*q", ln)], script


# -- 9. what the reports say ---------------------------------------------------------------------


def test_reports_name_the_schema_version_and_fresh_edges_are_inserted(dump, schema_db, tmp_path):
    from etl.resources import schema_version

    env = env_of(schema_db, tmp_path)
    proc = etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    report = json.loads(next((tmp_path / "reports").glob("migrate-*.json")).read_text())
    assert report["schema_version"] == schema_version(), report["schema_version"]
    md = next((tmp_path / "reports").glob("migrate-*.md")).read_text()
    assert f"schema version: {schema_version()}," in md
    edges = next(c for c in report["collections"] if c["collection"] == "job_research")
    assert edges["counts"]["inserted"] > 0 and edges["counts"]["updated"] == 0, edges["counts"]
    row = [ln for ln in proc.stdout.splitlines() if ln.startswith("job_research")][0]
    assert row.split()[4] != "0" and row.split()[5] == "0", row  # inserted, updated


def test_reconcile_counts_an_extra_row_once_and_a_real_rate(dump, schema_db, tmp_path):
    env = env_of(schema_db, tmp_path)
    etl("migrate", "--all", "--source", f"dump:{dump}", env=env)
    with psycopg.connect(schema_db) as conn:  # a row no source document explains
        conn.execute(
            "insert into job_documents (id, user_id, title, status, parsed_data, metadata)"
            " select gen_random_uuid(), user_id, title, status, parsed_data,"
            " jsonb_set(metadata, '{arango,key}', '\"ghost\"') from job_documents limit 1"
        )
    proc = etl("reconcile", "--collection", "jobs", "--source", f"dump:{dump}", env=env)
    assert proc.returncode == 1, proc.stderr
    row = [ln for ln in proc.stdout.splitlines() if ln.startswith("jobs ")][0].split()
    header = [ln for ln in proc.stdout.splitlines() if ln.startswith("collection")][0].split()
    cells = dict(zip(header, row))
    assert cells["extra"] == "1" and cells["balanced"] == "ok", proc.stdout
    assert cells["loaded"] == cells["checked"], cells
    rates = re.findall(r"jobs: (\d+)/\d+ documents, (\d+) docs/s", proc.stderr)
    assert any(int(done) > 0 and int(rate) > 0 for done, rate in rates), proc.stderr
