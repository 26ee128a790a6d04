"""What a migrate says before it loads: rows in the target it did not write (the wrong
database, a demo's rows), and the missing WAL position once, not on every dump run."""

from __future__ import annotations

import psycopg
import pytest

from tests.helpers import etl, pg_env

WAL = "no WAL position for this copy"


@pytest.fixture(scope="module")
def dump(dump_of):
    return dump_of(5, seed=6)


def _migrate(schema_db, tmp_path, dump, collection):
    env = pg_env(schema_db, tmp_path, "r")
    proc = etl("migrate", "-c", collection, "--source", f"dump:{dump}", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_migrate_says_when_the_target_holds_rows_it_did_not_write(schema_db, tmp_path, dump):
    first = _migrate(schema_db, tmp_path, dump, "resumes")
    assert "did not write" not in first
    with psycopg.connect(schema_db) as conn:  # as the application would have written it
        conn.execute(
            "update resume_documents set metadata = metadata - 'etl'"
            " where id = (select id from resume_documents order by id limit 1)"
        )
    again = _migrate(schema_db, tmp_path, dump, "resumes")
    said = [ln for ln in again.splitlines() if "did not write" in ln]
    assert len(said) == 1 and "WARNING" in said[0] and "resume_documents (1)" in said[0], again


def test_the_missing_wal_position_is_a_warning_once_not_on_every_dump_run(
    schema_db, tmp_path, dump
):
    first = _migrate(schema_db, tmp_path, dump, "resumes")
    assert [ln for ln in first.splitlines() if WAL in ln and "WARNING" in ln], first
    second = _migrate(schema_db, tmp_path, dump, "jobs")
    assert WAL in second and not [ln for ln in second.splitlines() if "WARNING" in ln], second
