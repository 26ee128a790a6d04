"""Bad input an operator can give, through the real `etl` process: malformed settings and
mapping files, unknown collections, wrong credentials, an unreachable server, a schema that is
missing or of another version. Each ends in exactly one line on stderr starting with "error:",
no traceback, exit status 2. (test_cli_errors.py holds the first cases of the same contract.)"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests import helpers
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed
from tests.helpers import REPO, assert_one_line_error, error_lines, etl, pg_env

MAPPING = REPO / "configs" / "atspro.toml"


def assert_error(proc, *needles):
    assert_one_line_error(proc, *needles)
    assert error_lines(proc.stderr)[-1].startswith("error:"), proc.stderr


@pytest.fixture(scope="module")
def dump(dump_of):
    return dump_of(3, seed=1)


# -- settings files -------------------------------------------------------------------------------

SETTINGS_CASES = {
    "syntax": ("[migrate\nbatch_size = 5\n", ["cannot be read"]),
    "unterminated_string": ('[arango]\nurl = "http://x\n', ["cannot be read"]),
    "wrong_type": ("[arango]\nrequest_timeout = 'soon'\n", ["arango.request_timeout"]),
    "wrong_type_bool": ("[migrate]\ndefer_indexes = 'perhaps'\n", ["migrate.defer_indexes"]),
    "bad_url": ("[arango]\nurl = 'ftp://x'\n", ["arango.url", "http://"]),
    "unknown_key": ("[migrate]\nbatch_sise = 10\n", ["migrate.batch_sise", "unknown key"]),
    "unknown_section": ("[mgrate]\nbatch_size = 10\n", ["mgrate", "unknown key"]),
    "section_not_table": ("migrate = 5\n", ["migrate", "table"]),
    "out_of_range": ("[migrate]\nbatch_size = 0\n", ["migrate.batch_size"]),
}


@pytest.mark.parametrize("case", sorted(SETTINGS_CASES))
@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--all", "--source", "dump:/nonexistent"],
        ["reconcile", "--all", "--source", "dump:/nonexistent"],
        ["status"],
    ],
)
def test_cli_malformed_settings_file(tmp_path, case, command):
    text, needles = SETTINGS_CASES[case]
    bad = tmp_path / "etl.toml"
    bad.write_text(text)
    proc = etl("--config", str(bad), *command)
    assert_error(proc, "etl.toml", *needles)


def test_cli_missing_settings_file(tmp_path):
    proc = etl("--config", str(tmp_path / "nope.toml"), "status")
    assert_error(proc, "nope.toml", "does not exist")


def test_cli_bad_environment_variable(tmp_path):
    proc = etl("status", env={"ETL_BATCH_SIZE": "lots"})
    assert_error(proc, "ETL_BATCH_SIZE", "migrate.batch_size")


# -- mapping files ------------------------------------------------------------------------------


def _mapping(tmp_path: Path, mutate) -> Path:
    raw = MAPPING.read_text()
    text = mutate(raw)
    p = tmp_path / "mapping.toml"
    p.write_text(text)
    return p


def _drop_line(raw: str, line: str) -> str:
    assert line in raw
    return raw.replace(line, "", 1)


MAPPING_CASES = {
    "syntax": (lambda raw: raw + "\n[collections.broken\n", ["cannot be read"]),
    "unknown_kind": (
        lambda raw: raw.replace('kind = "document"', 'kind = "graph"', 1),
        ["collections.resumes", "kind"],
    ),
    "missing_document_type": (
        lambda raw: _drop_line(raw, 'document_type = "resume"\n'),
        ["collections.resumes.document_type", "required"],
    ),
    "unknown_document_type": (
        lambda raw: raw.replace('document_type = "resume"', 'document_type = "cv"', 1),
        ["collections.resumes.document_type"],
    ),
}


@pytest.mark.parametrize("case", sorted(MAPPING_CASES))
@pytest.mark.parametrize("command", ["migrate", "reconcile"])
def test_cli_malformed_mapping_file(schema_db, tmp_path, dump, case, command):
    mutate, needles = MAPPING_CASES[case]
    mapping = _mapping(tmp_path, mutate)
    if case != "syntax":  # the mutation must leave valid TOML: the error is the mapping's own
        tomllib.loads(mapping.read_text())
    proc = etl(
        command,
        "--all",
        "--source",
        f"dump:{dump}",
        "--mapping",
        str(mapping),
        env=pg_env(schema_db, tmp_path),
    )
    assert_error(proc, "mapping.toml", *needles)


def test_cli_missing_mapping_file(schema_db, tmp_path, dump):
    proc = etl(
        "migrate",
        "--all",
        "--source",
        f"dump:{dump}",
        env=pg_env(schema_db, tmp_path, ETL_MAPPING=str(tmp_path / "none.toml")),
    )
    assert_error(proc, "none.toml", "does not exist")


# -- ArangoDB -----------------------------------------------------------------------------------


def arango_env(server, dsn, tmp_path, password=ROOT_PASSWORD, **extra):
    return helpers.arango_env(
        server, dsn, tmp_path, ETL_ARANGO_PASSWORD=password, ETL_ARANGO_TIMEOUT="5", **extra
    )


@pytest.mark.parametrize("command", ["migrate", "reconcile"])
def test_cli_unknown_collection_lists_the_existing_ones(
    arango_server, schema_db, tmp_path, command
):
    seed(arango_server, DATABASE, "resumes", [{"_key": "1", "user_id": "u"}])
    proc = etl(
        command, "--collection", "resumez", env=arango_env(arango_server, schema_db, tmp_path)
    )
    assert_error(proc, "collection 'resumez' does not exist", "resumes")


@pytest.mark.parametrize("command", ["migrate", "reconcile"])
def test_cli_wrong_arango_password(arango_server, schema_db, tmp_path, command):
    proc = etl(
        command,
        "--collection",
        "resumes",
        env=arango_env(arango_server, schema_db, tmp_path, password="not-the-password-42"),
    )
    assert_error(proc, "wrong username or password")
    assert "not-the-password-42" not in proc.stdout + proc.stderr


def test_cli_unknown_arango_database(arango_server, schema_db, tmp_path):
    proc = etl(
        "migrate",
        "--all",
        env=arango_env(arango_server, schema_db, tmp_path, ETL_ARANGO_DB="atsprox"),
    )
    assert_error(proc, "atsprox")


def test_cli_unreachable_arango(schema_db, tmp_path):
    # one attempt: each retry of a transient failure is logged (a warning line), by design
    conf = tmp_path / "etl.toml"
    conf.write_text("[arango]\nretry_attempts = 1\n")
    env = pg_env(schema_db, tmp_path, ETL_ARANGO_URL="http://127.0.0.1:1", ETL_ARANGO_TIMEOUT="2")
    proc = etl("--config", str(conf), "migrate", "--all", env=env)
    assert_error(proc, "127.0.0.1:1")


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def pg_role(pg_admin_dsn, schema_db):
    """A login role with a password on the test server (the server may trust every login: then
    a wrong password is accepted and the test that needs a refusal is skipped)."""
    role = "etl_bad_input_t"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"drop role if exists {role}")
        conn.execute(f"create role {role} login password 'right-password-1'")
        if not os.environ.get("ETL_TEST_PG_DSN"):  # the suite's own server: make it check this role
            hba = Path(conn.execute("show hba_file").fetchone()[0])
            rules = "".join(
                f"{kind} all {role} {addr} scram-sha-256\n"
                for kind, addr in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))
            )
            if rules not in hba.read_text():
                hba.write_text(rules + hba.read_text())
            conn.execute("select pg_reload_conf()")
    yield role
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"drop owned by {role}")
        conn.execute(f"drop role if exists {role}")


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--all", "--source", "dump:DUMP"],
        ["reconcile", "--all", "--source", "dump:DUMP"],
        ["status"],
    ],
)
def test_cli_wrong_postgres_password(pg_role, schema_db, tmp_path, dump, command):
    dsn = make_conninfo(schema_db, user=pg_role, password="wrong-password-9")
    try:
        psycopg.connect(dsn).close()
        pytest.skip("this PostgreSQL server trusts every login (pg_hba trust): no refusal to test")
    except psycopg.OperationalError:
        pass
    proc = etl(*[c.replace("DUMP", str(dump)) for c in command], env=pg_env(dsn, tmp_path))
    assert_error(proc, "refused the login")
    assert "wrong-password-9" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--all", "--source", "dump:DUMP"],
        ["reconcile", "--all", "--source", "dump:DUMP"],
        ["status"],
        ["purge-rejects", "--run", "migrate-20260101T000000Z-abcdef"],
        ["schema-status"],
    ],
)
def test_cli_unreachable_postgres_port(tmp_path, dump, command):
    dsn = "postgresql://postgres:pw-unreachable-3@127.0.0.1:1/postgres"
    proc = etl(*[c.replace("DUMP", str(dump)) for c in command], env=pg_env(dsn, tmp_path))
    assert_error(proc, "cannot reach PostgreSQL", "127.0.0.1:1")
    assert "pw-unreachable-3" not in proc.stdout + proc.stderr


# -- the schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--all", "--source", "dump:DUMP"],
        ["reconcile", "--all", "--source", "dump:DUMP"],
        ["status"],
        ["purge-rejects", "--run", "migrate-20260101T000000Z-abcdef"],
        ["schema-status"],
    ],
)
def test_cli_schema_not_applied(empty_db, tmp_path, dump, command):
    proc = etl(*[c.replace("DUMP", str(dump)) for c in command], env=pg_env(empty_db, tmp_path))
    assert_error(proc, "etl apply-schema")


def _history(dsn: str, sql: str, *args) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, args)


SCHEMA_CASES = {
    "edited_file": (
        "update migration_history set checksum = repeat('0', 64) where version = '005'",
        ["another version", "005_", "etl apply-schema"],
    ),
    "newer_version": (
        "insert into migration_history (version, name, checksum) values ('099', 'future', 'x')",
        ["099", "newer than this etl", "upgrade etl"],
    ),
    "older_version": (
        "delete from migration_history where version = '006'",
        ["older than this etl", "006", "etl apply-schema"],
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--all", "--source", "dump:DUMP"],
        ["reconcile", "--all", "--source", "dump:DUMP"],
        ["status"],
    ],
)
def test_cli_schema_of_another_version(schema_db, tmp_path, dump, case, command):
    change, needles = SCHEMA_CASES[case]
    _history(schema_db, change)
    proc = etl(*[c.replace("DUMP", str(dump)) for c in command], env=pg_env(schema_db, tmp_path))
    assert_error(proc, *needles)
    with psycopg.connect(schema_db) as conn:  # refused before any work
        assert conn.execute("select count(*) from etl_runs").fetchone()[0] == 0


def test_cli_schema_of_the_right_version_is_accepted(schema_db, tmp_path, dump):
    proc = etl("migrate", "--all", "--source", f"dump:{dump}", env=pg_env(schema_db, tmp_path))
    assert proc.returncode in (0, 1), proc.stderr
    proc = etl("status", env=pg_env(schema_db, tmp_path))
    assert proc.returncode == 0, proc.stderr
