"""sql/005: indexes the planner really uses, materialized views, refresh and index-usage functions."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.types.json import Jsonb

DOC_TABLES = ("resume_documents", "job_documents", "optimization_results", "research_results")

# Realistic documents (source-data.md shapes) made set-based on the server: 10k resumes, 3k jobs.
# "Kubernetes" is a skill of every 500th resume only (20 rows), "quantum" is in the description of
# every 300th job (10 rows): selective searches, as real ones are.
FILL = """
WITH v AS (SELECT
    ARRAY['Ada','Bob','Cy','Dee','Eve','Finn','Gus','Hana','Ivan','Jo','Kai','Lea','Max','Nia','Oli','Pia'] AS first,
    ARRAY['Lee','Stone','Novak','Ito','Garcia','Smith','Berg','Khan','Rossi','Dubois','Silva','Meyer'] AS last,
    ARRAY['Python','Java','SQL','PostgreSQL','React','TypeScript','Docker','AWS','Go','Rust','Terraform',
          'Spark','Pandas','Django','Flask','GraphQL','Redis','Kafka','Linux','Git','CI/CD','Scala',
          'Node.js','C++','Azure','GCP','Airflow','Tableau','Excel','Figma'] AS skills,
    ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Stark Industries','Wayne Enterprises','Vandelay',
          'Cyberdyne','Soylent','Tyrell','Wonka'] AS companies,
    ARRAY['Software Engineer','Data Engineer','Backend Developer','Frontend Developer','DevOps Engineer',
          'Data Scientist','Site Reliability Engineer','Product Engineer'] AS positions,
    ARRAY['Built and operated services','Migrated legacy systems','Mentored junior engineers',
          'Designed data pipelines','Improved test coverage','Reduced cloud costs',
          'Led incident reviews','Automated deployments'] AS duties)
INSERT INTO resume_documents (user_id, filename, content_type, file_size, status, task_id, parsed_data, created_at)
SELECT 'user_' || (g % 200), 'cv_' || g || '.pdf', 'application/pdf', 20000 + g, 'completed', 'task-' || g,
       jsonb_build_object(
         'contact_info', jsonb_build_object(
             'full_name', v.first[1 + g % 16] || ' ' || v.last[1 + (g / 16) % 12],
             'email', 'person' || g || '@example.com', 'phone', '+1 555 ' || lpad((g % 10000)::text, 4, '0'),
             'address', 'Springfield', 'links', jsonb_build_array('https://example.com/' || g)),
         'summary', v.positions[1 + g % 8] || ' with ' || (2 + g % 15) || ' years of experience in '
                    || v.skills[1 + g % 30] || ' and ' || v.skills[1 + (g * 7) % 30] || '.',
         'work_experience', (SELECT jsonb_agg(jsonb_build_object(
                 'company', v.companies[1 + (g + w) % 12], 'position', v.positions[1 + (g + w) % 8],
                 'start_date', (2010 + w * 3)::text, 'end_date', CASE WHEN w = 0 THEN NULL ELSE (2012 + w * 3)::text END,
                 'is_current', w = 0, 'description', NULL,
                 'responsibilities', jsonb_build_array(v.duties[1 + (g + w) % 8], v.duties[1 + (g + 3 * w) % 8]),
                 'skills', jsonb_build_array(v.skills[1 + (g + w) % 30], v.skills[1 + (g * 3 + w) % 30])))
             FROM generate_series(0, g % 3) AS w),
         'education', jsonb_build_array(jsonb_build_object('institution', 'State University', 'degree', 'BSc')),
         'certifications', '[]'::jsonb,
         'skills', (SELECT jsonb_agg(v.skills[1 + (g * 11 + k * 5) % 30]) FROM generate_series(0, 2 + g % 4) AS k)
                   || CASE WHEN g % 500 = 0 THEN '["Kubernetes"]'::jsonb ELSE '[]'::jsonb END),
       now() - (g || ' minutes')::interval
  FROM v, generate_series(1, 10000) AS g;

