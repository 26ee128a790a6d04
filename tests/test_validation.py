"""006 validation on a real PostgreSQL: the application's real shapes pass, each broken case is
rejected with a message naming the table, the field and the (truncated) value."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from etl.schema import apply_schema
from tests.helpers import REPO


@pytest.fixture(scope="module")
def db(pg_admin_dsn):
    """One schema'd database for the module; every test works inside a transaction it rolls back."""
    name = f"etl_test_val_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(pg_admin_dsn, dbname=name)
    apply_schema(dsn, REPO / "sql")
    yield dsn
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(db):
    with psycopg.connect(db) as c:
        yield c
        c.rollback()


def insert(conn, table: str, **cols):
    cols.setdefault("user_id", "user_gV1wS2Jw")
    if table == "resume_documents":
        cols.setdefault("filename", "cv.pdf")
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    vals = [Jsonb(v) if k in ("parsed_data", "metadata") else v for k, v in cols.items()]
    return conn.execute(
        f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING id", vals
    ).fetchone()[0]


def rejected(conn, table: str, **cols) -> str:
    with pytest.raises(psycopg.Error) as err:
        with conn.transaction():
            insert(conn, table, **cols)
    return err.value.diag.message_primary


# -- the real shapes (source-data.md and tests/cases/documents) --------------------------------

RESUME = {
    "contact_info": {
        "full_name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0000",
        "address": "London",
        "links": [],
    },
    "summary": None,
    "work_experience": [
        {
            "company": "Analytical Engines Ltd",
            "position": "Programmer",
            "start_date": "2019",
            "end_date": None,
            "is_current": True,
            "description": None,
            "responsibilities": ["notes on the engine"],
            "skills": ["algorithms"],
        }
    ],
    "education": [],
    "certifications": [],
    "skills": ["mathematics", "algorithms"],
}
RESUME_OLDEST = {
    "contact_info": {"full_name": "Alan Turing", "email": ""},
    "summary": None,
    "experience": [{"company": "Bletchley Park", "skills": ["cryptanalysis"]}],
    "education": [{"school": "King's College"}],
    "skills": ["logic"],
}
JOB = {
    "description": "",
    "requirements": [],
    "qualifications": [],
    "benefits": [],
    "skills": [],
    "keywords": [],
}
OPTIMIZED = {"summary": "Better.", "skills": ["algorithms"], "ats_score": 87.5}
RESEARCH = {"content_type": "markdown", "report_type": "company_research", "word_count": 812}


def test_validation_accepts_the_real_shapes(conn):
    r = insert(
        conn,
        "resume_documents",
        parsed_data=RESUME,
        status="completed",
        metadata={"source": "arangodb", "parser_version": "2", "file": {"filename": "cv.pdf"}},
    )
    insert(conn, "resume_documents", parsed_data=RESUME_OLDEST, status="completed")
    insert(
        conn,
        "resume_documents",
        parsed_data={"contact_info": None, "skills": None},
        status="completed",
    )
    insert(conn, "resume_documents", parsed_data={}, status="pending")
    insert(conn, "resume_documents", parsed_data={}, status="failed")
    j = insert(
        conn, "job_documents", parsed_data=JOB, status="pending", title="", company="", job_url=""
    )
    insert(conn, "job_documents", parsed_data={**JOB, "salary_range": {"min": 50000, "max": 50000}})
    insert(conn, "job_documents", parsed_data={**JOB, "salary_min": 1, "salary_max": 2})
    insert(
        conn,
        "optimization_results",
        parsed_data=OPTIMIZED,
        resume_id=r,
        job_id=j,
        ats_score=87.5,
        keyword_match_score=0,
        status="completed",
    )
    insert(conn, "research_results", parsed_data=RESEARCH, job_id=j, status="completed")
    assert conn.execute("SELECT count(*) FROM resume_documents").fetchone()[0] == 5


