"""006 audit: statement-level triggers with transition tables write document_audit_log set-based."""

from __future__ import annotations

import psycopg
import pytest


def _fn_calls(conn, fn: str) -> int:
    """Calls of a function in the current transaction (needs track_functions, set per session)."""
    return conn.execute(
        "SELECT coalesce(pg_stat_get_xact_function_calls(%s::regproc), 0)", (fn,)
    ).fetchone()[0]


def test_audit_triggers_are_statement_level_with_transition_tables(schema_db):
    with psycopg.connect(schema_db) as conn:
        rows = conn.execute("""
            SELECT c.relname, t.tgname, (t.tgtype & 1) = 0 AS per_statement, t.tgoldtable, t.tgnewtable
              FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE t.tgfoid = 'audit_document_changes'::regproc ORDER BY 1, 2""").fetchall()
    assert len(rows) == 12  # 4 tables x insert/update/delete
    assert all(r[2] for r in rows)
    for _rel, name, _, old, new in rows:
        if name.endswith("_insert"):
            assert (old, new) == (None, "new_rows")
        elif name.endswith("_update"):
            assert (old, new) == ("old_rows", "new_rows")
        else:
            assert (old, new) == ("old_rows", None)


def test_audit_bulk_insert_of_10k_rows_is_one_trigger_call_with_run_id(schema_db):
    with psycopg.connect(schema_db) as conn:
        conn.execute("SET track_functions = 'pl'")
        conn.execute("SELECT set_config('etl.run_id', 'run-2026-bulk', true)")
        calls_before = _fn_calls(conn, "audit_document_changes")
        conn.execute("""
            INSERT INTO job_documents (user_id, title, metadata)
            SELECT 'user_' || (g % 97), 'job ' || g,
                   jsonb_build_object('source', 'arangodb',
                                      'arango', jsonb_build_object('_id', 'jobs/' || g, '_rev', '_r' || g))
              FROM generate_series(1, 10000) g""")
        # One call of the audit function for the whole statement, not 10,000.
        assert _fn_calls(conn, "audit_document_changes") - calls_before == 1
        conn.commit()
        stats = conn.execute("""
            SELECT count(*), count(DISTINCT document_id), min(action), max(action), min(run_id), max(run_id),
                   count(*) FILTER (WHERE changes = jsonb_build_object('op', 'insert', 'arango_id',
                                    'jobs/' || split_part(j.title, ' ', 2), 'rev', '_r' || split_part(j.title, ' ', 2))),
                   count(DISTINCT l.created_at)
              FROM document_audit_log l JOIN job_documents j ON j.id = l.document_id""").fetchone()
    assert stats == (10000, 10000, "migrate", "migrate", "run-2026-bulk", "run-2026-bulk", 10000, 1)


def test_audit_application_writes_are_insert_update_delete_without_run_id(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        rid = conn.execute(
            "INSERT INTO resume_documents (user_id, filename) VALUES ('u1', 'cv.pdf') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "UPDATE resume_documents SET status = 'completed', parsed_data = '{\"skills\": [\"SQL\"]}' "
            "WHERE id = %s",
            (rid,),
        )
        conn.execute("SET etl.run_id = ''")  # set but empty: still an application write
        conn.execute("DELETE FROM resume_documents WHERE id = %s", (rid,))
        log = conn.execute(
            "SELECT document_type, document_id, user_id, action, changes, run_id "
            "FROM document_audit_log ORDER BY id"
        ).fetchall()
    assert log == [
        ("resume", rid, "u1", "insert", {"op": "insert"}, None),
        (
            "resume",
            rid,
            "u1",
            "update",
            {"op": "update", "fields": ["parsed_data", "status"]},
            None,
        ),
        ("resume", rid, "u1", "delete", {"op": "delete"}, None),
    ]


def test_audit_update_of_many_rows_is_set_based_and_only_for_changed_rows(schema_db):
    with psycopg.connect(schema_db) as conn:
        conn.execute(
            "INSERT INTO research_results (user_id, company) SELECT 'u', 'c' || g "
            "FROM generate_series(1, 500) g"
        )
        conn.commit()
        conn.execute("SET track_functions = 'pl'")
        conn.execute("SELECT set_config('etl.run_id', 'run-upd', true)")
        before = _fn_calls(conn, "audit_document_changes")
        n = conn.execute(
            "UPDATE research_results SET status = 'completed' WHERE company LIKE 'c1%'"
        ).rowcount
        assert _fn_calls(conn, "audit_document_changes") - before == 1
        conn.commit()
        got = conn.execute(
            "SELECT count(*), min(action), min(run_id), min(changes::text), max(changes::text) "
            "FROM document_audit_log WHERE document_type = 'research' AND run_id IS NOT NULL"
        ).fetchone()
    assert n == 111
    assert got == (
        111,
        "migrate",
        "run-upd",
        '{"op": "update", "fields": ["status"]}',
        '{"op": "update", "fields": ["status"]}',
    )


def test_audit_rows_of_a_failed_statement_are_rolled_back_with_it(schema_db):
    with psycopg.connect(schema_db) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO job_documents (user_id, parsed_data) VALUES ('u', '{}'), "
                "('u', '{\"skills\": \"x\"}')"
            )
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM document_audit_log").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM job_documents").fetchone()[0] == 0
