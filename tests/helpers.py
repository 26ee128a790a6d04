"""What the test files share (fixtures live in conftest.py): the CLI as the operator runs it,
settings for a test database, the ArangoDB test server's environment, a migrate run in process,
one-value queries and the migrated rows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from etl.migrate import Migration
from etl.results import RunSummary
from etl.settings import Settings, load_settings
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed

REPO = Path(__file__).resolve().parent.parent

# the tables of the curated mapping, by document type
TABLES = {
    "resume": "resume_documents",
    "job": "job_documents",
    "optimization": "optimization_results",
    "research": "research_results",
}


# -- the CLI ----------------------------------------------------------------------------------
def etl(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python -m etl ARGS` in its own process: this environment without any ETL_* variable
    (the operator's settings never leak into a test), plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd or REPO,
        timeout=timeout,
    )


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


def arango_env(server: Any, dsn: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an etl process that copies from the ArangoDB test server to `dsn`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    env.update(
        {
            "ETL_ARANGO_URL": server.url,
            "ETL_ARANGO_DB": DATABASE,
            "ETL_ARANGO_USER": "root",
            "ETL_ARANGO_PASSWORD": ROOT_PASSWORD,
            "ETL_PG_DSN": dsn,
            "ETL_REPORTS_DIR": str(tmp_path / "reports"),
        }
    )
    return env


def arango_settings_for(server: Any, dsn: str, tmp_path: Path) -> Settings:
    """settings_for, reading from the ArangoDB test server."""
    return load_settings(None, env=arango_env(server, dsn, tmp_path))


def seed_dataset(server: Any, ds: Any) -> None:
    """Every collection of a datagen data set into the test server's database."""
    for collection in ds:
        seed(server, DATABASE, collection, ds[collection], edge=ds.types[collection] == "edge")


# -- runs and rows ----------------------------------------------------------------------------
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
