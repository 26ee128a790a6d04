"""apply-schema runner on a real PostgreSQL: history, idempotence, dry run, target, baseline,
checksums and --repair, failing files, the advisory lock, extensions, rollback."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from etl.errors import PermanentError, TransientError
from etl.schema import (
    ADVISORY_LOCK_KEY,
    applied,
    apply_schema,
    load_migrations,
    pending,
    rollback,
    schema_status,
    split_statements,
)
from tests.helpers import REPO

SQL = REPO / "sql"
CASES = Path(__file__).parent / "cases"
FILES = [m.filename for m in load_migrations(SQL)]
ALL_SEVEN = len(FILES) == 7


def _one(dsn, query, *params):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params or None).fetchone()[0]


def _catalog_snapshot(dsn) -> list:
    """Every object of the public and rollback schemas with its definition, to compare states."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("""
            SELECT 'rel', c.relname || ':' || c.relkind::text || ':' || coalesce(pg_get_indexdef(c.oid), '') FROM pg_class c
             WHERE c.relnamespace IN ('public'::regnamespace) AND c.relpersistence = 'p'
            UNION ALL SELECT 'col', attrelid::regclass || '.' || attname || ':' || format_type(atttypid, atttypmod)
              FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relnamespace = 'public'::regnamespace AND attnum > 0 AND NOT attisdropped
            UNION ALL SELECT 'con', conrelid::regclass || '.' || conname || ':' || pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            UNION ALL SELECT 'trg', tgrelid::regclass || '.' || tgname FROM pg_trigger WHERE NOT tgisinternal
            UNION ALL SELECT 'fn', p.oid::regprocedure::text || md5(p.prosrc) FROM pg_proc p
             WHERE p.pronamespace IN ('public'::regnamespace, to_regnamespace('rollback'))
            ORDER BY 1, 2""").fetchall()


def _not_ok(dsn) -> list[dict]:
    """Integrity rows that are not ok, minus those owed to migration files not yet in sql/."""
    rows = [r for r in schema_status(dsn).integrity if r["status"] != "ok"]
    if ALL_SEVEN:
        return rows
    absent = {f"migration {v}" for v in ("004", "005") if not any(f.startswith(v) for f in FILES)}
    owed_to_005 = "005" not in {f[:3] for f in FILES}
    return [
        r
        for r in rows
        if r["detail"] not in absent
        and not (owed_to_005 and r["check"] in ("extension pg_trgm", "extension bloom"))
    ]


def test_split_statements_keeps_bodies_and_strings_whole():
    text = (
        "-- a comment; with a semicolon\nCREATE TABLE a (x text DEFAULT 'a;b''c');\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n/* block ; /* nested ; */ */ SELECT $tag$ ; $tag$, E'\\'; ';\n"
        'SELECT "odd;name" FROM t'
    )
    stmts = split_statements(text)
    assert [line for line, _ in stmts] == [2, 3, 4, 5]
    assert stmts[0][1] == "CREATE TABLE a (x text DEFAULT 'a;b''c');"
    assert stmts[1][1] == "DO $$ BEGIN PERFORM 1; END $$;"
    assert stmts[2][1].endswith("E'\\'; ';")
    assert stmts[3][1] == 'SELECT "odd;name" FROM t'


def test_apply_fresh_database_applies_every_file_and_integrity_is_ok(empty_db):
    result = apply_schema(empty_db, SQL)
    assert list(result.applied) == FILES
    assert result.skipped == () and result.pending == ()
    history = applied(empty_db)
    assert [h["version"] for h in history] == [f[:3] for f in FILES]
    assert all(
        h["success"] and len(h["checksum"]) == 64 and h["duration_ms"] is not None for h in history
    )
    status = schema_status(empty_db)
    assert _not_ok(empty_db) == []
    assert [m["applied"] for m in status.migrations if m["version"] in {f[:3] for f in FILES}] == [
        True
    ] * len(FILES)
    assert result.asdict()["applied"] == FILES


def test_apply_twice_changes_nothing(schema_db):
    before = _catalog_snapshot(schema_db)
    history_before = applied(schema_db)
    result = apply_schema(schema_db, SQL)
    assert result.applied == () and list(result.skipped) == FILES
    assert _catalog_snapshot(schema_db) == before
    assert applied(schema_db) == history_before


def test_every_file_run_again_by_hand_changes_nothing(schema_db):
    """Each file is idempotent on its own (IF NOT EXISTS, catalog checks), not only via history."""
    before = _catalog_snapshot(schema_db)
    with psycopg.connect(schema_db) as conn:
        for m in load_migrations(SQL):
            conn.execute(m.sql)
        conn.commit()
    assert _catalog_snapshot(schema_db) == before


def test_dry_run_touches_nothing(empty_db):
    result = apply_schema(empty_db, SQL, dry_run=True, verbose=True)
    assert result.dry_run and list(result.pending) == FILES and result.applied == ()
    assert (
        set(result.sql) == set(FILES)
        and "CREATE TABLE IF NOT EXISTS tasks" in result.sql["001_tasks.sql"]
    )
    assert (
        _one(empty_db, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        == 0
    )
    assert [m.filename for m in pending(empty_db, SQL)] == FILES


def test_target_stops_after_that_version_and_the_rest_follows(empty_db):
    first = apply_schema(empty_db, SQL, target="3")
    assert list(first.applied) == FILES[:3]
    assert list(first.pending) == FILES[3:]
    assert _one(empty_db, "SELECT to_regclass('resume_documents') IS NOT NULL")
    assert _one(empty_db, "SELECT to_regprocedure('etl_merge_stage(text,text)') IS NULL")
    second = apply_schema(empty_db, SQL)
    assert list(second.applied) == FILES[3:] and list(second.skipped) == FILES[:3]


def test_unknown_target_is_refused(empty_db):
    with pytest.raises(PermanentError, match="--target 999"):
        apply_schema(empty_db, SQL, target="999")


def _hand_apply(dsn):
    with psycopg.connect(dsn) as conn:
        for f in sorted(CASES.glob("hand_applied_*.sql")):
            conn.execute(f.read_text())


def test_baseline_records_hand_applied_files_without_running_them(empty_db):
    _hand_apply(empty_db)
    result = apply_schema(empty_db, SQL, baseline="002")
    assert list(result.baselined) == FILES[:2]
    assert list(result.applied) == FILES[2:]
    notes = {h["version"]: h["execution_notes"] for h in applied(empty_db)}
    assert "baseline" in notes["001"] and "baseline" in notes["002"]
    # Not run: the hand version's gaps are still there (no bio column, no status check).
    assert (
        _one(
            empty_db,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'user_profiles'::regclass "
            "AND attname = 'bio'",
        )
        == 0
    )
    assert (
        _one(empty_db, "SELECT count(*) FROM pg_constraint WHERE conname = 'tasks_status_check'")
        == 0
    )
    assert _one(empty_db, "SELECT count(*) FROM tasks") == 1


def test_apply_over_hand_applied_version_completes_it_and_keeps_data(empty_db):
    _hand_apply(empty_db)
    result = apply_schema(empty_db, SQL)
    assert list(result.applied) == FILES
    assert (
        _one(
            empty_db,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'tasks'::regclass "
            "AND conname IN ('tasks_status_check', 'tasks_progress_check')",
        )
        == 2
    )
    assert _one(empty_db, "SELECT max_retries FROM tasks") == 3
    assert _one(empty_db, "SELECT phone FROM user_profiles") == "+1 555 0100"
    # The hand-made trigger is recognised (same function): no second trigger.
    assert (
        _one(
            empty_db,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'user_profiles'::regclass "
            "AND NOT tgisinternal",
        )
        == 1
    )
    assert [
        r for r in _not_ok(empty_db) if "tasks" in r["check"] or "user_profiles" in r["check"]
    ] == []


@pytest.fixture
def sql_copy(tmp_path) -> Path:
    d = tmp_path / "sql"
    shutil.copytree(SQL, d)
    return d


def test_edited_file_is_refused_with_both_checksums_until_repair(empty_db, sql_copy):
    apply_schema(empty_db, sql_copy, target="003")
    old = applied(empty_db)[2]["checksum"]
    f = sql_copy / "003_document_tables.sql"
    f.write_text(f.read_text() + "\n-- reviewed change\n")
    new = load_migrations(sql_copy)[2].checksum
    with pytest.raises(PermanentError) as err:
        apply_schema(empty_db, sql_copy)
    msg = str(err.value)
    assert old in msg and new in msg and "--repair" in msg and "003_document_tables.sql" in msg
    assert len(applied(empty_db)) == 3  # nothing else ran
    result = apply_schema(empty_db, sql_copy, repair=True)
    assert result.repaired == ("003_document_tables.sql",)
    row = applied(empty_db)[2]
    assert row["checksum"] == new and old in row["execution_notes"]
    assert apply_schema(empty_db, sql_copy).applied == ()


def test_failing_file_leaves_previous_version_and_names_file_and_statement(empty_db, tmp_path):
    d = tmp_path / "sql"
    d.mkdir()
    for f in FILES[:2]:
        shutil.copy(SQL / f, d / f)
    (d / "003_broken.sql").write_text(
        "-- header\nCREATE TABLE half_done (x int);\n\nINSERT INTO half_done VALUES (1);\n"
        "CREATE TABLE broken (x int REFERENCES no_such_table (id));\n"
    )
    with pytest.raises(PermanentError) as err:
        apply_schema(empty_db, d)
    msg = str(err.value)
    assert "003_broken.sql" in msg and "statement 3" in msg and "line 5" in msg
    assert "no_such_table" in msg and "42P01" in msg
    assert [h["version"] for h in applied(empty_db)] == ["001", "002"]
    assert _one(empty_db, "SELECT to_regclass('half_done') IS NULL")


def test_error_inside_a_do_block_names_the_block(empty_db, tmp_path):
    d = tmp_path / "sql"
    d.mkdir()
    (d / "001_bad.sql").write_text("SELECT 1;\nDO $$\nBEGIN\n  PERFORM 1 / 0;\nEND\n$$;\n")
    with pytest.raises(PermanentError) as err:
        apply_schema(empty_db, d)
    assert "001_bad.sql at statement 2 (line 2: DO $$ BEGIN PERFORM 1 / 0; END $$;)" in str(
        err.value
    )
    assert "division by zero" in str(err.value) and "PL/pgSQL" in str(err.value)


def test_missing_required_extension_is_named(empty_db, tmp_path):
    d = tmp_path / "sql"
    d.mkdir()
    (d / "001_ext.sql").write_text("CREATE EXTENSION IF NOT EXISTS etl_no_such_extension;\n")
    with pytest.raises(PermanentError, match='extension "etl_no_such_extension"'):
        apply_schema(empty_db, d)
    assert applied(empty_db) == []


def test_concurrent_applies_never_apply_twice(empty_db):
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            results.append(apply_schema(empty_db, SQL))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    ran = [f for r in results for f in r.applied]
    assert sorted(ran) == FILES  # each file exactly once across both runs
    assert _one(empty_db, "SELECT count(*) FROM migration_history") == len(FILES)


def test_second_apply_fails_clearly_when_the_lock_stays_taken(empty_db):
    with psycopg.connect(empty_db, autocommit=True, application_name="other-deploy") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        with pytest.raises(TransientError, match="another apply-schema is running.*other-deploy"):
            apply_schema(empty_db, SQL, lock_timeout_s=0.3)
    assert _one(empty_db, "SELECT to_regclass('migration_history') IS NULL")


CHECKS = {
    "validation": (
        "SELECT to_regprocedure('validate_document_data(text,text,jsonb,jsonb)') IS NULL",
        ["006", "011"],
    ),
    "helpers": ("SELECT to_regprocedure('extract_skills(jsonb)') IS NULL", ["004", "005", "014"]),
    "tables": (
        "SELECT to_regclass('resume_documents') IS NULL",
        ["003", "004", "005", "006", "011", "014"],
    ),
    "all": (
        "SELECT to_regclass('etl_runs') IS NULL AND to_regclass('resume_documents') IS NULL"
        " AND to_regclass('etl_wal_positions') IS NULL AND to_regclass('etl_fallback_changes') IS NULL"
        " AND to_regclass('etl_sync_pending') IS NULL",
        ["003", "004", "005", "006", "007", "008", "009", "010", "011", "012", "013", "014"],
    ),
}


@pytest.mark.parametrize("component", list(CHECKS))
def test_rollback_component_then_reapply(schema_db, component):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute("INSERT INTO resume_documents (user_id, filename) VALUES ('u1', 'cv.pdf')")
    query, versions = CHECKS[component]
    result = rollback(schema_db, component)
    assert result.component == component and result.actions
    assert _one(schema_db, query)
    left = {h["version"] for h in applied(schema_db)}
    assert not left & set(versions)
    assert {"001", "002"} <= left
    assert rollback(schema_db, component).actions == ()  # idempotent: nothing left to do
    again = apply_schema(schema_db, SQL)
    assert sorted(f[:3] for f in again.applied) == [
        v for v in versions if any(f.startswith(v) for f in FILES)
    ]
    assert _not_ok(schema_db) == []
    if component in ("validation", "helpers"):
        assert _one(schema_db, "SELECT count(*) FROM resume_documents") == 1


def test_rollback_unknown_component_is_refused(schema_db):
    with pytest.raises(PermanentError, match="unknown rollback component"):
        rollback(schema_db, "everything")


def test_rollback_helpers_keeps_an_operators_own_index(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute("CREATE INDEX ops_jobs_by_company ON job_documents (company)")
    actions = rollback(schema_db, "helpers").actions
    assert "dropped index idx_job_documents_bloom on job_documents" in actions
    assert _one(schema_db, "SELECT to_regclass('ops_jobs_by_company') IS NOT NULL")
    assert _one(schema_db, "SELECT to_regclass('idx_resume_documents_parsed_data_gin') IS NULL")


def test_rollback_all_with_production_tables_empties_history(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute("SELECT * FROM rollback.rollback_search_tables()")  # 014's own
        conn.execute("SELECT * FROM rollback.rollback_merge_update_first()")  # 013's own
        conn.execute("SELECT * FROM rollback.rollback_audit_update_by_column()")  # 011's own
        conn.execute("SELECT * FROM rollback.rollback_fallback()")  # 010 and 012 have their own
        conn.execute("SELECT * FROM rollback.rollback_sync_verification()")  # 009 has its own
        conn.execute("SELECT * FROM rollback.rollback_change_capture()")  # 008 has its own
        conn.execute("SELECT * FROM rollback.rollback_all_migrations(true)")
    # the generated migrations of generic tables (arango.task_results) are not sql/ files:
    # these SQL functions leave them; `etl rollback --component all` drops them (docs/generic.md)
    assert _one(
        schema_db, "SELECT count(*) FROM migration_history WHERE version NOT LIKE 'generic:%'"
    ) == 0  # fmt: skip
    assert _one(
        schema_db, "SELECT to_regclass('tasks') IS NULL AND to_regclass('user_profiles') IS NULL"
    )
    assert list(apply_schema(schema_db, SQL).applied) == FILES
    assert _not_ok(schema_db) == []


def test_dry_run_refuses_an_edited_file_too(schema_db, sql_copy):
    f = sql_copy / "002_user_profiles.sql"
    f.write_text(f.read_text() + "\n")
    with pytest.raises(PermanentError, match="002_user_profiles.sql was applied with checksum"):
        apply_schema(schema_db, sql_copy, dry_run=True)
    result = apply_schema(schema_db, sql_copy, dry_run=True, repair=True)
    assert result.repaired == ("002_user_profiles.sql",) and result.pending == ()
    assert (
        applied(schema_db)[1]["checksum"] != load_migrations(sql_copy)[1].checksum
    )  # dry run: not recorded


def test_schema_status_before_007_says_what_to_run(empty_db):
    apply_schema(empty_db, SQL, target="003")
    with pytest.raises(PermanentError, match="migration 007 not applied"):
        schema_status(empty_db)


def _generic_left(dsn: str) -> list[str]:
    return [
        r[0]
        for r in psycopg.connect(dsn).execute(
            "SELECT version FROM migration_history WHERE version LIKE 'generic:%' ORDER BY 1"
        )
    ]


def test_rollback_all_drops_the_generic_tables_and_the_schema_etl_made(schema_db, tmp_path):
    from etl.generic.apply import apply_mapping, apply_mapping_file
    from etl.generic.discover import discover, open_source
    from etl.generic.render import render
    from etl.mapping import load_mapping
    from tests import generic_dumps as shop

    # arango (task_results, made with the template) was created by etl; schema shop existed
    assert _generic_left(schema_db) == ["generic:arango", "generic:arango.task_results"]
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.mine (x int)")
    src = open_source(f"dump:{shop.write(tmp_path / 'dump', '3.12')}", None)
    (tmp_path / "m.toml").write_text(render(discover(src, schema="shop")))
    src.close()
    mapping = load_mapping(tmp_path / "m.toml")
    apply_mapping(schema_db, mapping.generic_targets(), str(tmp_path / "m.toml"))
    assert "generic:shop" not in _generic_left(schema_db)

    actions = rollback(schema_db, "all").actions
    for t in ("arango.task_results", "shop.users", "shop.knows"):
        assert (
            f"dropped table {t}" in actions and f"deleted migration_history generic:{t}" in actions
        )
    assert "dropped function arango.etl_jsonb_timestamptz(jsonb)" in actions
    assert "dropped function shop.etl_jsonb_bigint(jsonb)" in actions
    assert (
        "dropped schema arango" in actions and "deleted migration_history generic:arango" in actions
    )
    assert not any(
        "schema shop" in a for a in actions
    )  # not etl's: kept, with the operator's table
    assert actions.index("dropped table arango.task_results") < actions.index(
        "deleted migration_history 007 (rollback schema and status functions kept)"
    )  # fmt: skip
    assert _generic_left(schema_db) == []
    assert _one(
        schema_db,
        "SELECT to_regnamespace('arango') IS NULL AND to_regclass('shop.mine') IS NOT NULL"
        " AND to_regclass('shop.users') IS NULL",
    )
    assert rollback(schema_db, "all").actions == ()
    # applied again from scratch: the schema is etl's again
    apply_schema(schema_db, SQL)
    assert apply_mapping_file(schema_db).created == ["arango.task_results"]
    assert _generic_left(schema_db) == ["generic:arango", "generic:arango.task_results"]


def test_rollback_all_keeps_a_schema_that_holds_other_objects(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE arango.notes (x int)")
    actions = rollback(schema_db, "all").actions
    assert "dropped table arango.task_results" in actions
    assert "kept schema arango: it holds objects etl did not create" in actions
    assert _generic_left(schema_db) == ["generic:arango"]  # a later rollback may still drop it
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute("DROP TABLE arango.notes")
    assert rollback(schema_db, "all").actions == (
        "dropped schema arango",
        "deleted migration_history generic:arango",
    )
