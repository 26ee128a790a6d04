"""etl preflight as the operator runs it (the CLI as a process, real PostgreSQL, the ArangoDB
test server over HTTP, a real PgBouncer): a ready setup exits 0; a wrong ArangoDB password, an
extension the role cannot create, a missing privilege and a PgBouncer that would cut etl's lock
transactions each block the run (exit 2) and are named in the terminal and in the report; a
pooler whose admin console is closed is a warning (exit 1). No password is ever printed or
written."""

from __future__ import annotations

import json
import re
import socket
import stat
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.datagen import generate
from tests.fakearango.fixtures import DATABASE, seed
from tests.fakearango.server import FakeArango
from tests.helpers import etl, pg_env
from tests.pgbouncer import pgbouncer
from tests.secrets_scan import scan_for_secrets

ARANGO_PASSWORD = "pf-Arango-S3cret-7d41"
WRONG_PASSWORD = "pf-Wrong-S3cret-93c2"
# In every DSN: the test servers trust the login, so libpq never needs it, but etl must not
# print it either.
PG_PASSWORD = "pf-Pg-S3cret-5e08"
SECRETS = (ARANGO_PASSWORD, WRONG_PASSWORD, PG_PASSWORD)

REPORT_NAME = re.compile(r"^preflight-\d{8}T\d{6}Z-[0-9a-f]{6}\.(json|md|html)$")


@pytest.fixture(scope="module")
def arango():
    """An ArangoDB test server with its own root password and a small generated data set."""
    server = FakeArango(ARANGO_PASSWORD, collation="icu").start()
    server.create_database(DATABASE)
    ds = generate(30, seed=41)
    for collection in ds:
        seed(
            server,
            DATABASE,
            collection,
            ds[collection],
            edge=ds.types[collection] == "edge",
            password=ARANGO_PASSWORD,
        )
    server.counts = ds.counts
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dump(dump_of):
    return dump_of(30, seed=42)


def with_password(dsn: str) -> str:
    return make_conninfo(dsn, password=PG_PASSWORD)


