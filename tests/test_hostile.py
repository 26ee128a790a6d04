"""Hostile identifiers and values never change the SQL that runs.

Collection names, _keys, attribute names, values and settings (mapping path, reports dir, run id,
application name) carry quotes, semicolons, `'; drop table resumes; --`, backslashes and `$$`.
Every statement etl sends is captured (psycopg Cursor.execute/executemany/copy, sql.Composed
rendered with as_string): no hostile text ever appears in a statement, only in bound parameters
and COPY data. Afterwards every table still exists and the hostile values were stored verbatim.
Against ArangoDB, a hostile collection or database name ends in one clean line.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from etl import state
from etl.migrate import Migration
from etl.reconcile import Reconciliation
from etl.settings import load_settings
from etl.status import status
from etl.transform import row_id
from tests.datagen import write_jsonl
from tests.fakearango.fixtures import DATABASE, seed
from tests.helpers import REPO, arango_env, assert_one_line_error, etl, settings_for

MARK = "HOSTILE"  # every hostile string carries it, so a leak into SQL text is easy to find
FRAGMENTS = [
    f"{MARK}'; drop table resumes; --",
    f'{MARK}"; drop table resume_documents; --',
    f"{MARK}\\'; select pg_sleep(10); --",
    f"{MARK}$$; drop table etl_runs; $$",
    f"{MARK}$tag$)); delete from etl_rejects; --",
    f"{MARK}\\\\x00 ' || '' || '",
    f"{MARK}%s %(x)s {{}} ?",
    f"{MARK}`;/*",
    f"{MARK} */ ; commit; --",
]


class Captured(list):
    """The text of every statement sent, in order."""


@contextmanager
def capture_sql():
    seen = Captured()
    orig = {name: getattr(psycopg.Cursor, name) for name in ("execute", "executemany", "copy")}

    def text(cur, query) -> str:
        if isinstance(query, sql.Composable):
            return query.as_string(cur)
        return query.decode() if isinstance(query, bytes) else str(query)

    def execute(self, query, *a, **kw):
        seen.append(text(self, query))
        return orig["execute"](self, query, *a, **kw)

    def executemany(self, query, *a, **kw):
        seen.append(text(self, query))
        return orig["executemany"](self, query, *a, **kw)

    def copy(self, statement, *a, **kw):
        seen.append(text(self, statement))
        return orig["copy"](self, statement, *a, **kw)

    psycopg.Cursor.execute, psycopg.Cursor.executemany, psycopg.Cursor.copy = (
        execute,
        executemany,
        copy,
    )
    try:
        yield seen
    finally:
        for name, fn in orig.items():
            setattr(psycopg.Cursor, name, fn)


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {
            r[0]
            for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")
        }


def hostile_source() -> dict[str, list[dict]]:
    resumes = []
    for i, frag in enumerate(FRAGMENTS):
        resumes.append(
            {
                "_key": f"k{i}{frag}",
                "_id": f"resumes/k{i}",
                "_rev": frag,
                "user_id": f"u{frag}",
                "status": "completed",
                "resume_data": {"summary": frag, frag: [frag], "skills": [frag]},
                frag: {frag: frag},
                f"$$.{i}": frag,
                "": frag,
            }
        )
    jobs = [
        {"_key": f"j{frag}", "user_id": "u1", "job_title": frag, "company": frag, frag: 1}
        for frag in FRAGMENTS[:3]
    ]
    rejected = [{"_key": f"bad{frag}", "user_id": None, frag: frag} for frag in FRAGMENTS[:3]]
    return {
        "resumes": resumes + rejected,
        "jobs": jobs,
        f"col{MARK}'; drop table resumes; --": [{"_key": "x1", "a": 1}],
        f'col{MARK}"$$;\\': [{"_key": f"x{FRAGMENTS[0]}"}],
    }


def test_hostile_input_never_changes_the_sql_and_is_stored_verbatim(schema_db, tmp_path):
    src = hostile_source()
    data = tmp_path / f"src{MARK}'; --"
    write_jsonl(data, src)
    mapping = tmp_path / f"map{MARK}'; drop table resumes; --.toml"
    shutil.copy(REPO / "configs" / "atspro.toml", mapping)
    reports = tmp_path / f'rep{MARK}"; $$ --'
    dsn = psycopg.conninfo.make_conninfo(
        schema_db, application_name=f"app{MARK}'; drop table etl_runs; --"
    )
    settings = load_settings(
        None,
        env={},
        overrides={
            "postgres": {"dsn": dsn},
            "migrate": {"reports_dir": str(reports), "mapping": str(mapping)},
        },
    )
    before = tables(schema_db)

    with capture_sql() as seen:
        # the source has resumes and jobs only (and hostile names): the other mapped ones are
        # missing on purpose
        summary = Migration(
            settings,
            all_=True,
            source=f"jsonl:{data}",
            batch_size=4,
            retry_wait=lambda rs: 0,
            allow_missing=True,
        ).run()
        rec = Reconciliation(settings, all_=True, source=f"jsonl:{data}", allow_missing=True).run()
        info = status(dsn)
        with psycopg.connect(dsn) as conn:
            for frag in FRAGMENTS:
                assert state.purge_rejects(conn, frag) == 0
            conn.commit()
    assert summary.state == "finished"
    assert len(seen) > 50, len(seen)
    leaked = [q for q in seen if MARK in q]
    assert leaked == [], leaked[:3]
    assert not rec.has_differences, rec.asdict()
    assert any(r["run_id"] == summary.run_id for r in info["runs"])

    # nothing was dropped or emptied, the schema is intact
    assert tables(schema_db) == before
    with psycopg.connect(schema_db) as conn:
        assert (
            conn.execute(
                "select count(*) from verify_schema_integrity() where status <> 'ok'"
            ).fetchone()[0]
            == 0
        )
        # stored verbatim
        for doc in src["resumes"][: len(FRAGMENTS)]:
            row = conn.execute(
                "select user_id, parsed_data, metadata from resume_documents where id = %s",
                (row_id("resumes", doc["_key"]),),
            ).fetchone()
            assert row is not None, doc["_key"]
            user_id, parsed, meta = row
            assert user_id == doc["user_id"]
            assert meta["arango"]["_key"] == doc["_key"] and meta["arango"]["_rev"] == doc["_rev"]
            assert parsed == doc["resume_data"]
            frag = doc["_rev"]
            assert meta["extra"][frag] == {frag: frag} and meta["extra"][""] == frag
        for doc in src["jobs"]:
            assert conn.execute(
                "select title, company from job_documents where id = %s",
                (row_id("jobs", doc["_key"]),),
            ).fetchone() == (doc["job_title"], doc["company"])
        kept = {
            (c, k): r
            for c, k, r in conn.execute(
                "select collection, key, reason from etl_rejects where run_id = %s",
                (summary.run_id,),
            )
        }
        # collections the mapping does not name are counted, not read: their names verbatim
        unmapped = {c.collection: c for c in summary.collections if c.status == "unmapped"}
        assert {n for n in src if n.startswith("col")} <= set(unmapped)
        for doc in src["resumes"][len(FRAGMENTS) :]:
            assert kept[("resumes", doc["_key"])].startswith("missing_user_id")
        assert (
            conn.execute(
                "select count(*) from etl_runs where run_id = %s", (summary.run_id,)
            ).fetchone()[0]
            == 1
        )
    assert (reports / f"{summary.run_id}.json").exists()


@pytest.mark.parametrize(
    "name",
    [
        f"r{MARK}'; drop table resumes; --",
        'resumes"',
        "resumes;",
        "res$$umes",
        "../_system",
        "resumes/../jobs",
        "resumes?x=1",
        "a b",
        "\\resumes",
    ],
)
def test_hostile_collection_name_against_arangodb_is_one_clean_line(
    arango_server, schema_db, tmp_path, name
):
    seed(arango_server, DATABASE, "resumes", [{"_key": "1", "user_id": "u"}])
    env = arango_env(arango_server, schema_db, tmp_path, ETL_ARANGO_TIMEOUT="5")
    before = tables(schema_db)
    proc = etl("migrate", "--collection", name, env=env)
    assert_one_line_error(proc, "does not exist")
    assert tables(schema_db) == before
    with psycopg.connect(schema_db) as conn:
        assert conn.execute("select count(*) from resume_documents").fetchone()[0] == 0


@pytest.mark.parametrize(
    "db", [f"atspro{MARK}'; drop table resumes; --", 'atspro"', "atspro/../_system"]
)
def test_hostile_database_name_against_arangodb_is_one_clean_line(
    arango_server, schema_db, tmp_path, db
):
    env = arango_env(arango_server, schema_db, tmp_path, ETL_ARANGO_DB=db, ETL_ARANGO_TIMEOUT="5")
    proc = etl("migrate", "--all", env=env)
    assert_one_line_error(proc)


@pytest.mark.parametrize(
    "run", [f"{MARK}'; drop table etl_runs; --", f"{MARK}$$ or 1=1 $$", "%", "_"]
)
def test_hostile_run_id_for_purge_rejects_deletes_nothing_else(schema_db, tmp_path, run):
    with psycopg.connect(schema_db) as conn:
        conn.execute(
            "insert into etl_runs (run_id, command, state, started_at) values ('r1', 'migrate', 'finished', now())"
        )
        conn.execute(
            "insert into etl_rejects (run_id, collection, key, document, reason, stage)"
            " values ('r1', 'resumes', 'k', '{}', 'x', 'transform')"
        )
    proc = etl("purge-rejects", "--run", run, env={"ETL_PG_DSN": schema_db})
    assert proc.returncode == 2 and "is not a run id" in proc.stderr, proc.stderr
    with psycopg.connect(schema_db) as conn:
        assert conn.execute("select count(*) from etl_rejects").fetchone()[0] == 1
        assert conn.execute("select count(*) from etl_runs").fetchone()[0] == 1


def test_keys_postgres_cannot_store_are_rejected_and_reconcile_finds_them_kept(schema_db, tmp_path):
    """A dump or export file can hold a _key with U+0000 or a lone surrogate (ArangoDB never
    makes one). It becomes a bad_key reject, stored escaped; reconcile must match it to the
    source document and not report it lost."""
    odd = ["k\x00ey", "\ud800x", "plain\\u0000"]  # the last one is a real backslash-u key
    src = {
        "resumes": [
            {"_key": k, "_rev": "r1", "user_id": f"u{i}", "resume_data": {"n": i}}
            for i, k in enumerate(odd)
        ]
        + [{"_key": "fine", "_rev": "r1", "user_id": "u9", "resume_data": {}}]
    }
    data = tmp_path / "src"
    write_jsonl(data, src)
    settings = settings_for(schema_db, tmp_path)
    summary = Migration(
        settings, collections=["resumes"], source=f"jsonl:{data}", retry_wait=lambda rs: 0
    ).run()
    assert summary.state == "finished"
    with psycopg.connect(schema_db) as conn:
        kept = dict(
            conn.execute(
                "select key, reason from etl_rejects where run_id = %s", (summary.run_id,)
            ).fetchall()
        )
    assert set(kept) == {"k\\u0000ey", "\\ud800x"}, kept
    assert all(r.startswith("bad_key") for r in kept.values()), kept
    rec = Reconciliation(settings, collections=["resumes"], source=f"jsonl:{data}").run()
    assert not rec.has_differences, rec.asdict()
    (col,) = rec.collections
    assert (col.source_count, col.rejected) == (4, 2), rec.asdict()
