"""sql/004: the JSONB helper functions, pinned on small inputs, on a real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb


@pytest.fixture
def conn(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as c:
        yield c


def one(conn, sql, *params):
    return conn.execute(sql, params).fetchone()[0]


def resume_doc(name, *, summary=None, skills=(), experience=(), education=(), email=None):
    """A resume's parsed_data shaped like the application's (source-data.md)."""
    return {
        "contact_info": {
            "full_name": name,
            "email": email or f"{name.split()[0].lower()}@example.com",
            "phone": "+1 555 0100",
            "address": "Springfield",
            "links": [],
        },
        "summary": summary,
        "work_experience": list(experience),
        "education": list(education),
        "certifications": [],
        "skills": list(skills),
    }


def job_doc(description="", *, requirements=(), skills=(), keywords=()):
    return {
        "description": description,
        "requirements": list(requirements),
        "qualifications": [],
        "benefits": [],
        "skills": list(skills),
        "keywords": list(keywords),
    }


def work(company, position, *, skills=(), responsibilities=()):
    return {
        "company": company,
        "position": position,
        "start_date": "2019",
        "end_date": None,
        "is_current": True,
        "description": None,
        "responsibilities": list(responsibilities),
        "skills": list(skills),
    }


def insert_resume(conn, user, parsed, *, filename="cv.pdf", age="0", **cols):
    cols = {"status": "completed", **cols}
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return one(
        conn,
        f"INSERT INTO resume_documents (user_id, filename, parsed_data, created_at, {names}) "
        f"VALUES (%s, %s, %s, now() - %s::interval, {marks}) RETURNING id",
        user,
        filename,
        Jsonb(parsed),
        f"{age} minutes",
        *cols.values(),
    )


def insert_job(conn, user, parsed, *, title=None, company=None, age="0", **cols):
    names = "".join(f", {k}" for k in cols)
    marks = "".join(", %s" for _ in cols)
    return one(
        conn,
        f"INSERT INTO job_documents (user_id, title, company, parsed_data, created_at{names}) "
        f"VALUES (%s, %s, %s, %s, now() - %s::interval{marks}) RETURNING id",
        user,
        title,
        company,
        Jsonb(parsed),
        f"{age} minutes",
        *cols.values(),
    )


# jsonb_merge_deep ------------------------------------------------------------------------------


def test_merge_deep_merges_nested_objects_and_b_wins_on_scalars_and_arrays(conn):
    a = {
        "contact_info": {
            "full_name": "Ann",
            "links": ["x"],
            "address": {"city": "Oslo", "zip": "1"},
        },
        "skills": ["Python", "SQL"],
        "summary": "old",
        "keep": 1,
    }
    b = {
        "contact_info": {"links": ["y", "z"], "address": {"zip": "2"}, "email": "a@b.c"},
        "skills": ["Go"],
        "summary": None,
        "new": {"k": True},
    }
    assert one(conn, "SELECT jsonb_merge_deep(%s, %s)", Jsonb(a), Jsonb(b)) == {
        "contact_info": {
            "full_name": "Ann",
            "links": ["y", "z"],
            "address": {"city": "Oslo", "zip": "2"},
            "email": "a@b.c",
        },
        "skills": ["Go"],
        "summary": None,
        "keep": 1,
        "new": {"k": True},
    }


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ({"x": {"y": 1}}, {"x": 5}, {"x": 5}),  # scalar replaces an object
        ({"x": 5}, {"x": {"y": 1}}, {"x": {"y": 1}}),  # object replaces a scalar
        ({"x": [1, 2]}, {"x": [3]}, {"x": [3]}),  # arrays are not concatenated
        ({"x": 1}, {}, {"x": 1}),
        ({}, {}, {}),
        ([1], {"x": 1}, {"x": 1}),  # not both objects: b
    ],
)
def test_merge_deep_edge_cases(conn, a, b, expected):
    assert one(conn, "SELECT jsonb_merge_deep(%s, %s)", Jsonb(a), Jsonb(b)) == expected


def test_merge_deep_sql_null_is_no_value_and_function_is_immutable(conn):
    assert one(conn, "SELECT jsonb_merge_deep(NULL, %s)", Jsonb({"a": 1})) == {"a": 1}
    assert one(conn, "SELECT jsonb_merge_deep(%s, NULL)", Jsonb({"a": 1})) == {"a": 1}
    assert one(conn, "SELECT provolatile FROM pg_proc WHERE proname = 'jsonb_merge_deep'") == "i"


def test_merge_deep_goes_many_levels_down(conn):
    def nest(depth, leaf):
        d = leaf
        for _ in range(depth):
            d = {"n": d}
        return d

    merged = one(
        conn,
        "SELECT jsonb_merge_deep(%s, %s)",
        Jsonb(nest(50, {"a": 1})),
        Jsonb(nest(50, {"b": 2})),
    )
    assert merged == nest(50, {"a": 1, "b": 2})


# extract_skills --------------------------------------------------------------------------------


def test_extract_skills_strings_objects_work_experience_dedupe_first_spelling_in_order(conn):
    doc = resume_doc(
        "Ann Lee",
        skills=[
            "Python",
            " SQL ",
            {"name": "Docker", "level": "expert"},
            {"level": 3},
            "",
            "python",
        ],
        experience=[
            work("Acme", "Dev", skills=["Go", "docker", {"name": "AWS"}]),
            work("Initech", "Ops"),
        ],
    )
    doc["technical_skills"] = ["sql", "Kubernetes"]
    doc["soft_skills"] = [{"name": "Leadership"}, "LEADERSHIP"]
    assert one(conn, "SELECT extract_skills(%s)", Jsonb(doc)) == [
        "Python",
        "SQL",
        "Docker",
        "Kubernetes",
        "Leadership",
        "Go",
        "AWS",
    ]


def test_extract_skills_of_a_job_and_of_the_oldest_layout(conn):
    assert one(
        conn, "SELECT extract_skills(%s)", Jsonb(job_doc(skills=["Rust", "rust", "Tokio"]))
    ) == ["Rust", "Tokio"]
    old = {
        "contact_info": {"full_name": "Old"},
        "experience": [{"company": "A", "skills": ["Perl"]}],
        "skills": ["C"],
    }
    assert one(conn, "SELECT extract_skills(%s)", Jsonb(old)) == ["C", "Perl"]


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({}, []),
        (None, []),
        ({"skills": "Python"}, ["Python"]),  # a lone string where a list was expected
        ({"skills": {"name": "Go"}}, ["Go"]),
        ({"skills": [1, None, ["x"], {"name": 5}]}, []),  # nothing usable, and no error
        ({"work_experience": {"skills": ["Elm"]}}, ["Elm"]),
        ([1, 2], []),
        ("text", []),
    ],
)
def test_extract_skills_never_fails_on_odd_shapes(conn, doc, expected):
    value = None if doc is None else Jsonb(doc)
    assert one(conn, "SELECT extract_skills(%s)", value) == expected


# full-text vectors -----------------------------------------------------------------------------

VECTOR_DOCS = [
    {},
    {"name": "John Doe", "skills": ["Python", "SQL"]},  # the operators' guide example
    {
        "contact_info": {"full_name": "Ann Lee"},
        "summary": "Backend engineer",
        "skills": ["Python", {"name": "Docker"}, "python"],
        "technical_skills": ["Kafka"],
        "soft_skills": ["Mentoring"],
        "work_experience": [
            {
                "company": "Acme",
                "position": "Dev",
                "description": "Payments",
                "responsibilities": ["Built APIs", "Ran on-call"],
                "skills": ["Go", "docker"],
            },
            "not an object",
        ],
        "experience": [{"title": "Intern", "company": "Initech", "skills": ["Perl"]}],
    },
    {"skills": "Python", "work_experience": {"company": "Solo", "responsibilities": "one line"}},
    {"summary": {"odd": "object"}, "contact_info": "just text", "skills": [1, None, {"name": 2}]},
]


@pytest.mark.parametrize("doc", VECTOR_DOCS)
def test_resume_vector_is_the_weighted_composition_of_the_public_helpers(conn, doc):
    composed = (
        "setweight(to_tsvector('english', coalesce(d -> 'contact_info' ->> 'full_name', d ->> 'name', '')), 'A')"
        " || setweight(to_tsvector('english', array_to_string(extract_skills(d), ' ')), 'B')"
        " || setweight(to_tsvector('english', concat_ws(' ', d ->> 'summary', resume_experience_text(d))), 'C')"
    )
    same, vector = conn.execute(
        f"SELECT resume_search_vector(d) = {composed}, resume_search_vector(d)::text "
        f"FROM (SELECT %s::jsonb AS d) AS x",
        (Jsonb(doc),),
    ).fetchone()
    assert same, vector


@pytest.mark.parametrize(
    "doc",
    VECTOR_DOCS
    + [
        {
            "description": "Build rockets",
            "requirements": ["5 years Rust", {"detail": "C++"}],
            "qualifications": ["BSc"],
            "benefits": ["Gym"],
            "skills": ["Rust", {"name": "Tokio"}],
            "keywords": ["embedded", "rust"],
        }
    ],
)
def test_job_vector_is_the_weighted_composition_of_the_public_helpers(conn, doc):
    composed = (
        "setweight(to_tsvector('english', coalesce(t, '')), 'A')"
        " || setweight(to_tsvector('english', concat_ws(' ', c, array_to_string(extract_skills(d), ' '),"
        "                                               jsonb_text_values(d -> 'keywords'))), 'B')"
        " || setweight(to_tsvector('english', concat_ws(' ', d ->> 'description',"
        "      jsonb_text_values(d -> 'requirements'), jsonb_text_values(d -> 'qualifications'))), 'C')"
    )
    same, vector = conn.execute(
        f"SELECT job_search_vector(t, c, d) = {composed}, job_search_vector(t, c, d)::text "
        f"FROM (SELECT 'Senior Dev'::text AS t, 'Acme'::text AS c, %s::jsonb AS d) AS x",
        (Jsonb(doc),),
    ).fetchone()
    assert same, vector


def test_resume_vector_weights_name_a_skills_b_text_c(conn):
    doc = resume_doc(
        "Ann Lee",
        summary="Backend engineer",
        skills=["Python"],
        experience=[work("Acme", "Dev", responsibilities=["Built APIs"])],
    )
    assert one(conn, "SELECT resume_search_vector(%s)::text", Jsonb(doc)) == (
        "'acm':7C 'ann':1A 'api':9C 'backend':4C 'built':8C 'dev':6C 'engin':5C 'lee':2A 'python':3B"
    )
    assert one(conn, "SELECT resume_search_text(%s)", Jsonb(doc)) == (
        "Ann Lee\nBackend engineer\nPython\nDev Acme Built APIs"
    )


def test_vectors_of_a_huge_document_stay_under_the_tsvector_limit(conn):
    # 3 MB of distinct words: to_tsvector over all of it would pass the 1 MB tsvector limit
    words = " ".join(f"w{i:07d}x" for i in range(300_000))
    doc = resume_doc("Big Doc", summary=words, skills=["Python"])
    size = one(conn, "SELECT pg_column_size(resume_search_vector(%s))", Jsonb(doc))
    assert 0 < size < 1_048_576
    assert (
        one(conn, "SELECT pg_column_size(job_search_vector('t', 'c', %s))", Jsonb(job_doc(words)))
        < 1_048_576
    )


# calculate_keyword_match -----------------------------------------------------------------------


def test_keyword_match_is_the_share_of_job_terms_found_in_the_resume(conn):
    resume = resume_doc(
        "Ann Lee",
        summary="I write Python and C++ code, some Node.js too.",
        skills=["SQL"],
        experience=[work("Acme", "Developer", responsibilities=["Ran PostgreSQL"])],
    )
    job = job_doc(
        "desc", skills=["SQL", "Rust"], keywords=["python", "c++", "Node.js", "go", "postgresql"]
    )
    # terms: python c++ node.js go postgresql sql rust -> found python c++ node.js postgresql sql
    assert one(
        conn, "SELECT calculate_keyword_match(%s, %s)", Jsonb(resume), Jsonb(job)
    ) == Decimal("71.43")


def test_keyword_match_needs_whole_words_and_ignores_case_and_duplicates(conn):
    resume = resume_doc("Bo", summary="A good PYTHONIC javascript developer", skills=["Java"])
    job = job_doc(keywords=["Go", "python", "java", "JAVA", {"name": "Java"}])
    # terms: go, python, java; only java is a whole word of the resume
    assert one(
        conn, "SELECT calculate_keyword_match(%s, %s)", Jsonb(resume), Jsonb(job)
    ) == Decimal("33.33")


def test_keyword_match_of_a_job_without_terms_is_zero_and_full_match_is_100(conn):
    resume = resume_doc("Bo", skills=["Python"])
    assert one(conn, "SELECT calculate_keyword_match(%s, %s)", Jsonb(resume), Jsonb(job_doc())) == 0
    assert (
        one(
            conn,
            "SELECT calculate_keyword_match(%s, %s)",
            Jsonb(resume),
            Jsonb(job_doc(skills=["python"])),
        )
        == 100
    )


def test_keyword_match_does_not_treat_regex_characters_specially(conn):
    resume = resume_doc("Bo", summary="Knows C# and .NET (core)")
    job = job_doc(keywords=["c#", ".net", "(core)", "c.+", "[a-z]"])
    assert one(
        conn, "SELECT calculate_keyword_match(%s, %s)", Jsonb(resume), Jsonb(job)
    ) == Decimal("60.00")


# calculate_ats_score ---------------------------------------------------------------------------

WEIGHTS = {
    "keyword_match": 0.35,
    "skills_match": 0.25,
    "experience": 0.20,
    "education": 0.10,
    "completeness": 0.10,
}


def test_ats_score_breakdown_and_weights(conn):
    resume = resume_doc(
        "Ann Lee",
        summary="Python developer",
        experience=[work("Acme", "Dev", skills=["Python"])],
        education=[{"institution": "MIT", "degree": "BSc"}],
        skills=["SQL"],
    )
    job = job_doc("Backend role", skills=["Python", "Java"], keywords=["python", "sql", "java"])
    score = one(conn, "SELECT calculate_ats_score(%s, %s)", Jsonb(resume), Jsonb(job))
    assert score == {
        "keyword_match": 66.67,  # python, sql found; java not
        "skills_match": 50,  # Python of Python, Java
        "experience": 25,  # one work experience entry
        "education": 100,
        "completeness": 100,  # name, email, summary, experience, skills
        "overall": 60.83,  # .35*66.67 + .25*50 + .20*25 + .10*100 + .10*100
        "weights": WEIGHTS,
    }
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_ats_score_caps_experience_and_counts_completeness_parts(conn):
    resume = {
        "contact_info": {"full_name": "Cy", "email": "", "phone": ""},
        "summary": "  ",
        "work_experience": [work(f"C{i}", "Dev") for i in range(6)],
        "education": [],
        "skills": [],
    }
    job = job_doc(skills=["Python"])
    score = one(conn, "SELECT calculate_ats_score(%s, %s)", Jsonb(resume), Jsonb(job))
    assert score["experience"] == 100  # 6 * 25, capped
    assert score["education"] == 0
    assert score["completeness"] == 40  # name + work experience only
    assert score["keyword_match"] == 0 and score["skills_match"] == 0
    assert score["overall"] == pytest.approx(0.20 * 100 + 0.10 * 40)


def test_ats_score_of_empty_documents_is_all_zero(conn):
    score = one(conn, "SELECT calculate_ats_score('{}', '{}')")
    assert {k: v for k, v in score.items() if k != "weights"} == {
        "keyword_match": 0,
        "skills_match": 0,
        "experience": 0,
        "education": 0,
        "completeness": 0,
        "overall": 0,
    }


# search_documents ------------------------------------------------------------------------------


@pytest.fixture
def corpus(conn):
    ids = {}
    ids["ada"] = insert_resume(
        conn,
        "u1",
        resume_doc(
            "Ada Lovelace",
            summary="Backend engineer who loves Python.",
            skills=["Python", "PostgreSQL"],
            experience=[
                work("Acme", "Engineer", responsibilities=["Designed the billing service"])
            ],
        ),
        age="30",
    )
    ids["bob"] = insert_resume(
        conn,
        "u1",
        resume_doc(
            "Bob Stone", summary="Java developer with some Python scripting.", skills=["Java"]
        ),
        age="20",
    )
    ids["job"] = insert_job(
        conn,
        "u2",
        job_doc("Build APIs in Python for payments.", skills=["Python"], keywords=["fintech"]),
        title="Senior Python Developer",
        company="Acme",
        age="10",
    )
    ids["rust"] = insert_resume(
        conn, "u1", resume_doc("Cy Rust", summary="Systems programmer.", skills=["Rust"])
    )
    ids["inactive"] = insert_resume(
        conn, "u1", resume_doc("In Active", skills=["Python"]), is_active=False, filename="old.pdf"
    )
    ids["deleted"] = insert_resume(
        conn, "u1", resume_doc("Del Eted", skills=["Python"]), filename="d.pdf"
    )
    conn.execute("UPDATE resume_documents SET deleted_at = now() WHERE id = %s", (ids["deleted"],))
    ids["expired"] = insert_resume(
        conn, "u1", resume_doc("Ex Pired", skills=["Python"]), filename="e.pdf"
    )
    conn.execute(
        "UPDATE resume_documents SET expires_at = now() - interval '1 day' WHERE id = %s",
        (ids["expired"],),
    )
    return ids


def search(conn, *args, **kwargs):
    params = [*args] + list(kwargs.values())
    named = ", ".join([*["%s"] * len(args), *[f"{k} => %s" for k in kwargs]])
    return conn.execute(
        f"SELECT document_type, document_id, user_id, title, rank, snippet "
        f"FROM search_documents({named})",
        params,
    ).fetchall()


def test_search_ranks_weighted_matches_and_skips_inactive_deleted_expired(conn, corpus):
    rows = search(conn, "python")
    assert [r[1] for r in rows] == [corpus["job"], corpus["ada"], corpus["bob"]]
    assert [r[0] for r in rows] == ["job", "resume", "resume"]
    assert [r[2] for r in rows] == ["u2", "u1", "u1"]
    assert [r[3] for r in rows] == ["Senior Python Developer", "Ada Lovelace", "Bob Stone"]
    ranks = [r[4] for r in rows]
    assert ranks[0] > ranks[1] > ranks[2] > 0


def test_search_snippet_highlights_the_match(conn, corpus):
    rows = search(conn, "billing")
    assert [r[1] for r in rows] == [corpus["ada"]]
    snippet = rows[0][5]
    assert "<b>billing</b>" in snippet
    assert "\n" not in snippet
    job = search(conn, "payments")
    assert [r[1] for r in job] == [corpus["job"]] and "<b>payments</b>" in job[0][5]


def test_search_filters_type_user_and_limit(conn, corpus):
    assert [r[1] for r in search(conn, "python", doc_type="resume")] == [
        corpus["ada"],
        corpus["bob"],
    ]
    assert [r[1] for r in search(conn, "python", doc_type="job")] == [corpus["job"]]
    assert [r[1] for r in search(conn, "python", user_id="u1")] == [corpus["ada"], corpus["bob"]]
    assert [r[1] for r in search(conn, "python", max_results=1)] == [corpus["job"]]
    assert search(conn, "python", doc_type="optimization") == []


def test_search_understands_web_search_syntax_and_stemming(conn, corpus):
    assert [r[1] for r in search(conn, '"backend engineer"')] == [corpus["ada"]]
    assert [r[1] for r in search(conn, "python -java")] == [corpus["job"], corpus["ada"]]
    # Rust is the resume's name (weight A) and a skill (B); PostgreSQL only a skill of Ada's (B)
    assert [r[1] for r in search(conn, "rust or postgresql")] == [corpus["rust"], corpus["ada"]]
    assert [r[1] for r in search(conn, "programmers")] == [corpus["rust"]]  # english stemming
    assert search(conn, "") == []
    assert search(conn, "cobol") == []


# get_user_documents ----------------------------------------------------------------------------


def test_user_documents_newest_first_paged_active_only(conn):
    r_old = insert_resume(
        conn, "u1", resume_doc("A One", skills=["X"]), filename="one.pdf", age="50"
    )
    r_mid = insert_resume(
        conn, "u1", resume_doc("A Two", skills=["X"]), filename="two.pdf", age="40"
    )
    job = insert_job(conn, "u1", job_doc("d"), title="", company="Globex", age="30")
    opt = one(
        conn,
        "INSERT INTO optimization_results (user_id, resume_id, job_id, optimization_type, status, "
        "content, ats_score, parsed_data, created_at) VALUES ('u1', %s, %s, 'targeted', 'completed', "
        "'# CV', 80, '{}', now() - interval '20 minutes') RETURNING id",
        r_mid,
        job,
    )
    res = one(
        conn,
        "INSERT INTO research_results (user_id, job_id, company, job_title, status, content, "
        "parsed_data, created_at) VALUES ('u1', %s, 'Globex', 'Engineer', 'completed', '# R', "
        "%s, now() - interval '10 minutes') RETURNING id",
        job,
        Jsonb({"content_type": "markdown", "report_type": "company_research", "word_count": 2}),
    )
    insert_resume(
        conn, "u1", resume_doc("Gone", skills=["X"]), filename="gone.pdf", is_active=False
    )
    insert_resume(conn, "u2", resume_doc("Other User", skills=["X"]), filename="other.pdf")
    expired = insert_resume(
        conn, "u1", resume_doc("Old", skills=["X"]), filename="exp.pdf", age="5"
    )
    conn.execute(
        "UPDATE resume_documents SET expires_at = now() - interval '1 minute' WHERE id = %s",
        (expired,),
    )

    def page(n, size=2, doc_type=None):
        return conn.execute(
            "SELECT document_type, document_id, title, status, total_count "
            "FROM get_user_documents('u1', %s, %s, %s)",
            (doc_type, size, n),
        ).fetchall()

    assert page(0) == [
        ("research", res, "Engineer at Globex", "completed", 5),
        ("optimization", opt, "targeted", "completed", 5),
    ]
    assert page(1) == [
        ("job", job, "Globex", "pending", 5),
        ("resume", r_mid, "two.pdf", "completed", 5),
    ]
    assert page(2) == [("resume", r_old, "one.pdf", "completed", 5)]
    assert page(3) == []
    assert [r[1] for r in page(0, size=50, doc_type="resume")] == [r_mid, r_old]
    assert [r[0] for r in conn.execute("SELECT document_id FROM get_user_documents('u1')")] == [
        res,
        opt,
        job,
        r_mid,
        r_old,
    ]
    assert conn.execute("SELECT * FROM get_user_documents('nobody')").fetchall() == []
    # parsed_data and timestamps come along
    row = conn.execute(
        "SELECT parsed_data, created_at < updated_at + interval '1 hour' "
        "FROM get_user_documents('u1', 'resume', 1, 0)"
    ).fetchone()
    assert row[0]["contact_info"]["full_name"] == "A Two" and row[1] is True


# cleanup_old_documents -------------------------------------------------------------------------


def test_cleanup_soft_deletes_expired_rows_counts_them_and_audits_each(conn):
    expired_r = insert_resume(conn, "u1", resume_doc("Exp One", skills=["X"]), filename="a.pdf")
    expired_inactive = insert_resume(
        conn, "u1", resume_doc("Exp Two", skills=["X"]), filename="b.pdf", is_active=False
    )
    expired_job = insert_job(conn, "u2", job_doc("old posting"), title="Old job")
    future = insert_resume(conn, "u1", resume_doc("Future", skills=["X"]), filename="c.pdf")
    never = insert_resume(conn, "u1", resume_doc("Never", skills=["X"]), filename="d.pdf")
    already = insert_resume(conn, "u1", resume_doc("Already", skills=["X"]), filename="e.pdf")
    conn.execute(
        "UPDATE resume_documents SET expires_at = now() - interval '1 day' WHERE id = ANY(%s)",
        ([expired_r, expired_inactive, already],),
    )
    conn.execute(
        "UPDATE resume_documents SET deleted_at = now() - interval '1 hour' WHERE id = %s",
        (already,),
    )
    conn.execute(
        "UPDATE job_documents SET expires_at = now() - interval '1 second' WHERE id = %s",
        (expired_job,),
    )
    conn.execute(
        "UPDATE resume_documents SET expires_at = now() + interval '1 day' WHERE id = %s", (future,)
    )
    mark = one(conn, "SELECT coalesce(max(id), 0) FROM document_audit_log")

    assert one(conn, "SELECT cleanup_old_documents()") == 3

    rows = dict(
        ((r[0], (r[1], r[2] is not None)))
        for r in conn.execute(
            "SELECT id, is_active, deleted_at FROM resume_documents UNION ALL "
            "SELECT id, is_active, deleted_at FROM job_documents"
        )
    )
    assert rows[expired_r] == (False, True)
    assert rows[expired_inactive] == (False, True)
    assert rows[expired_job] == (False, True)
    assert rows[future] == (True, False)
    assert rows[never] == (True, False)
    audit = conn.execute(
        "SELECT document_type, document_id, user_id, action, changes FROM document_audit_log "
        "WHERE id > %s ORDER BY id",
        (mark,),
    ).fetchall()
    assert sorted((a[0], str(a[1]), a[2], a[3]) for a in audit) == sorted(
        [
            ("resume", str(expired_r), "u1", "update"),
            ("resume", str(expired_inactive), "u1", "update"),
            ("job", str(expired_job), "u2", "update"),
        ]
    )
    assert all("deleted_at" in a[4]["fields"] for a in audit)
    # soft-deleted rows disappear from the user's list and stay in the table
    assert expired_r not in [
        r[0] for r in conn.execute("SELECT document_id FROM get_user_documents('u1')")
    ]
    # nothing left to do: 0, no new audit rows
    mark = one(conn, "SELECT max(id) FROM document_audit_log")
    assert one(conn, "SELECT cleanup_old_documents()") == 0
    assert one(conn, "SELECT count(*) FROM document_audit_log WHERE id > %s", mark) == 0
