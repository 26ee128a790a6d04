"""sql/014: the full-text vectors live in search tables, kept by triggers, recomputed only when
their text changes; search_documents() reads them; rollback puts 005/004 back."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import SEARCH_VECTORS_WRONG

RESUME = {
    "contact_info": {"full_name": "Ada Lovelace", "email": "ada@example.com"},
    "summary": "Engineer with analytical engines and Kubernetes.",
    "skills": ["Python", "Kubernetes"],
    "work_experience": [{"company": "Babbage", "position": "Analyst", "skills": ["Math"]}],
}
JOB = {"description": "Build quantum services", "skills": ["Go"]}


@pytest.fixture
def conn(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as c:
        yield c


def _resume(conn, doc=RESUME, user="u1") -> str:
    return conn.execute(
        "INSERT INTO resume_documents (user_id, filename, status, parsed_data)"
        " VALUES (%s, 'cv.pdf', 'completed', %s) RETURNING id::text",
        (user, Jsonb(doc)),
    ).fetchone()[0]


def _search_ctid(conn, rid: str):
    return conn.execute(
        "SELECT ctid::text FROM resume_documents_search WHERE id = %s", (rid,)
    ).fetchone()


def test_vectors_follow_inserts_updates_deletes_and_truncate(conn):
    a, b = _resume(conn), _resume(conn, {**RESUME, "summary": "Poet"})
    conn.execute(
        "INSERT INTO job_documents (user_id, title, company, parsed_data)"
        " VALUES ('u1', 'Go Engineer', 'Acme', %s), ('u2', 'Chef', 'Diner', %s)",
        (Jsonb(JOB), Jsonb({"description": "soup"})),
    )
    assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0
    conn.execute(
        "UPDATE resume_documents SET parsed_data = %s WHERE id = %s",
        (Jsonb({"summary": "Gardener"}), a),
    )
    conn.execute("UPDATE job_documents SET company = 'Globex' WHERE title = 'Go Engineer'")
    conn.execute("UPDATE resume_documents SET id = gen_random_uuid() WHERE id = %s", (b,))
    assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0
    conn.execute("DELETE FROM resume_documents WHERE id = %s", (a,))
    conn.execute("DELETE FROM job_documents WHERE title = 'Chef'")
    assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM resume_documents_search").fetchone()[0] == 1
    conn.execute("TRUNCATE resume_documents, job_documents CASCADE")
    assert conn.execute(
        "SELECT (SELECT count(*) FROM resume_documents_search)"
        " + (SELECT count(*) FROM job_documents_search)"
    ).fetchone()[0] == 0  # fmt: skip


def test_an_update_that_keeps_the_text_does_not_rewrite_the_vector(conn):
    rid = _resume(conn)
    before = _search_ctid(conn, rid)
    conn.execute(
        "UPDATE resume_documents SET status = 'processing', metadata = '{\"x\": 1}' WHERE id = %s",
        (rid,),
    )
    assert _search_ctid(conn, rid) == before  # not recomputed: the same tuple
    # the same document written again as a new value (what the merge core does) keeps it too
    conn.execute("UPDATE resume_documents SET parsed_data = %s WHERE id = %s", (Jsonb(RESUME), rid))
    assert _search_ctid(conn, rid) == before
    conn.execute(
        'UPDATE resume_documents SET parsed_data = parsed_data || \'{"summary": "Rust"}\''
        " WHERE id = %s",
        (rid,),
    )
    assert _search_ctid(conn, rid) != before
    assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0


def test_a_missing_vector_heals_on_the_next_update_and_replica_sessions_keep_them(conn):
    rid = _resume(conn)
    conn.execute("DELETE FROM resume_documents_search WHERE id = %s", (rid,))
    conn.execute("UPDATE resume_documents SET status = 'failed' WHERE id = %s", (rid,))
    assert _search_ctid(conn, rid) is not None
    # a replica-role session (logical replication's apply) fires ENABLE ALWAYS triggers
    conn.execute("SET session_replication_role = replica")
    other = _resume(conn, {**RESUME, "summary": "replicated"})
    conn.execute("RESET session_replication_role")
    assert _search_ctid(conn, other) is not None
    assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0


def test_search_documents_finds_by_the_stored_vectors_and_verify_is_ok(conn):
    rid = _resume(conn)
    _resume(conn, {"summary": "Gardener"}, user="u2")
    found = conn.execute(
        "SELECT document_type, document_id::text, title, snippet FROM search_documents('kubernetes')"
    ).fetchall()
    assert [(t, i, title) for t, i, title, _ in found] == [("resume", rid, "Ada Lovelace")]
    assert "<b>Kubernetes</b>" in found[0][3]
    not_ok = conn.execute(
        "SELECT \"check\", status FROM verify_schema_integrity() WHERE status <> 'ok'"
    ).fetchall()
    assert not_ok == []
    fts = conn.execute(
        "SELECT status, detail FROM verify_schema_integrity()"
        " WHERE \"check\" = 'index resume_documents: full-text GIN'"
    ).fetchone()
    assert fts == ("ok", "on resume_documents_search")
    conn.execute("DROP INDEX idx_resume_documents_search_vector")
    assert conn.execute(
        "SELECT status FROM verify_schema_integrity()"
        " WHERE \"check\" = 'index resume_documents: full-text GIN'"
    ).fetchone() == ("missing",)  # fmt: skip


def test_rollback_puts_the_expression_indexes_and_004s_search_back(conn):
    _resume(conn)
    query = "SELECT document_type, document_id, title, rank, snippet FROM search_documents('ada')"
    with_tables = conn.execute(query).fetchall()
    assert len(with_tables) == 1
    done = [r[0] for r in conn.execute("SELECT * FROM rollback.rollback_search_tables()")]
    assert "deleted migration_history 014" in done
    assert conn.execute(
        "SELECT to_regclass('resume_documents_search') IS NULL"
        " AND to_regclass('idx_resume_documents_fts') IS NOT NULL"
        " AND to_regclass('idx_job_documents_fts') IS NOT NULL"
        " AND to_regprocedure('verify_schema_integrity_core()') IS NULL"
    ).fetchone()[0]
    assert conn.execute(query).fetchall() == with_tables  # 004's body: the same answer
    assert (
        conn.execute(
            "SELECT count(*) FROM verify_schema_integrity() WHERE status <> 'ok'"
        ).fetchone()[0]
        == 0
    )
    _resume(conn, {"summary": "after the rollback"})  # no trigger left behind


def test_a_load_into_empty_tables_leaves_the_vectors_to_the_index_build(schema_db):
    """etl/indexes.py defers the search table's index with the document table's; meanwhile the
    trigger computes no vector, and the build fills them all before it builds the index."""
    from etl import indexes

    with psycopg.connect(schema_db) as conn:
        assert indexes.defer(conn, "run-1", ["resume_documents"])
        conn.commit()
        deferred = conn.execute("select index_name from etl_deferred_indexes").fetchall()
        assert ("idx_resume_documents_search_vector",) in deferred
        rid = _resume(conn)
        conn.commit()
        assert _search_ctid(conn, rid) is None  # left to the build
        indexes.rebuild(conn, ["resume_documents"])
        assert _search_ctid(conn, rid) is not None
        assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0
        assert conn.execute(
            "select to_regclass('idx_resume_documents_search_vector') is not null"
            " and not exists (select 1 from etl_deferred_indexes)"
        ).fetchone()[0]
        conn.commit()
        other = _resume(conn, {"summary": "after the load"})  # the trigger's own again
        assert _search_ctid(conn, other) is not None
