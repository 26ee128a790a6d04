"""What the test files share (fixtures live in conftest.py): the CLI as the operator runs it
(to the end, or as a running process), settings and environments for a test database, the
ArangoDB test server's environment and the application writing to it, a migrate run in process
(from a dump, or from the test server while the application writes), the reports a run wrote,
one-value queries and the migrated rows."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import psycopg

from etl.migrate import Migration
from etl.results import RunSummary
from etl.settings import Settings, load_settings
from etl.transform import row_id
from tests.datagen import generate
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, client_db, seed

REPO = Path(__file__).resolve().parent.parent

# the tables of the curated mapping, by document type
TABLES = {
    "resume": "resume_documents",
    "job": "job_documents",
    "optimization": "optimization_results",
    "research": "research_results",
}


# -- the CLI ----------------------------------------------------------------------------------
def process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any ETL_* variable (the operator's settings never leak into a
    test), plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env or {})
    return full


def etl(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m etl ARGS` in its own process, to the end, in process_env(env); `input` is
    what the operator types."""
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        capture_output=True,
        text=True,
        env=process_env(env),
        cwd=cwd or REPO,
        timeout=timeout,
        input=input,
    )


def etl_popen(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    text: bool = True,
    **popen: Any,
) -> subprocess.Popen[Any]:
    """`python -m etl ARGS` started and left running (to signal, kill or talk to), in
    process_env(env); stdout and stderr are pipes unless `popen` says otherwise."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args],
        env=process_env(env),
        cwd=cwd or REPO,
        text=text,
        **popen,
    )


# the documented shape of every JSON report (test_report_schema.py holds its own tests)
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())


def validate(path: str | Path) -> dict[str, Any]:
    """The JSON report at `path`, validated against docs/report.schema.json."""
    doc = json.loads(Path(path).read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def newest_report(reports: Path, prefix: str) -> dict[str, Any]:
    """The JSON report a run wrote last among `reports`/PREFIX*.json (names sort by time)."""
    newest = sorted(reports.glob(f"{prefix}*.json"))[-1]
    return json.loads(newest.read_text())


def last_line(text: str) -> str:
    """The last line of `text` that is not blank ('' when there is none)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def free_port() -> int:
    """A TCP port nobody listens on now (for --metrics-port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the first line of every command: which PostgreSQL and source it works on (a log record)
HEADER = re.compile(r"^\S+ INFO etl: (PostgreSQL|source) ")


def error_lines(stderr: str) -> list[str]:
    """stderr's lines without the first line that names the server and source."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not HEADER.match(ln)]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """An operator's error: exit status 2 and one line on stderr (no traceback) naming `needles`,
    besides the first line that names the server and source."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# -- settings ---------------------------------------------------------------------------------
def settings_for(dsn: str, tmp_path: Path, **migrate: Any) -> Settings:
    """Settings for a test database, reports under tmp_path, nothing read from the environment."""
    return load_settings(
        None,
        env={},
        overrides={
            "postgres": {"dsn": dsn},
            "migrate": {"reports_dir": str(tmp_path / "reports"), **migrate},
        },
    )


def pg_env(
    dsn: str, tmp_path: Path, reports: str | Path = "reports", **extra: str
) -> dict[str, str]:
    """The ETL_* variables of an etl process on `dsn`, reports under tmp_path/`reports` (an
    absolute `reports` is taken as it is), plus `extra`."""
    return {"ETL_PG_DSN": dsn, "ETL_REPORTS_DIR": str(tmp_path / reports), **extra}