BROKEN = [
    (
        "resume_documents",
        {"parsed_data": ["not", "an", "object"]},
        "resume_documents.parsed_data: must be a JSON object",
        '["not", "an", "object"]',
    ),
    (
        "resume_documents",
        {"metadata": "x"},
        "resume_documents.metadata: must be a JSON object",
        '"x"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"skills": {"python": 5}}},
        "resume_documents.parsed_data.skills: must be an array",
        '{"python": 5}',
    ),
    (
        "resume_documents",
        {"parsed_data": {"work_experience": "Bletchley"}},
        "resume_documents.parsed_data.work_experience: must be an array",
        '"Bletchley"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"work_experience": [{"skills": []}, {"responsibilities": "code"}]}},
        "resume_documents.parsed_data.work_experience[1].responsibilities: must be an array",
        '"code"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"experience": [{"skills": "logic"}]}},
        "resume_documents.parsed_data.experience[0].skills: must be an array",
        '"logic"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"contact_info": "Ada"}},
        "resume_documents.parsed_data.contact_info: must be an object",
        '"Ada"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"contact_info": {"links": "https://x"}}},
        "resume_documents.parsed_data.contact_info.links: must be an array",
        '"https://x"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"contact_info": {"email": "ada@"}}},
        "resume_documents.parsed_data.contact_info.email: is not a valid email address",
        '"ada@"',
    ),
    (
        "resume_documents",
        {"parsed_data": {"contact_info": {"email": 42}}},
        "resume_documents.parsed_data.contact_info.email: is not a valid email address",
        "42",
    ),
    (
        "resume_documents",
        {"parsed_data": {}, "status": "completed"},
        "resume_documents.parsed_data: is empty but status is completed",
        "{}",
    ),
    (
        "job_documents",
        {"parsed_data": {"requirements": "5 years"}},
        "job_documents.parsed_data.requirements: must be an array",
        '"5 years"',
    ),
    (
        "job_documents",
        {"parsed_data": {"keywords": {"a": 1}}},
        "job_documents.parsed_data.keywords: must be an array",
        '{"a": 1}',
    ),
    (
        "job_documents",
        {"parsed_data": {"salary_range": {"min": 90000, "max": 50000}}},
        "job_documents.parsed_data.salary_range: salary min is greater than max",
        '"min": 90000',
    ),
    (
        "job_documents",
        {"parsed_data": {"salary_min": 3, "salary_max": 2}},
        "job_documents.parsed_data.salary_min: salary min is greater than max",
        '"salary_max": 2',
    ),
    (
        "optimization_results",
        {"parsed_data": {"ats_score": 250}},
        "optimization_results.parsed_data.ats_score: score must be between 0 and 100",
        "250",
    ),
    (
        "optimization_results",
        {"parsed_data": {"keywordScore": -1}},
        "optimization_results.parsed_data.keywordScore: score must be between 0 and 100",
        "-1",
    ),
    (
        "research_results",
        {"parsed_data": 7},
        "research_results.parsed_data: must be a JSON object",
        "7",
    ),
]


@pytest.mark.parametrize(
    "table,cols,message,value", BROKEN, ids=[b[2].split(":")[0] for b in BROKEN]
)
def test_validation_rejects_broken_document(conn, table, cols, message, value):
    msg = rejected(conn, table, **cols)
    assert msg.startswith(message)
    assert "(value: " in msg and value in msg


def test_validation_error_is_a_check_violation_and_truncates_the_value(conn):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        with conn.transaction():
            insert(conn, "resume_documents", parsed_data={"skills": "x" * 5000})
    msg = err.value.diag.message_primary
    assert msg.startswith('resume_documents.parsed_data.skills: must be an array (value: "xxx')
    assert msg.endswith("...)") and len(msg) < 200
    assert (
        err.value.diag.table_name == "resume_documents"
        and err.value.diag.column_name == "parsed_data"
    )


def test_validation_update_is_checked_too(conn):
    rid = insert(conn, "resume_documents", parsed_data=RESUME)
    with pytest.raises(
        psycopg.errors.CheckViolation, match="parsed_data.education: must be an array"
    ):
        with conn.transaction():
            conn.execute(
                'UPDATE resume_documents SET parsed_data = parsed_data || \'{"education": "MIT"}\' '
                "WHERE id = %s",
                (rid,),
            )


@pytest.mark.parametrize("value", [250, -0.5, 100.01])
def test_validation_score_columns_use_the_percentage_domain(conn, value):
    msg = rejected(conn, "optimization_results", ats_score=value)
    assert "percentage" in msg