WITH v AS (SELECT
    ARRAY['Python','Java','SQL','PostgreSQL','React','TypeScript','Docker','AWS','Go','Rust','Terraform',
          'Spark','Pandas','Django','Flask','GraphQL','Redis','Kafka','Linux','Git','CI/CD','Scala',
          'Node.js','C++','Azure','GCP','Airflow','Tableau','Excel','Figma'] AS skills,
    ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Stark Industries','Wayne Enterprises','Vandelay',
          'Cyberdyne','Soylent','Tyrell','Wonka'] AS companies,
    ARRAY['Berlin','London','New York','Remote','Paris','Austin'] AS cities)
INSERT INTO job_documents (user_id, title, company, location, remote_type, status, source_url, parsed_data, created_at)
SELECT 'user_' || (g % 200),
       (ARRAY['Senior','Junior','Staff','Lead'])[1 + g % 4] || ' ' || v.skills[1 + g % 30] || ' Engineer',
       v.companies[1 + g % 12], v.cities[1 + g % 6], (ARRAY['remote','hybrid','onsite'])[1 + g % 3],
       (ARRAY['pending','completed'])[1 + g % 2], 'https://jobs.example.com/' || g,
       jsonb_build_object(
         'description', 'We are hiring to build ' || v.skills[1 + g % 30] || ' services for our customers.'
                        || CASE WHEN g % 300 = 0 THEN ' Experience with quantum computing is a plus.' ELSE '' END,
         'requirements', jsonb_build_array((1 + g % 8) || '+ years of ' || v.skills[1 + g % 30],
                                           'Experience with ' || v.skills[1 + (g * 7) % 30]),
         'qualifications', jsonb_build_array('BSc in Computer Science or equivalent'),
         'benefits', jsonb_build_array('Remote friendly', 'Health insurance'),
         'skills', jsonb_build_array(v.skills[1 + g % 30], v.skills[1 + (g * 7) % 30]),
         'keywords', jsonb_build_array(lower(v.skills[1 + g % 30]), 'engineering')),
       now() - (g || ' minutes')::interval
  FROM v, generate_series(1, 3000) AS g;
