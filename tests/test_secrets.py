"""Passwords and tokens never appear in output, logs, reports, the run tables or --help.

Every etl command runs as a real process with a known ArangoDB password (in ETL_ARANGO_PASSWORD,
then in a settings file), a known PostgreSQL password inside the DSN (a role made for the test),
with --debug and -v, including failing runs (wrong passwords, unknown collection). Then
tests.secrets_scan.scan_for_secrets() looks for the secrets (and their encoded forms, the Basic
authorization value and a JWT the fake server issued) in stdout, stderr (the log), every file of
the reports directory and every text column of the database. Zero hits.
"""

from __future__ import annotations

import base64
import re

import psycopg
import pytest
import requests
from psycopg.conninfo import make_conninfo

from tests.datagen import generate
from tests.fakearango.fixtures import DATABASE, seed
from tests.helpers import etl
from tests.secrets_scan import scan_for_secrets

ARANGO_SECRET = "Ar4ngo-S3cret;'\"$pw%41"
PG_SECRET = "Pg-S3cret:@/?&pw=1"
WRONG_SECRET = "Wr0ng-S3cret-xyz"
ROLE = "etl_secret_t"
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


@pytest.fixture
def secret_db(pg_admin_dsn, make_db):
    dsn = make_db()
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"drop role if exists {ROLE}")
        conn.execute(
            psycopg.sql.SQL("create role {} login superuser password {}").format(
                psycopg.sql.Identifier(ROLE), psycopg.sql.Literal(PG_SECRET)
            )
        )
    yield make_conninfo(dsn, user=ROLE, password=PG_SECRET)
    with psycopg.connect(dsn, autocommit=True) as conn:  # as admin: the objects the role owns
        conn.execute(f"reassign owned by {ROLE} to current_user")
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"drop owned by {ROLE}")
        conn.execute(f"drop role if exists {ROLE}")