@pytest.mark.parametrize(
    "domain,good,bad",
    [
        (
            "email",
            ["ada@example.com", "o'brien+cv@mail.example.co.uk"],
            ["ada@", "ada", "a b@example.com", "@x.io"],
        ),
        (
            "url",
            ["https://example.com/jobs?id=1", "http://localhost:8080"],
            ["ftp://example.com", "example.com", "https://"],
        ),
        ("percentage", [0, 55.5, 100], [-1, 100.5]),
    ],
)
def test_validation_domains(conn, domain, good, bad):
    for v in good:
        conn.execute(
            f"SELECT %s::text::{domain}" if domain != "percentage" else "SELECT %s::percentage",
            (v,),
        )
    for v in bad:
        with pytest.raises(
            psycopg.errors.CheckViolation, match=domain if domain != "percentage" else "percentage"
        ):
            with conn.transaction():
                conn.execute(
                    f"SELECT %s::text::{domain}"
                    if domain != "percentage"
                    else "SELECT %s::percentage",
                    (v,),
                )


def _optimization(conn, user="user_gV1wS2Jw", resume=None, parent=None, oid=None):
    cols = {"user_id": user, "resume_id": resume, "parent_optimization_id": parent}
    if oid:
        cols["id"] = oid
    return insert(conn, "optimization_results", **cols)


def test_validation_optimization_parent_must_share_user_and_resume(conn):
    r1 = insert(conn, "resume_documents")
    r2 = insert(conn, "resume_documents", filename="other.pdf")
    parent = _optimization(conn, resume=r1)
    _optimization(conn, resume=r1, parent=parent)  # same user, same resume: fine

    msg = rejected(
        conn,
        "optimization_results",
        user_id="someone_else",
        resume_id=r1,
        parent_optimization_id=parent,
    )
    assert (
        msg.startswith(
            "optimization_results.parent_optimization_id: parent belongs to user user_gV1wS2Jw, "
            "not someone_else"
        )
        and str(parent) in msg
    )
    msg = rejected(conn, "optimization_results", resume_id=r2, parent_optimization_id=parent)
    assert msg.startswith("optimization_results.parent_optimization_id: parent is for resume")

    me = uuid.uuid4()
    msg = rejected(conn, "optimization_results", id=me, resume_id=r1, parent_optimization_id=me)
    assert msg.startswith(
        "optimization_results.parent_optimization_id: an optimization cannot be its own parent"
    )
    assert str(me) in msg


def test_validation_parent_checked_on_update(conn):
    r1 = insert(conn, "resume_documents")
    parent = _optimization(conn, resume=r1)
    child = _optimization(conn, resume=r1)
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot be its own parent"):
        with conn.transaction():
            conn.execute(
                "UPDATE optimization_results SET parent_optimization_id = id WHERE id = %s",
                (child,),
            )
    with pytest.raises(psycopg.errors.CheckViolation, match="parent belongs to user"):
        with conn.transaction():
            conn.execute(
                "UPDATE optimization_results SET user_id = 'x', parent_optimization_id = %s "
                "WHERE id = %s",
                (parent, child),
            )


def test_validation_users_exist_only_where_a_user_table_exists(conn):
    insert(conn, "job_documents", user_id="nobody_knows_me")  # no "user" table: not checked
    conn.execute('CREATE TABLE "user" (id text PRIMARY KEY, email text)')
    conn.execute("""INSERT INTO "user" (id) VALUES ('user_gV1wS2Jw')""")
    insert(conn, "job_documents")
    insert(conn, "resume_documents")
    for table in ("resume_documents", "job_documents", "optimization_results", "research_results"):
        msg = rejected(conn, table, user_id="user_ghost")
        assert msg == f'{table}.user_id: no such user in table "user" (value: "user_ghost")'


def test_validation_no_two_active_resumes_of_a_user_with_the_same_file_hash(conn):
    insert(conn, "resume_documents", file_hash="abc")
    with pytest.raises(psycopg.errors.UniqueViolation) as err:
        with conn.transaction():
            insert(conn, "resume_documents", file_hash="abc", filename="again.pdf")
    assert err.value.diag.constraint_name == "resume_documents_active_file_hash_key"
    assert "(user_id, file_hash)=(user_gV1wS2Jw, abc)" in err.value.diag.message_detail
    insert(conn, "resume_documents", file_hash="abc", is_active=False)  # inactive: allowed
    insert(conn, "resume_documents", file_hash="abc", user_id="other_user")  # another user: allowed
    insert(conn, "resume_documents", file_hash=None)
    insert(conn, "resume_documents", file_hash=None)  # unknown hashes never clash
    conn.execute(
        "UPDATE resume_documents SET deleted_at = now() WHERE file_hash = 'abc' AND is_active "
        "AND user_id = 'user_gV1wS2Jw'"
    )
    insert(conn, "resume_documents", file_hash="abc")  # the old one is deleted
