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


# Updates whose changed fields 011's column-by-column comparison must name exactly as 006's
# whole-row jsonb comparison did: jsonb values, numerics of equal value written differently,
# timestamps, NULLs, a column not changed by value although SET, and updated_at alone.
_UPDATES = [
    "SET parsed_data = parsed_data || '{\"x\": 1}', status = 'completed'",
    "SET file_size = 10",  # 10 -> 10: SET but not changed
    "SET file_size = NULL, file_hash = 'h2'",
    'SET metadata = metadata || \'{"arango": {"_rev": "r2"}}\', filename = \'b.pdf\'',
    "SET updated_at = now() - interval '1 day'",  # updated_at is never a field
    "SET expires_at = '2030-01-01 00:00:00+00', deleted_at = NULL",
    "SET is_active = false, error_message = ''",
]


def _audit_fields_of_updates(conn) -> list:
    conn.execute("DELETE FROM resume_documents")
    conn.execute("DELETE FROM document_audit_log")
    conn.execute(
        "INSERT INTO resume_documents (id, user_id, filename, file_size, file_hash, parsed_data,"
        " metadata) SELECT ('00000000-0000-0000-0000-00000000000' || g)::uuid, 'u' || g, 'a.pdf',"
        ' 10, \'h\', \'{"skills": ["SQL"]}\', \'{"arango": {"_rev": "r1"}}\''
        " FROM generate_series(1, 2) g"
    )
    for i, update in enumerate(_UPDATES):
        conn.execute(f"SELECT set_config('etl.run_id', '{'run' if i % 2 else ''}', false)")
        conn.execute(f"UPDATE resume_documents {update}")
    return conn.execute(
        "SELECT document_id, action, changes, run_id FROM document_audit_log ORDER BY id"
    ).fetchall()


def test_audit_of_updates_by_column_names_the_same_fields_as_006(schema_db):
    """sql/011 compares the columns one by one (a quarter of the apply's cost before, see
    docs/performance.md); its audit rows are those of 006's whole-row comparison."""
    with psycopg.connect(schema_db, autocommit=True) as conn:
        with_012 = _audit_fields_of_updates(conn)
        undone = conn.execute("SELECT * FROM rollback.rollback_audit_update_by_column()")
        assert [r[0] for r in undone] == [
            "restored function audit_document_changes (006)",
            "deleted migration_history 011",
        ]
        with_006 = _audit_fields_of_updates(conn)
        again = conn.execute("SELECT * FROM rollback.rollback_audit_update_by_column()")
        assert again.fetchall() == []  # idempotent
    assert with_012 == with_006
    fields = [c.get("fields") for _, action, c, _ in with_012 if c["op"] == "update"]
    assert fields == [
        ["parsed_data", "status"],
        ["parsed_data", "status"],
        [],
        [],
        ["file_hash", "file_size"],
        ["file_hash", "file_size"],
        ["filename", "metadata"],
        ["filename", "metadata"],
        [],
        [],
        ["expires_at"],
        ["expires_at"],
        ["error_message", "is_active"],
        ["error_message", "is_active"],
    ]
