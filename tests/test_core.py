"""007 set-based core: etl_merge_stage, migrate_arango_document, etl_link_edges on a real PostgreSQL."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from etl import jsonutil
from etl.load import Loader
from etl.mapping import load_mapping
from etl.transform import Row, Transformer, row_id

REPO = Path(__file__).resolve().parent.parent
DOCS = Path(__file__).parent / "cases" / "documents"
RUN = "run-core-1"


def _rows() -> dict[str, Row]:
    """Canonical rows, made by the real transform from the sample documents."""
    t = Transformer(
        load_mapping(REPO / "configs" / "atspro.toml"), RUN, datetime(2026, 1, 2, tzinfo=UTC)
    )
    out = {}
    for name in ("resume_current", "job_current", "optimization", "research"):
        case = json.loads((DOCS / f"{name}.json").read_text())
        row = t.transform(case["collection"], case["document"])
        assert isinstance(row, Row), row
        out[row.document_type] = row
    return out


ROWS = _rows()


def values(document_type: str, **changes) -> dict:
    v = copy.deepcopy(ROWS[document_type].values)
    v.update(changes)
    return v


def jsonb(v):
    return Jsonb(v, dumps=jsonutil.dumps_str)


def merge(conn, document_type: str, rows: list[dict], run_id: str = RUN) -> list[tuple]:
    """Stage rows (as the loader does, minus COPY) and run the core; returns its (id, action) rows."""
    stage = conn.execute("SELECT etl_prepare_stage(%s)::text", (document_type,)).fetchone()[0]
    conn.execute(
        f"INSERT INTO {stage} SELECT * FROM jsonb_populate_recordset(NULL::{stage}, %s)",
        (jsonb(rows),),
    )
    return sorted(
        conn.execute(
            "SELECT id, action FROM etl_merge_stage(%s, %s)", (document_type, run_id)
        ).fetchall(),
        key=lambda r: (str(r[0]), r[1]),
    )


def table_state(conn, table: str) -> list[tuple]:
    return conn.execute(
        f"SELECT id, xmin::text, updated_at, to_jsonb(t) FROM {table} t ORDER BY id"
    ).fetchall()


def audit_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM document_audit_log").fetchone()[0]


def test_merge_inserts_and_an_unchanged_rerun_rewrites_nothing(schema_db):
    job = values("job")
    with psycopg.connect(schema_db) as conn:
        assert merge(conn, "job", [job]) == [(uuid.UUID(job["id"]), "inserted")]
        conn.commit()
        before, audits = table_state(conn, "job_documents"), audit_count(conn)
        # Same document, a later run: metadata.etl differs, which the comparison ignores.
        again = values("job")
        again["metadata"]["etl"] = {
            "run_id": "run-core-2",
            "migrated_at": "2026-02-02T00:00:00+00:00",
            "mapping_version": "2",
        }
        assert merge(conn, "job", [again], "run-core-2") == []
        conn.commit()
        assert table_state(conn, "job_documents") == before  # same xmin: not even a no-op update
        assert audit_count(conn) == audits
        meta = conn.execute("SELECT metadata -> 'etl' ->> 'run_id' FROM job_documents").fetchone()[
            0
        ]
        assert meta == RUN  # metadata.etl still names the run that loaded it
        assert conn.execute("SELECT count(*) FROM pg_temp.etl_stage_job").fetchone()[0] == 0


def test_merge_changed_document_updates_exactly_that_row(schema_db):
    rows = [values("job", id=str(uuid.uuid4()), title=f"job {i}") for i in range(3)]
    with psycopg.connect(schema_db) as conn:
        assert [a for _, a in merge(conn, "job", rows)] == ["inserted"] * 3
        conn.commit()
        before = {r[0]: r for r in table_state(conn, "job_documents")}
        changed = copy.deepcopy(rows)
        changed[1]["title"] = "job 1, renamed"
        changed[1]["updated_at"] = "2026-03-01T10:00:00+00:00"
        for r in changed:
            r["metadata"]["etl"]["run_id"] = "run-core-2"
        result = merge(conn, "job", changed, "run-core-2")
        conn.commit()
        target = uuid.UUID(rows[1]["id"])
        assert result == [(target, "updated")]
        after = {r[0]: r for r in table_state(conn, "job_documents")}
        for rid in before:
            assert (after[rid] == before[rid]) == (rid != target)
        title, updated_at, etl_run = conn.execute(
            "SELECT title, updated_at, metadata -> 'etl' ->> 'run_id' FROM job_documents WHERE id = %s",
            (target,),
        ).fetchone()
        # The source's timestamp is kept: the updated_at trigger does not overwrite it for the ETL.
        assert (title, updated_at, etl_run) == (
            "job 1, renamed",
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            "run-core-2",
        )
        log = conn.execute(
            "SELECT document_id, action, run_id, changes -> 'fields' FROM document_audit_log "
            "WHERE run_id = 'run-core-2'"
        ).fetchall()
        assert log == [
            (target, "migrate", "run-core-2", ["metadata", "title"])
        ]  # updated_at is never listed


def test_merge_applies_defaults_and_a_rerun_keeps_them(schema_db):
    bare = {"id": str(uuid.uuid4()), "user_id": "u1", "parsed_data": {"skills": ["SQL"]}}
    with psycopg.connect(schema_db) as conn:
        assert [a for _, a in merge(conn, "resume", [bare])] == ["inserted"]
        row = conn.execute(
            "SELECT filename, status, source, is_active, metadata, created_at = now() "
            "FROM resume_documents"
        ).fetchone()
        assert row == ("unknown", "pending", "upload", True, {}, True)
        conn.commit()
        before = table_state(conn, "resume_documents")
        assert merge(conn, "resume", [bare]) == []  # NULL = "no value": the stored default stays
        assert table_state(conn, "resume_documents") == before


def test_merge_nulls_dangling_references_and_reports_them(schema_db):
    opt = values("optimization")  # refers to resumes/8123 and jobs/j1, neither loaded yet
    with psycopg.connect(schema_db) as conn:
        merge(conn, "job", [values("job")])
        oid = uuid.UUID(opt["id"])
        assert merge(conn, "optimization", [opt]) == [
            (oid, "dangling:resume_id"),
            (oid, "inserted"),
        ]
        resume_id, job_id = conn.execute(
            "SELECT resume_id, job_id FROM optimization_results"
        ).fetchone()
        assert resume_id is None and str(job_id) == row_id("jobs", "j1")


def test_merge_parent_in_the_same_batch_is_not_dangling(schema_db):
    parent = values("optimization", id=str(uuid.uuid4()), resume_id=None, job_id=None)
    child = values(
        "optimization",
        id=str(uuid.uuid4()),
        resume_id=None,
        job_id=None,
        parent_optimization_id=parent["id"],
    )
    orphan = values(
        "optimization",
        id=str(uuid.uuid4()),
        resume_id=None,
        job_id=None,
        parent_optimization_id=str(uuid.uuid4()),
    )
    with psycopg.connect(schema_db) as conn:
        result = merge(conn, "optimization", [child, parent, orphan])
        assert sorted(a for _, a in result) == [
            "dangling:parent_optimization_id",
            "inserted",
            "inserted",
            "inserted",
        ]
        assert (uuid.UUID(orphan["id"]), "dangling:parent_optimization_id") in result
        got = conn.execute(
            "SELECT parent_optimization_id FROM optimization_results WHERE id = %s", (child["id"],)
        ).fetchone()[0]
        assert str(got) == parent["id"]


def test_migrate_arango_document_bare_object(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        rid = conn.execute("""SELECT migrate_arango_document('user_123', 'resume',
                                  '{"name": "John Doe", "skills": ["Python", "SQL"]}'::jsonb)""").fetchone()[
            0
        ]
        assert isinstance(rid, uuid.UUID)
        row = conn.execute(
            "SELECT id, user_id, filename, status, parsed_data FROM resume_documents"
        ).fetchall()
        assert row == [
            (
                rid,
                "user_123",
                "unknown",
                "pending",
                {"name": "John Doe", "skills": ["Python", "SQL"]},
            )
        ]
        # No source _id: nothing to make an id from, so a second call is a second document.
        other = conn.execute("""SELECT migrate_arango_document('user_123', 'resume',
                                    '{"name": "John Doe"}'::jsonb)""").fetchone()[0]
        assert other != rid
        assert conn.execute("SELECT count(*) FROM resume_documents").fetchone()[0] == 2


def test_migrate_arango_document_canonical_object_upserts_by_its_id(schema_db):
    resume = values("resume")
    with psycopg.connect(schema_db, autocommit=True) as conn:
        call = "SELECT migrate_arango_document(%s, 'resume', %s)"
        rid = conn.execute(call, (resume["user_id"], jsonb(resume))).fetchone()[0]
        assert str(rid) == resume["id"] == row_id("resumes", "8123")
        stored = conn.execute(
            "SELECT filename, file_size, status, parsed_data, metadata -> 'arango' "
            "FROM resume_documents"
        ).fetchone()
        assert stored == (
            resume["filename"],
            resume["file_size"],
            "completed",
            resume["parsed_data"],
            resume["metadata"]["arango"],
        )
        before = table_state(conn, "resume_documents")
        audits = audit_count(conn)
        assert conn.execute(call, (resume["user_id"], jsonb(resume))).fetchone()[0] == rid
        assert table_state(conn, "resume_documents") == before and audit_count(conn) == audits


def test_migrate_arango_document_unknown_type_is_refused(schema_db):
    with psycopg.connect(schema_db) as conn:
        with pytest.raises(
            psycopg.errors.InvalidParameterValue, match='unknown document type "cv"'
        ):
            conn.execute("SELECT migrate_arango_document('u', 'cv', '{}'::jsonb)")


def test_single_and_bulk_give_identical_rows(make_db):
    single, bulk = make_db(schema=True), make_db(schema=True)
    order = ["resume", "job", "optimization", "research"]
    with psycopg.connect(single, autocommit=True) as conn:
        for t in order:
            v = values(t)
            assert (
                str(
                    conn.execute(
                        "SELECT migrate_arango_document(%s, %s, %s)", (v["user_id"], t, jsonb(v))
                    ).fetchone()[0]
                )
                == v["id"]
            )
    with psycopg.connect(bulk) as conn:
        loader = Loader(conn, RUN)
        for t in order:
            assert loader.load(t, [ROWS[t]]).inserted == 1
        conn.commit()

    def dump(dsn):
        with psycopg.connect(dsn) as conn:
            return {
                t: conn.execute(f"SELECT to_jsonb(x) FROM {t} x ORDER BY id").fetchall()
                for t in (
                    "resume_documents",
                    "job_documents",
                    "optimization_results",
                    "research_results",
                )
            }

    a, b = dump(single), dump(bulk)
    assert a == b
    assert all(len(rows) == 1 for rows in a.values())
    opt = a["optimization_results"][0][0]
    assert opt["resume_id"] == row_id("resumes", "8123") and opt["job_id"] == row_id("jobs", "j1")


def _edges(conn, edges: list[tuple[str, str, str | None]]) -> list[tuple]:
    conn.execute("SELECT etl_prepare_stage('edge')")
    for key, target, job in edges:
        conn.execute(
            "INSERT INTO etl_stage_edge VALUES (%s, %s, %s, %s)",
            (key, target, job, jsonb({"_key": key, "relationship": "has_research"})),
        )
    return sorted(
        conn.execute(
            "SELECT edge_key, target_id::text, status FROM etl_link_edges(%s)", (RUN,)
        ).fetchall()
    )


def test_link_edges_links_once_and_survives_a_remerge(schema_db):
    research = values("research", job_id=None, resume_id=None)
    job = values("job")
    with psycopg.connect(schema_db) as conn:
        merge(conn, "job", [job])
        merge(conn, "research", [research])
        ghost = str(uuid.uuid4())
        assert _edges(
            conn,
            [
                ("e1", research["id"], job["id"]),
                ("e2", ghost, job["id"]),
                ("e3", research["id"], str(uuid.uuid4())),
            ],
        ) == [
            ("e1", research["id"], "linked"),
            ("e2", ghost, "dangling"),
            ("e3", research["id"], "dangling"),
        ]
        assert conn.execute("SELECT count(*) FROM pg_temp.etl_stage_edge").fetchone()[0] == 0
        conn.commit()
        before = table_state(conn, "research_results")
        assert _edges(conn, [("e1", research["id"], job["id"])]) == [
            ("e1", research["id"], "unchanged")
        ]
        assert table_state(conn, "research_results") == before
        # Re-merging the research document (no job_id of its own) keeps the edge's job_id and edges.
        assert merge(conn, "research", [research]) == []
        job_id, edges = conn.execute(
            "SELECT job_id::text, metadata -> 'edges' FROM research_results"
        ).fetchone()
        assert job_id == job["id"] and edges == {
            "e1": {"_key": "e1", "relationship": "has_research"}
        }


def test_merge_same_id_staged_twice_last_copy_wins(schema_db):
    first, last = values("job", title="first"), values("job", title="last")
    with psycopg.connect(schema_db) as conn:
        jid = uuid.UUID(first["id"])
        assert merge(conn, "job", [first, last]) == [(jid, "inserted"), (jid, "superseded")]
        assert conn.execute("SELECT title FROM job_documents").fetchall() == [("last",)]


def test_relink_parents_keeps_the_links_the_validation_accepts_when_one_is_refused(schema_db):
    """A late parent of another user is refused by the validation (P0001): the chunk falls back
    to one link at a time, the refused link stays NULL and the other one is set."""
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    base = dict(resume_id=None, job_id=None, parent_optimization_id=None)
    parents = [values("optimization", id=ok, **base), values("optimization", id=bad, **base)]
    parents[1]["user_id"] = "someone-else"
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    children = [values("optimization", id=a, **base), values("optimization", id=b, **base)]
    with psycopg.connect(schema_db) as conn:
        merge(conn, "optimization", parents + children)
        linked = Loader(conn, RUN).relink_parents("optimization_results", [(a, ok), (b, bad)])
        got = dict(
            conn.execute(
                "SELECT id::text, parent_optimization_id::text FROM optimization_results"
                " WHERE id = any(%s::uuid[])",
                ([a, b],),
            ).fetchall()
        )
    assert linked == 1
    assert got == {a: ok, b: None}


def test_merge_validates_each_row_it_writes_once_and_no_other(schema_db):
    """An update is checked as the updated row only, not first as the insert it is not (013);
    an unchanged row is not checked at all. Same rows and actions as the upsert gave."""
    old = [values("job", id=str(uuid.uuid4()), title=f"job {i}") for i in range(2)]
    with psycopg.connect(schema_db) as conn:
        merge(conn, "job", old)
        conn.commit()
        conn.execute("SET track_functions = 'all'")
        changed = copy.deepcopy(old[0]) | {"title": "job 0, renamed"}
        new = values("job", id=str(uuid.uuid4()), title="job 2")
        result = merge(conn, "job", [changed, old[1], new], "run-core-2")
        assert result == sorted(
            [(uuid.UUID(changed["id"]), "updated"), (uuid.UUID(new["id"]), "inserted")],
            key=lambda r: (str(r[0]), r[1]),
        )
        calls = conn.execute(
            "SELECT calls FROM pg_stat_xact_user_functions WHERE funcname = 'validate_document_data'"
        ).fetchone()[0]
        assert calls == 2  # the upsert of 007: 4 (the update twice, the unchanged row once)
        titles = conn.execute("SELECT title FROM job_documents ORDER BY title").fetchall()
        assert titles == [("job 0, renamed",), ("job 1",), ("job 2",)]