def preflight(
    tmp_path: Path,
    dsn: str,
    *args: str,
    arango=None,
    password=ARANGO_PASSWORD,
    user: str = "root",
):
    """Run `etl preflight` as the operator would; returns (process, JSON report)."""
    reports = tmp_path / f"reports-{uuid.uuid4().hex[:6]}"
    env = pg_env(with_password(dsn), tmp_path, reports)
    if arango is not None:
        env.update(
            {
                "ETL_ARANGO_URL": arango.url,
                "ETL_ARANGO_DB": DATABASE,
                "ETL_ARANGO_USER": user,
                "ETL_ARANGO_PASSWORD": password,
            }
        )
    proc = etl("preflight", *args, env=env, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    leaks = scan_for_secrets(
        SECRETS, texts={"stdout": proc.stdout, "stderr": proc.stderr}, paths=[reports]
    )
    assert leaks == [], leaks
    files = sorted(reports.iterdir())
    assert [f.suffix for f in files] == [".html", ".json", ".md"], files
    for f in files:
        assert REPORT_NAME.match(f.name), f.name
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    doc = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert doc["id"] == files[0].stem and doc["id"] in proc.stdout
    assert proc.returncode == {"ready": 0, "warnings": 1, "blocked": 2}[doc["status"]]
    return proc, doc


def checks(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def by_status(doc: dict, *statuses: str) -> list[str]:
    return [c["name"] for c in doc["checks"] if c["status"] in statuses]


def terminal_line(proc, name: str) -> str:
    """The table row of check `name` (one line when stdout is not a terminal)."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.split()[:1] == [name]]
    assert len(lines) == 1, proc.stdout
    return lines[0]


def test_a_ready_setup_exits_0_and_its_report_says_ready(schema_db, arango, tmp_path):
    proc, doc = preflight(tmp_path, schema_db, arango=arango)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["status"] == "ready"
    assert set(doc) >= {
        "report_schema_version",
        "kind",
        "created_at",
        "etl_version",
        "target",
        "source",
        "status",
        "checks",
    }
    assert doc["kind"] == "preflight" and doc["report_schema_version"] == 1
    assert by_status(doc, "warn", "fail") == []
    for c in doc["checks"]:
        assert set(c) == {"name", "status", "detail", "data"} and c["status"] in ("ok", "info")
    got = checks(doc)
    for name in (
        "postgres.connection",
        "postgres.version",
        "extension.pg_trgm",
        "extension.bloom",
        "schema",
        "privileges",
        "tables.owner",
        "pooler",
        "mapping",
        "source.connection",
        "source.wal",
    ):
        assert got[name]["status"] == "ok", got[name]
    assert got["source.wal"]["data"]["tick"] > 0 and "readable" in got["source.wal"]["detail"]
    assert got["pooler"]["data"]["detected"] is False
    assert got["setting.synchronous_commit"]["data"]["value"] == "on"
    assert arango.url.split("//")[1] in doc["source"] and "root" in doc["source"]
    assert "password=***" in doc["target"]  # the DSN's password, masked
    # every mapped collection with the count the source has; the unmapped one listed
    names = ("resumes", "jobs", "documents", "job_research", "task_results")  # the last generic
    for name in names:
        assert got[f"collection.{name}"]["data"]["count"] == arango.counts[name]
        assert f"{arango.counts[name]:,} documents" in terminal_line(proc, f"collection.{name}")
    assert "every collection is mapped" in got["source.unmapped"]["detail"]
    mapped = sum(arango.counts[n] for n in names)
    estimate = got["estimate.load"]["data"]
    assert estimate["documents"] == mapped and estimate["basis"] == "default"
    assert "5,000 docs/s" in got["estimate.load"]["detail"]
    assert "check it" in got["estimate.disk"]["detail"]
    assert f"preflight {doc['id']}: ready" in proc.stdout

    # after a finished migrate, the estimate uses what this database measured
    env = pg_env(
        schema_db,
        tmp_path,
        "migrate",
        ETL_ARANGO_URL=arango.url,
        ETL_ARANGO_PASSWORD=ARANGO_PASSWORD,
    )
    migrated = etl("migrate", "--all", env=env)
    assert migrated.returncode == 0, migrated.stderr
    run_id = re.search(r"run (migrate-\S+): finished", migrated.stdout).group(1)
    proc, doc = preflight(tmp_path, schema_db, arango=arango)
    assert proc.returncode == 0, proc.stdout
    estimate = checks(doc)["estimate.load"]
    assert estimate["data"]["basis"] == "measured" and estimate["data"]["measured_run"] == run_id
    assert run_id in estimate["detail"]


def test_a_wrong_arango_password_blocks(schema_db, arango, tmp_path):
    proc, doc = preflight(tmp_path, schema_db, arango=arango, password=WRONG_PASSWORD)
    assert proc.returncode == 2 and doc["status"] == "blocked"
    assert by_status(doc, "fail") == ["source.connection"]
    got = checks(doc)
    assert "wrong username or password" in got["source.connection"]["detail"]
    assert "wrong username or password" in terminal_line(proc, "source.connection")
    # what needs the source says it was skipped; the PostgreSQL checks all ran
    for name in ("collection.resumes", "collection.job_research", "source.unmapped"):
        assert got[name]["detail"] == "skipped: the source could not be read"
    assert got["estimate.load"]["detail"].startswith("skipped:")
    assert got["privileges"]["status"] == "ok" and got["pooler"]["status"] == "ok"


def test_a_user_who_cannot_read_the_wal_is_a_warning(schema_db, arango, tmp_path):
    arango.add_user("reader", ARANGO_PASSWORD, [DATABASE], admin=False)
    proc, doc = preflight(tmp_path, schema_db, arango=arango, user="reader")
    assert proc.returncode == 1 and by_status(doc, "warn", "fail") == ["source.wal"]
    detail = checks(doc)["source.wal"]["detail"]
    assert "not readable" in detail and "administrate access to _system" in detail


def test_an_extension_the_owner_cannot_create_blocks(
    pg_admin_dsn,
    new_role,  # noqa: F811
    arango,
    tmp_path,
):
    """A managed server's database owner is no superuser: bloom cannot be created by it."""
    name = f"etl_test_{uuid.uuid4().hex[:12]}"
    db = make_conninfo(pg_admin_dsn, dbname=name)
    owner = new_role(db)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner "{owner}"')
    try:
        proc, doc = preflight(tmp_path, make_conninfo(db, user=owner), arango=arango)
        assert proc.returncode == 2 and doc["status"] == "blocked"
        got = checks(doc)
        bloom = got["extension.bloom"]
        assert bloom["status"] == "fail", bloom
        assert "superuser" in bloom["detail"] and "CREATE EXTENSION bloom" in bloom["detail"]
        assert "CREATE EXTENSION bloom" in terminal_line(proc, "extension.bloom")
        # trusted: the database owner may create it, and apply-schema will
        assert got["extension.pg_trgm"]["status"] == "warn"
        assert "apply-schema will create it" in got["extension.pg_trgm"]["detail"]
        assert got["schema"]["status"] == "fail" and "apply-schema" in got["schema"]["detail"]
        assert got["privileges"]["detail"].startswith("skipped:")
        assert set(by_status(doc, "fail")) == {"extension.bloom", "schema"}
        assert got["source.connection"]["status"] == "ok"
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def test_a_loader_lacking_one_privilege_is_blocked_naming_it(
    schema_db,
    new_role,  # noqa: F811
    arango,
    tmp_path,
):
    loader = new_role(schema_db)
    printed = etl("grants", "--role", loader, "--dsn", schema_db)
    assert printed.returncode == 0, printed.stderr
    with psycopg.connect(schema_db, autocommit=True) as conn:
        for statement in printed.stdout.splitlines():
            conn.execute(statement)
    as_loader = make_conninfo(schema_db, user=loader)

    # everything `etl grants` prints: ready but for the owner's index builds (a warning)
    proc, doc = preflight(tmp_path, as_loader, arango=arango)
    assert proc.returncode == 1, proc.stdout
    assert by_status(doc, "warn", "fail") == ["tables.owner"]
    assert "deferred index builds are skipped" in checks(doc)["tables.owner"]["detail"]
    assert checks(doc)["privileges"]["status"] == "ok"

    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute(f'revoke insert on job_documents from "{loader}"')
    proc, doc = preflight(tmp_path, as_loader, arango=arango)
    assert proc.returncode == 2 and doc["status"] == "blocked"
    privileges = checks(doc)["privileges"]
    assert privileges["status"] == "fail"
    assert privileges["data"]["missing"] == ["INSERT on public.job_documents"]
    assert f"etl grants --role {loader}" in privileges["detail"]
    line = terminal_line(proc, "privileges")
    assert "INSERT on public.job_documents" in line and f"etl grants --role {loader}" in line
    assert by_status(doc, "fail") == ["privileges"]


def test_pgbouncer_that_would_cut_the_lock_transactions_blocks(
    pg_admin_dsn, schema_db, dump, tmp_path
):
    dbname = conninfo_to_dict(schema_db)["dbname"]
    with pgbouncer(pg_admin_dsn, "transaction", idle_transaction_timeout=5) as via:
        proc, doc = preflight(tmp_path, via(dbname), "--source", f"dump:{dump}")
    assert proc.returncode == 2 and doc["status"] == "blocked"
    assert by_status(doc, "fail") == ["pooler"]
    pooler = checks(doc)["pooler"]
    assert pooler["data"]["detected"] is True and pooler["data"]["admin_console"] is True
    assert pooler["data"]["pool_mode"] == "transaction"
    assert pooler["data"]["idle_transaction_timeout"] == 5
    assert "idle_transaction_timeout = 5" in pooler["detail"]
    assert "set idle_transaction_timeout = 0" in pooler["detail"]
    assert "idle_transaction_timeout = 5" in terminal_line(proc, "pooler")
    # the rest was read through PgBouncer
    assert checks(doc)["privileges"]["status"] == "ok"
    assert checks(doc)["collection.resumes"]["status"] == "ok"


def test_a_pooler_with_a_closed_admin_console_is_a_warning(pg_admin_dsn, schema_db, dump, tmp_path):
    dbname = conninfo_to_dict(schema_db)["dbname"]
    with pgbouncer(pg_admin_dsn, "transaction", admin_users="someone_else") as via:
        proc, doc = preflight(tmp_path, via(dbname), "--source", f"dump:{dump}")
    assert proc.returncode == 1 and doc["status"] == "warnings", proc.stdout
    assert by_status(doc, "warn", "fail") == ["pooler"]
    pooler = checks(doc)["pooler"]
    assert pooler["data"]["detected"] is True and pooler["data"]["admin_console"] is False
    assert "mode unknown" in pooler["detail"] and "idle_transaction_timeout = 0" in pooler["detail"]
    assert "mode unknown" in terminal_line(proc, "pooler")


def test_an_unreachable_postgres_skips_what_needs_it_and_checks_the_rest(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    missing = tmp_path / "<b>no-such-dump</b>"
    proc, doc = preflight(
        tmp_path, f"postgresql://etl@127.0.0.1:{port}/atspro", "--source", f"dump:{missing}"
    )
    assert proc.returncode == 2 and doc["status"] == "blocked"
    got = checks(doc)
    assert got["postgres.connection"]["status"] == "fail"
    assert "cannot reach PostgreSQL at 127.0.0.1" in got["postgres.connection"]["detail"]
    skipped = ("postgres.version", "extension.bloom", "schema", "privileges", "pooler")
    for name in (*skipped, "setting.synchronous_commit", "setting.max_wal_size"):
        assert got[name]["status"] == "info", got[name]
        assert got[name]["detail"] == "skipped: no PostgreSQL connection"
        assert got[name]["data"] == {"skipped": True}
    # the source was still checked: it names the missing dump
    assert got["source.connection"]["status"] == "fail"
    assert "no-such-dump" in got["source.connection"]["detail"]
    assert got["mapping"]["status"] == "ok"
    # every value in the HTML page is escaped
    page = next(Path(tmp_path).glob("reports-*/*.html")).read_text()
    assert "<b>no-such-dump" not in page and "&lt;b&gt;no-such-dump" in page
    assert "<script" not in page