ANALYZE resume_documents;
ANALYZE job_documents;
ANALYZE resume_documents_search;
ANALYZE job_documents_search;
"""


def plan_nodes(plan):
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


def explain(conn, sql, *params):
    raw = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params or None).fetchone()[0]
    doc = json.loads(raw) if isinstance(raw, str) else raw
    return list(plan_nodes(doc[0]["Plan"]))


def scans_of(nodes, table):
    """(node type, index name) for each scan of `table` in the plan."""
    return [
        (n["Node Type"], n.get("Index Name"))
        for n in nodes
        if n.get("Relation Name") == table
        or (n.get("Index Name") or "").startswith(f"idx_{table}_")
    ]


@pytest.fixture
def conn(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as c:
        yield c


def test_search_documents_uses_the_full_text_gin_indexes_on_10k_rows(conn):
    conn.execute(FILL)
    assert conn.execute("SELECT count(*) FROM resume_documents").fetchone()[0] == 10000

    # the vectors are in the search tables (sql/014), indexed there
    nodes = explain(conn, "SELECT * FROM search_documents('kubernetes')")
    resume_scans = scans_of(nodes, "resume_documents_search")
    assert ("Bitmap Index Scan", "idx_resume_documents_search_vector") in resume_scans, resume_scans
    assert not any(kind == "Seq Scan" for kind, _ in scans_of(nodes, "resume_documents"))
    assert not any(kind == "Seq Scan" for kind, _ in resume_scans), resume_scans
    job_scans = scans_of(nodes, "job_documents_search")
    assert ("Bitmap Index Scan", "idx_job_documents_search_vector") in job_scans, job_scans

    nodes = explain(conn, "SELECT * FROM search_documents('quantum computing', doc_type => 'job')")
    assert ("Bitmap Index Scan", "idx_job_documents_search_vector") in scans_of(
        nodes, "job_documents_search"
    )
    assert scans_of(nodes, "resume_documents") == []  # doc_type folds the resume branch away
    assert scans_of(nodes, "resume_documents_search") == []

    # and the index answers correctly: exactly the rows that hold the term
    found = conn.execute(
        "SELECT document_type, document_id FROM search_documents('kubernetes', max_results => 100)"
    ).fetchall()
    expected = {
        r[0]
        for r in conn.execute(
            "SELECT id FROM resume_documents WHERE parsed_data -> 'skills' ? 'Kubernetes'"
        )
    }
    assert len(expected) == 20
    assert {r[1] for r in found} == expected and {r[0] for r in found} == {"resume"}
    jobs = conn.execute(
        "SELECT document_id, snippet FROM search_documents('quantum computing', 'job')"
    ).fetchall()
    assert len(jobs) == 10 and all("<b>quantum</b>" in s for _, s in jobs)


def test_containment_and_trigram_queries_use_their_indexes(conn):
    conn.execute(FILL)
    nodes = explain(
        conn,
        "SELECT id FROM resume_documents WHERE parsed_data @> %s",
        Jsonb({"skills": ["Kubernetes"]}),
    )
    assert ("Bitmap Index Scan", "idx_resume_documents_parsed_data_gin") in scans_of(
        nodes, "resume_documents"
    )
    nodes = explain(conn, "SELECT id FROM job_documents WHERE metadata ? 'arango'")
    assert ("Bitmap Index Scan", "idx_job_documents_metadata_gin") in scans_of(
        nodes, "job_documents"
    )
    nodes = explain(conn, "SELECT id FROM resume_documents WHERE filename ILIKE '%cv_4242.%'")
    assert ("Bitmap Index Scan", "idx_resume_documents_filename_trgm") in scans_of(
        nodes, "resume_documents"
    )
    rows = conn.execute(
        "SELECT filename FROM resume_documents WHERE filename ILIKE '%cv_4242.%'"
    ).fetchall()
    assert rows == [("cv_4242.pdf",)]
    similar = conn.execute(
        "SELECT DISTINCT title FROM job_documents WHERE title % 'Senior Pyhton Engineer' ORDER BY 1"
    ).fetchall()
    assert ("Senior Python Engineer",) in similar

    # bloom: multi-column equality. With 250 of 3000 rows matching a sequential scan is the
    # cheaper plan, so seq scans are switched off here: this proves the index can serve the
    # query and gives the right answer, nothing more.
    sql = (
        "SELECT count(*) FROM job_documents WHERE company = 'Globex' AND location = 'London' "
        "AND remote_type = 'hybrid' AND status = 'completed'"
    )
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        nodes = explain(conn, sql)
        assert ("Bitmap Index Scan", "idx_job_documents_bloom") in scans_of(
            nodes, "job_documents"
        ), nodes
        assert (
            conn.execute(sql).fetchone()[0] == 250
        )  # g % 12 == 1: Globex, London, hybrid, completed


def test_indexes_exist_with_their_access_methods(conn):
    rows = dict(
        conn.execute(
            "SELECT i.relname, am.amname FROM pg_class i JOIN pg_am am ON am.oid = i.relam "
            "WHERE i.relkind = 'i' AND i.relname LIKE 'idx\\_%'"
        ).fetchall()
    )
    for t in DOC_TABLES:
        assert rows[f"idx_{t}_parsed_data_gin"] == "gin"
        assert rows[f"idx_{t}_metadata_gin"] == "gin"
        for name in ("user_created", "user_status", "active_user_created", "expires_at"):
            assert rows[f"idx_{t}_{name}"] == "btree"
    assert rows["idx_resume_documents_search_vector"] == "gin"  # sql/014: not on the documents
    assert rows["idx_job_documents_search_vector"] == "gin"
    assert "idx_resume_documents_fts" not in rows and "idx_job_documents_fts" not in rows
    assert rows["idx_job_documents_bloom"] == "bloom"
    for name in ("resume_documents_filename", "job_documents_title", "job_documents_company"):
        assert rows[f"idx_{name}_trgm"] == "gin"
    defs = dict(
        conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'idx\\_%'"
        ).fetchall()
    )
    assert "jsonb_path_ops" in defs["idx_resume_documents_parsed_data_gin"]
    assert (
        "WHERE (is_active AND (deleted_at IS NULL))"
        in defs["idx_job_documents_active_user_created"]
    )
    assert "(company, location, remote_type, status)" in defs["idx_job_documents_bloom"]


# materialized views ----------------------------------------------------------------------------


def small_corpus(conn):
    def resume(user, skills, **cols):
        parsed = {
            "contact_info": {"full_name": "N N", "email": "n@example.com", "links": []},
            "summary": "s",
            "work_experience": [{"company": "Acme", "position": "Dev", "skills": ["Git"]}],
            "education": [],
            "certifications": [],
            "skills": skills,
        }
        names = "".join(f", {k}" for k in cols)
        marks = "".join(", %s" for _ in cols)
        return conn.execute(
            f"INSERT INTO resume_documents (user_id, filename, status, parsed_data{names}) "
            f"VALUES (%s, 'cv.pdf', 'completed', %s{marks}) RETURNING id",
            (user, Jsonb(parsed), *cols.values()),
        ).fetchone()[0]

    def job(user, skills):
        parsed = {
            "description": "d",
            "requirements": [],
            "qualifications": [],
            "benefits": [],
            "skills": skills,
            "keywords": [],
        }
        return conn.execute(
            "INSERT INTO job_documents (user_id, title, company, parsed_data) "
            "VALUES (%s, 'Dev', 'Acme', %s) RETURNING id",
            (user, Jsonb(parsed)),
        ).fetchone()[0]

    ids = {
        "r1": resume("u1", ["Python", "SQL"]),
        "r2": resume("u1", ["python", "Go"]),
        "r3": resume("u2", ["Rust"]),
        "gone": resume("u2", ["Python"], is_active=False),
        "j1": job("u1", ["Python"]),
        "j2": job("u2", [{"name": "SQL"}, "Kafka"]),
    }
    for score in (80, 91):
        conn.execute(
            "INSERT INTO optimization_results (user_id, resume_id, job_id, status, ats_score, parsed_data) "
            "VALUES ('u1', %s, %s, 'completed', %s, '{}')",
            (ids["r1"], ids["j1"], score),
        )
    conn.execute(
        "INSERT INTO research_results (user_id, job_id, status, parsed_data) "
        "VALUES ('u2', %s, 'completed', %s)",
        (ids["j2"], Jsonb({"content_type": "markdown", "report_type": "company_research"})),
    )
    conn.execute("UPDATE job_documents SET status = 'completed' WHERE id = %s", (ids["j1"],))
    conn.execute(
        "INSERT INTO document_audit_log (document_type, document_id, user_id, action, created_at) "
        "VALUES ('resume', %s, 'u1', 'delete', now() - interval '40 days')",
        (ids["r1"],),
    )
    return ids


def test_materialized_views_refresh_concurrently_and_aggregate_correctly(conn):
    ids = small_corpus(conn)
    # created WITH DATA by 005 (on an empty database), so the first refresh is already concurrent
    result = conn.execute(
        "SELECT view_name, concurrent, duration_ms, row_count FROM refresh_materialized_views()"
    ).fetchall()
    assert [(r[0], r[1]) for r in result] == [
        ("user_document_stats", True),
        ("top_skills_view", True),
        ("recent_activity_view", True),
    ]
    assert all(r[2] >= 0 for r in result)
    assert [r[3] for r in result] == [2, 6, 3]

    stats = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT user_id, resume_count, job_count, optimization_count, research_count, total_documents, "
            "avg_ats_score, last_activity_at IS NOT NULL FROM user_document_stats"
        )
    }
    assert stats == {
        "u1": (2, 1, 2, 0, 5, 85.5, True),  # avg of 80 and 91
        "u2": (1, 1, 0, 1, 3, None, True),
    }  # the inactive resume is not counted

    skills = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT skill, display_name, resume_count, job_count, total_count FROM top_skills_view"
        )
    }
    assert skills == {
        "python": ("Python", 2, 1, 3),
        "sql": ("SQL", 1, 1, 2),
        "go": ("Go", 1, 0, 1),
        "git": ("Git", 3, 0, 3),
        "rust": ("Rust", 1, 0, 1),
        "kafka": ("Kafka", 0, 1, 1),
    }

    activity = {
        (r[0], r[1]): r[2:]
        for r in conn.execute(
            "SELECT user_id, action, event_count, document_count FROM recent_activity_view"
        )
    }
    # u1: 2 resumes, 1 job, 2 optimizations inserted; 1 job updated; the 40-day-old delete is out
    # u2: 2 resumes (one inactive), 1 job, 1 research inserted
    assert activity == {
        ("u1", "insert"): (5, 5),
        ("u1", "update"): (1, 1),
        ("u2", "insert"): (4, 4),
    }

    # changes show after the next (concurrent) refresh, and only then
    conn.execute(
        "UPDATE resume_documents SET deleted_at = now(), is_active = false WHERE id = %s",
        (ids["r2"],),
    )
    assert (
        conn.execute(
            "SELECT resume_count FROM user_document_stats WHERE user_id = 'u1'"
        ).fetchone()[0]
        == 2
    )
    conn.execute("SELECT * FROM refresh_materialized_views()")
    assert (
        conn.execute(
            "SELECT resume_count FROM user_document_stats WHERE user_id = 'u1'"
        ).fetchone()[0]
        == 1
    )
    assert (
        conn.execute("SELECT resume_count FROM top_skills_view WHERE skill = 'python'").fetchone()[
            0
        ]
        == 1
    )
    assert (
        conn.execute(
            "SELECT event_count FROM recent_activity_view WHERE user_id = 'u1' AND action = 'update'"
        ).fetchone()[0]
        == 2
    )


def test_refresh_falls_back_to_a_plain_refresh_for_an_unpopulated_view(conn):
    small_corpus(conn)
    conn.execute("REFRESH MATERIALIZED VIEW top_skills_view WITH NO DATA")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT * FROM top_skills_view")
    first = dict(
        conn.execute("SELECT view_name, concurrent FROM refresh_materialized_views()").fetchall()
    )
    assert first == {
        "user_document_stats": True,
        "top_skills_view": False,
        "recent_activity_view": True,
    }
    assert conn.execute("SELECT count(*) FROM top_skills_view").fetchone()[0] == 6
    second = dict(
        conn.execute("SELECT view_name, concurrent FROM refresh_materialized_views()").fetchall()
    )
    assert set(second.values()) == {True}


def test_every_materialized_view_has_a_unique_index_for_concurrent_refresh(conn):
    for view, cols in [
        ("user_document_stats", ["user_id"]),
        ("top_skills_view", ["skill"]),
        ("recent_activity_view", ["user_id", "action"]),
    ]:
        got = conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index x "
            "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
            "WHERE x.indrelid = %s::regclass AND x.indisunique AND x.indpred IS NULL "
            "GROUP BY x.indexrelid",
            (view,),
        ).fetchall()
        assert [cols] == [r[0] for r in got], view


def test_analyze_index_usage_lists_indexes_with_size_and_unused_flag(conn):
    rows = conn.execute(
        "SELECT table_name, index_name, index_scans, index_size_bytes, index_size, unused "
        "FROM analyze_index_usage()"
    ).fetchall()
    by_name = {r[1]: r for r in rows}
    assert len(rows) >= 40
    fts = by_name["idx_resume_documents_search_vector"]
    assert (
        fts[0] == "resume_documents_search"
        and fts[2] == 0
        and fts[3] > 0
        and fts[4].endswith("kB")
        and fts[5] is True
    )
    pkey = by_name["resume_documents_pkey"]
    assert pkey[5] is False  # backs the primary key: never reported as unused
    assert by_name["user_document_stats_user_id_key"][5] is False
    flags = [r[5] for r in rows]
    assert flags == sorted(flags, reverse=True)  # unused ones first