def arango_env(server: Any, dsn: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an etl process that copies from the ArangoDB test server to `dsn`
    (root's password), plus `extra` ETL_* variables."""
    return process_env(
        {
            "ETL_ARANGO_URL": server.url,
            "ETL_ARANGO_DB": DATABASE,
            "ETL_ARANGO_USER": "root",
            "ETL_ARANGO_PASSWORD": ROOT_PASSWORD,
            **pg_env(dsn, tmp_path),
            **extra,
        }
    )


def arango_settings_for(server: Any, dsn: str, tmp_path: Path) -> Settings:
    """settings_for, reading from the ArangoDB test server."""
    return load_settings(None, env=arango_env(server, dsn, tmp_path))


def seed_dataset(server: Any, ds: Any) -> None:
    """Every collection of a datagen data set into the test server's database."""
    for collection in ds:
        seed(server, DATABASE, collection, ds[collection], edge=ds.types[collection] == "edge")


class App:
    """The application writing to ArangoDB through its HTTP API (python-arango)."""

    def __init__(self, server: Any):
        self.db = client_db(server)

    def col(self, name: str) -> Any:
        return self.db.collection(name)


# -- runs and rows ----------------------------------------------------------------------------
def migrate_while_writing(server: Any, dsn: str, tmp_path: Path, ds: Any, writes: Any) -> dict:
    """etl migrate --all from the test server seeded with `ds`, with `writes(app)` run once
    after the first committed batch; returns the environment of etl processes on that copy."""
    seed_dataset(server, ds)
    env = arango_env(server, dsn, tmp_path)
    settings = load_settings(None, env=env)
    app = App(server)
    done = {"n": 0}

    def on_progress(collection: str, n: int, total: Any) -> None:
        if collection == "resumes" and n > 0 and not done["n"]:
            done["n"] = 1
            writes(app)

    Migration(
        settings, all_=True, batch_size=20, on_progress=on_progress, retry_wait=lambda rs: 0
    ).run()
    assert done["n"], "the writes ran during the copy"
    return env


def migrated(server: Any, dsn: str, tmp_path: Path, n: int = 20, seed: int = 32) -> dict:
    """A fresh migrated target: `n` generated resumes (and the rest) seeded into the test
    server and copied to `dsn` (a WAL position recorded, so sync and cutover may follow);
    returns the environment of etl processes on that copy."""
    return migrate_while_writing(server, dsn, tmp_path, generate(n, seed=seed), lambda app: None)


def run(dsn: str, tmp_path: Path, source: str, **kw: Any) -> RunSummary:
    """An `etl migrate` in this process (no retry waits)."""
    m = Migration(settings_for(dsn, tmp_path), source=source, retry_wait=lambda rs: 0, **kw)
    return m.run()


def scalar(dsn: str, q: str, *args: Any) -> Any:
    """The one value of query `q` with positional parameters `args`."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(q, args).fetchone()
        assert row is not None, q
        return row[0]


def key_row(dsn: str, table: str, collection: str, key: str) -> Any:
    """(the row as jsonb,) of `table` for document `collection`/`key`, or None."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"select to_jsonb(t) from {table} t where id = %s", (row_id(collection, key),)
        ).fetchone()


def db_rows(dsn: str) -> dict[str, dict[str, Any]]:
    """Every migrated row as jsonb, keyed by '<collection>/<_key>'."""
    out = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("set timezone = 'UTC'")
        for table in TABLES.values():
            for (row,) in conn.execute(f"select to_jsonb(t) from {table} t"):
                arango = row["metadata"].get("arango", {})
                out[f"{arango.get('collection')}/{arango.get('_key')}"] = row
    return out


def strip_volatile(row: dict[str, Any]) -> dict[str, Any]:
    """A row without what differs between two runs of the same copy (metadata.etl, the edges)."""
    row = dict(row)
    meta = dict(row.get("metadata") or {})
    meta.pop("etl", None)
    meta.pop("edges", None)  # written by the job_research edges, checked on their own
    row["metadata"] = meta
    return row


def kill_after_batches(
    proc: subprocess.Popen[Any], dsn: str, batches: int, timeout: float = 60.0
) -> None:
    """SIGKILL a running `etl migrate` process once it has committed `batches` batches."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "select coalesce(sum(batches), 0) from etl_checkpoints"
                ).fetchone()
            if row is not None and row[0] >= batches:
                break
        except psycopg.Error:
            pass  # the run tables may be locked or not yet written
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# sql/014: rows whose stored full-text vector is missing, orphaned or not what 004's function
# gives for the row's current text (0 when the search tables are right)
# the loaded tables (with rows) that have no planner statistics: a finished migrate analyzes
# every table it wrote, the search tables with them
NOT_ANALYZED = """
SELECT coalesce(array_agg(t ORDER BY t), '{}') FROM unnest(ARRAY['resume_documents',
       'job_documents', 'optimization_results', 'research_results', 'resume_documents_search',
       'job_documents_search', 'arango.task_results']) t
 WHERE to_regclass(t) IS NOT NULL
   AND (SELECT reltuples FROM pg_class WHERE oid = to_regclass(t)) <> 0
   AND NOT EXISTS (SELECT 1 FROM pg_statistic WHERE starelid = to_regclass(t))
"""

SEARCH_VECTORS_WRONG = """
SELECT (SELECT count(*) FROM resume_documents r
          FULL JOIN resume_documents_search s ON s.id = r.id
         WHERE r.id IS NULL OR s.id IS NULL
            OR s.search_vector IS DISTINCT FROM resume_search_vector(r.parsed_data))
     + (SELECT count(*) FROM job_documents j
          FULL JOIN job_documents_search s ON s.id = j.id
         WHERE j.id IS NULL OR s.id IS NULL
            OR s.search_vector IS DISTINCT FROM job_search_vector(j.title, j.company, j.parsed_data))
"""