def test_no_secret_in_any_output_file_or_table(arango_server, secret_db, tmp_path, capsys):
    arango_server.add_user("etl", ARANGO_SECRET, [DATABASE])
    ds = generate(4, seed=2)
    for name in ("resumes", "jobs", "documents", "job_research"):
        seed(arango_server, DATABASE, name, ds[name], edge=name == "job_research")
    seed(arango_server, DATABASE, "resumes", [{"_key": "no-user", "status": "x"}])  # one reject
    token = requests.post(
        f"{arango_server.url}/_open/auth",
        json={"username": "etl", "password": ARANGO_SECRET},
        timeout=5,
    ).json()["jwt"]
    basic = base64.b64encode(f"etl:{ARANGO_SECRET}".encode()).decode()
    secrets = [
        ARANGO_SECRET,
        PG_SECRET,
        WRONG_SECRET,
        token,
        basic,
        base64.b64encode(f"etl:{WRONG_SECRET}".encode()).decode(),
    ]

    reports = tmp_path / "reports"
    base = {
        "ETL_PG_DSN": secret_db,
        "ETL_REPORTS_DIR": str(reports),
        "ETL_ARANGO_URL": arango_server.url,
        "ETL_ARANGO_DB": DATABASE,
        "ETL_ARANGO_USER": "etl",
        "ETL_ARANGO_TIMEOUT": "5",
    }
    env_pw = {**base, "ETL_ARANGO_PASSWORD": ARANGO_SECRET}
    conf = tmp_path / "etl.toml"
    conf.write_text(
        f"[arango]\npassword = '''{ARANGO_SECRET}'''\nretry_attempts = 1\n"
        f"[postgres]\ndsn = '''{secret_db}'''\n"
    )
    from_file = {k: v for k, v in base.items() if k != "ETL_PG_DSN"}
    wrong_pg = make_conninfo(secret_db, password=WRONG_SECRET)

    runs: list[tuple[str, list[str], dict]] = [
        ("apply-schema", ["apply-schema"], env_pw),
        ("apply-schema dry", ["-v", "apply-schema", "--dry-run"], env_pw),
        ("schema-status", ["schema-status"], env_pw),
        ("migrate dry", ["--debug", "migrate", "--all", "--allow-missing", "--dry-run"], env_pw),
        ("migrate", ["-v", "migrate", "--all", "--allow-missing"], env_pw),
        (
            "migrate jwt",
            ["--debug", "migrate", "--all", "--allow-missing"],
            {**env_pw, "ETL_ARANGO_AUTH": "jwt"},
        ),
        (
            "migrate file",
            ["--debug", "--config", str(conf), "migrate", "--all", "--allow-missing"],
            from_file,
        ),
        ("reconcile", ["--debug", "reconcile", "--all", "--allow-missing"], env_pw),
        (
            "reconcile file",
            ["--config", str(conf), "reconcile", "--all", "--allow-missing"],
            from_file,
        ),
        ("status", ["--debug", "status"], env_pw),
        ("status file", ["--config", str(conf), "status"], from_file),
        ("pg-url", ["pg-url"], env_pw),
        ("pg-url file", ["--config", str(conf), "pg-url"], from_file),
        # failing runs
        (
            "wrong arango password",
            ["--debug", "migrate", "--all"],
            {**base, "ETL_ARANGO_PASSWORD": WRONG_SECRET},
        ),
        (
            "wrong arango password jwt",
            ["--debug", "migrate", "--all"],
            {**base, "ETL_ARANGO_PASSWORD": WRONG_SECRET, "ETL_ARANGO_AUTH": "jwt"},
        ),
        ("wrong pg password", ["--debug", "status"], {**env_pw, "ETL_PG_DSN": wrong_pg}),
        (
            "unreachable pg",
            ["--debug", "migrate", "--all"],
            {
                **env_pw,
                "ETL_PG_DSN": f"postgresql://{ROLE}:{PG_SECRET.replace(':', '%3A').replace('@', '%40').replace('/', '%2F').replace('?', '%3F').replace('&', '%26').replace('=', '%3D')}@127.0.0.1:1/x",
            },
        ),
        (
            "bad dsn",
            ["--debug", "status"],
            {**env_pw, "ETL_PG_DSN": f"host=127.0.0.1 password={PG_SECRET} port=nope"},
        ),
        ("unknown collection", ["--debug", "migrate", "--collection", "nope"], env_pw),
        ("bad settings", ["--debug", "--config", str(tmp_path / "bad.toml"), "status"], env_pw),
        ("rollback without yes", ["--debug", "rollback", "--component", "validation"], env_pw),
    ]
    (tmp_path / "bad.toml").write_text(
        f"[arango]\npassword = '{ARANGO_SECRET}'\nbogus = '{ARANGO_SECRET}'\n"
    )
    help_out = etl("--help", env=env_pw)
    commands = re.findall(
        r"^│ ([a-z][a-z-]+)\s", help_out.stdout.partition("Commands")[2], re.M
    ) or [
        "apply-schema",
        "schema-status",
        "rollback",
        "migrate",
        "reconcile",
        "status",
        "purge-rejects",
        "pg-url",
        "pg-stop",
    ]
    assert {
        "migrate",
        "reconcile",
        "status",
        "purge-rejects",
        "pg-url",
        "rollback",
        "apply-schema",
    } <= set(commands)
    texts = {"etl --help": help_out.stdout + help_out.stderr}
    for cmd in commands:
        p = etl(cmd, "--help", env=env_pw)
        assert p.returncode == 0, (cmd, p.stderr)
        texts[f"etl {cmd} --help"] = p.stdout + p.stderr

    outcomes = {}
    for label, args, env in runs:
        p = etl(*args, env=env)
        outcomes[label] = p.returncode
        texts[f"{label}: stdout"] = p.stdout
        texts[f"{label}: stderr (log)"] = p.stderr
    # the runs really ran (a scan of nothing proves nothing)
    assert (
        outcomes["apply-schema"] == 0
        and outcomes["migrate"] in (0, 1)
        and outcomes["reconcile"] == 0
    ), {k: (v, texts[f"{k}: stderr (log)"][-600:]) for k, v in outcomes.items() if v == 2}
    assert outcomes["migrate jwt"] in (0, 1) and outcomes["migrate file"] in (0, 1), outcomes
    for label in (
        "wrong arango password",
        "unreachable pg",
        "unknown collection",
        "bad settings",
        "rollback without yes",
    ):
        assert outcomes[label] == 2, (label, outcomes[label], texts[f"{label}: stderr (log)"])
    with psycopg.connect(secret_db) as conn:
        run_id = conn.execute(
            "select run_id from etl_runs where command = 'migrate' order by started_at limit 1"
        ).fetchone()[0]
        assert conn.execute("select count(*) from etl_rejects").fetchone()[0] > 0
    p = etl("--debug", "purge-rejects", "--run", run_id, env=env_pw)
    assert p.returncode == 0, p.stderr
    texts["purge-rejects"] = p.stdout + p.stderr

    scanned: list[str] = []
    hits = scan_for_secrets(
        secrets,
        texts=texts,
        paths=[reports, conf.parent / "etl.toml.nonexistent"],
        conn=secret_db,
        scanned=scanned,
    )
    # any JWT at all (another token than the one fetched above) in output or reports
    for label, text in texts.items():
        if JWT_RE.search(text or ""):
            hits.append(f"a JWT in {label}")
    for f in sorted(reports.rglob("*")):
        if f.is_file() and JWT_RE.search(f.read_text(errors="replace")):
            hits.append(f"a JWT in file {f}")
    files = [s for s in scanned if s.startswith("file ")]
    columns = [s for s in scanned if s.startswith("database column ")]
    with capsys.disabled():
        print(
            f"\nsecrets scan: {len(scanned)} places ({len(texts)} outputs, {len(files)} report files, "
            f"{len(columns)} database columns), {len(hits)} hits"
        )
    assert len(files) >= 9 and len(columns) >= 20
    for table in (
        "etl_runs",
        "etl_checkpoints",
        "etl_batches",
        "etl_rejects",
        "document_audit_log",
        "migration_history",
    ):
        assert any(c.startswith(f"database column {table}.") for c in columns), table
    assert hits == []


def test_scan_for_secrets_finds_what_is_there(tmp_path, schema_db):
    """The scanner itself: a planted secret is found in a text, a file and a table column."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.json").write_text('{"x": "pw%3Bplanted"}')
    with psycopg.connect(schema_db) as conn:
        conn.execute(
            "insert into etl_runs (run_id, command, state, started_at, error)"
            " values ('r', 'migrate', 'failed', now(), 'login pw;planted refused')"
        )
    scanned: list[str] = []
    hits = scan_for_secrets(
        ["pw;planted", ""],
        texts={"out": "x pw;planted y", "clean": "nothing"},
        paths=[tmp_path / "r"],
        conn=schema_db,
        scanned=scanned,
    )
    assert hits == [
        "secret #1 in out",
        f"secret #1 in file {tmp_path / 'r' / 'a.json'}",
        "secret #1 in database column etl_runs.error (1 rows)",
    ]
    assert "pw;planted" not in " ".join(hits)
    assert (
        "out" in scanned
        and "clean" in scanned
        and "database column etl_rejects.document" in scanned
    )
