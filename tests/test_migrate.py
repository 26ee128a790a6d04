"""etl migrate end to end on real PostgreSQL: every row equals its canonical form, re-runs
change nothing, changes update exactly their row, rejects lose nothing, dry runs touch nothing,
and a killed run resumes to exactly the right rows."""

from __future__ import annotations

import psycopg
import pytest

from etl.migrate import Migration
from etl.transform import Row, Transformer, row_id
from tests.datagen import generate, write_dump
from tests.helpers import (
    NOT_ANALYZED,
    SEARCH_VECTORS_WRONG,
    TABLES,
    db_rows,
    etl,
    etl_popen,
    kill_after_batches,
    pg_env,
    run,
    scalar,
    settings_for,
    strip_volatile,
)


@pytest.fixture(scope="module")
def small_dump(tmp_path_factory):
    ds = generate(60, seed=3, bad=True)
    path = tmp_path_factory.mktemp("dump") / "atspro"
    write_dump(path, ds, gzip=True)
    return ds, path


def assert_schema_intact(dsn):
    with psycopg.connect(dsn) as conn:
        bad = conn.execute(
            "select * from verify_schema_integrity() where status <> 'ok'"
        ).fetchall()
        # the full-text vectors a load deferred (sql/014) were all computed with their index
        wrong_vectors = conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0]
    assert bad == [] and wrong_vectors == 0


def test_migrate_all_rows_equal_their_canonical_form(schema_db, tmp_path, small_dump):
    ds, path = small_dump
    summary = run(schema_db, tmp_path, f"dump:{path}", all_=True)
    assert summary.state == "finished"
    with psycopg.connect(schema_db) as conn:
        conn.execute("set timezone = 'UTC'")
        # the expected rows: the same transform applied to the source, rendered by PostgreSQL
        transformer = Transformer(Migration(settings_for(schema_db, tmp_path)).mapping, "x", "t")
        stored = db_rows(schema_db)
        defaults = {
            t: {
                c
                for (c,) in conn.execute(
                    "select column_name from information_schema.columns where table_name = %s"
                    " and column_default is not null",
                    (t,),
                )
            }
            for t in TABLES.values()
        }
        n_rows = n_rejects = 0
        for collection in ("resumes", "jobs", "documents"):
            for doc in ds[collection]:
                out = transformer.transform(collection, doc)
                sid = f"{collection}/{doc.get('_key')}"
                if isinstance(out, Row):
                    if sid not in stored:  # rejected by the database: must be in the reject store
                        assert (
                            scalar(
                                schema_db,
                                "select count(*) from etl_rejects where collection = %s"
                                " and key = %s",
                                collection,
                                doc["_key"],
                            )
                            == 1
                        ), sid
                        n_rejects += 1
                        continue
                    from etl import jsonutil

                    expected = conn.execute(
                        "select to_jsonb(jsonb_populate_record(null::"
                        + TABLES[out.document_type]
                        + ", %s::jsonb))",
                        (jsonutil.dumps_str(out.values),),
                    ).fetchone()[0]
                    got = strip_volatile(stored[sid])
                    # references are nulled when their target is not in the source: compare the rest
                    for ref in ("resume_id", "job_id", "parent_optimization_id"):
                        if ref in got and got[ref] is None:
                            expected[ref] = None
                    if out.document_type == "research" and expected.get("job_id") is None:
                        expected["job_id"] = got.get("job_id")  # set by the job_research edge
                    exp = strip_volatile(expected)
                    for k in defaults[TABLES[out.document_type]]:
                        if exp.get(k) is None:
                            exp[k] = got[k]  # a column default, applied by the core
                    assert got == exp, sid
                    n_rows += 1
                else:
                    assert sid not in stored
                    assert (
                        scalar(
                            schema_db,
                            "select count(*) from etl_rejects where collection = %s and key = %s",
                            collection,
                            doc["_key"],
                        )
                        == 1
                    ), sid
                    n_rejects += 1
        assert n_rows > 100 and n_rejects > 0
        # each job_research edge landed on its research row, whole
        for edge in ds["job_research"]:
            target = stored.get(edge["_to"])
            if target is not None and edge["_from"].startswith("jobs/"):
                assert target["metadata"]["edges"][edge["_key"]] == edge
                assert target["job_id"] == str(row_id("jobs", edge["_from"].split("/", 1)[1]))


def test_migrate_counts_balance_and_nothing_is_lost(schema_db, tmp_path, small_dump):
    ds, path = small_dump
    summary = run(schema_db, tmp_path, f"dump:{path}", all_=True)
    # indexes deferred for the load into empty tables were all built again
    assert (
        summary.index_builds and scalar(schema_db, "select count(*) from etl_deferred_indexes") == 0
    )
    # the search tables' indexes too: their vectors were computed with them (sql/014)
    built = {b["index"] for b in summary.index_builds}
    assert {"idx_resume_documents_search_vector", "idx_job_documents_search_vector"} <= built
    assert_schema_intact(schema_db)
    # and the planner has statistics for every table the run wrote (etl sync plans on them)
    assert scalar(schema_db, NOT_ANALYZED) == []
    by_name = {c.collection: c for c in summary.collections}
    for name, count in ds.counts.items():
        c = by_name[name]
        assert c.source_count == count
        assert count == c.counts.loaded + c.counts.rejected + c.counts.unmapped, name
    # task_results: the generic table arango.task_results
    tr = by_name["task_results"]
    assert tr.status == "migrated" and tr.counts.inserted == ds.counts["task_results"]
    # every source document is in the target or in the reject store (with a reason)
    stored = db_rows(schema_db)
    with psycopg.connect(schema_db) as conn:
        kept = {
            f"{c}/{k}": r
            for c, k, r in conn.execute("select collection, key, reason from etl_rejects")
        }
    for name in ("resumes", "jobs", "documents"):
        for doc in ds[name]:
            sid = f"{name}/{doc['_key']}"
            assert sid in stored or (sid in kept and kept[sid]), sid


def test_statistics_that_cannot_be_gathered_are_a_warning_not_a_failed_run(
    schema_db, tmp_path, small_dump, monkeypatch, caplog
):
    """The server cancels the ANALYZE (a statement_timeout): a warning that says what to do,
    and a finished run."""
    from etl import indexes

    execute, analyze = psycopg.Connection.execute, indexes.analyze
    gathering = []

    def statistics(conn, tables):
        gathering.append(True)
        try:
            return analyze(conn, tables)
        finally:
            gathering.clear()

    def timed_out(self, query, *args, **kw):
        text = query if isinstance(query, str) else query.as_string(self)
        if gathering and text.startswith("analyze "):  # the server cancels it
            execute(self, "set local statement_timeout = 1")
            return execute(self, "select pg_sleep(1)")
        return execute(self, query, *args, **kw)

    monkeypatch.setattr(indexes, "analyze", statistics)
    monkeypatch.setattr(psycopg.Connection, "execute", timed_out)
    _, path = small_dump
    summary = run(schema_db, tmp_path, f"dump:{path}", all_=True)
    assert summary.state == "finished"
    said = [r.getMessage() for r in caplog.records if "planner statistics" in r.getMessage()]
    assert said and "statement timeout" in said[0] and "ANALYZE" in said[0], said
    assert scalar(schema_db, "select count(*) from resume_documents") > 0


def test_migrate_second_run_changes_nothing(schema_db, tmp_path, small_dump):
    _, path = small_dump
    run(schema_db, tmp_path, f"dump:{path}", all_=True)
    audit_before = scalar(schema_db, "select count(*) from document_audit_log")
    n_indexes = scalar(schema_db, "select count(*) from pg_indexes where schemaname = 'public'")
    upd_before = scalar(schema_db, "select max(updated_at) from resume_documents")
    summary = run(schema_db, tmp_path, f"dump:{path}", all_=True)
    for c in summary.collections:
        assert c.counts.inserted == 0 and c.counts.updated == 0, c.collection
    assert scalar(schema_db, "select count(*) from document_audit_log") == audit_before
    assert summary.index_builds == []  # the tables were not empty: nothing deferred
    assert (
        scalar(schema_db, "select count(*) from pg_indexes where schemaname = 'public'")
        == n_indexes
    )
    assert scalar(schema_db, "select max(updated_at) from resume_documents") == upd_before


def test_migrate_changed_document_updates_exactly_its_row(schema_db, tmp_path):
    ds = generate(20, seed=5)
    first = tmp_path / "d1"
    write_dump(first, ds, gzip=False)
    run(schema_db, tmp_path, f"dump:{first}", all_=True)
    docs = {c: list(ds[c]) for c in ds}
    target = docs["jobs"][3]
    target["job_title"] = target.get("job_title", "") + " (changed)"
    target["_rev"] = "_changed---"
    second = tmp_path / "d2"
    write_dump(second, docs, gzip=False, types=ds.types)
    summary = run(schema_db, tmp_path, f"dump:{second}", all_=True)
    jobs = next(c for c in summary.collections if c.collection == "jobs")
    assert jobs.counts.updated == 1 and jobs.counts.inserted == 0
    assert sum(c.counts.updated for c in summary.collections if c.collection != "jobs") == 0
    assert (
        scalar(schema_db, "select count(*) from job_documents where title like '%%(changed)'") == 1
    )
    assert (
        scalar(
            schema_db,
            "select count(*) from document_audit_log where action = 'migrate'"
            " and changes->>'op' is distinct from 'insert' and document_type = 'job'",
        )
        >= 1
    )


def test_migrate_dry_run_changes_nothing_and_predicts_the_counts(schema_db, tmp_path, small_dump):
    _, path = small_dump
    dry = run(schema_db, tmp_path, f"dump:{path}", all_=True, dry_run=True)
    assert dry.dry_run and dry.estimated_seconds is not None
    for table in list(TABLES.values()) + [
        "etl_runs",
        "etl_rejects",
        "etl_checkpoints",
        "document_audit_log",
    ]:
        assert scalar(schema_db, f"select count(*) from {table}") == 0, table
    real = run(schema_db, tmp_path, f"dump:{path}", all_=True)
    assert [(c.collection, c.counts.asdict()) for c in dry.collections] == [
        (c.collection, c.counts.asdict()) for c in real.collections
    ]
    assert (tmp_path / "reports" / f"{dry.run_id}.json").exists()


def test_migrate_stop_request_ends_at_batch_boundary_and_resumes(schema_db, tmp_path):
    ds = generate(30, seed=9)
    path = tmp_path / "dump"
    write_dump(path, ds, gzip=False)
    calls = {"n": 0}

    def stop_after_two():
        calls["n"] += 1
        return calls["n"] >= 2

    from etl.errors import Interrupted

    m = Migration(
        settings_for(schema_db, tmp_path),
        source=f"dump:{path}",
        all_=True,
        batch_size=7,
        should_stop=stop_after_two,
        retry_wait=lambda rs: 0,
    )
    with pytest.raises(Interrupted):
        m.run()
    assert scalar(schema_db, "select state from etl_runs") == "interrupted"
    assert scalar(schema_db, "select count(*) from resume_documents") == 14  # exactly two batches
    summary = run(schema_db, tmp_path, f"dump:{path}", resume=True)
    assert summary.run_id == m.run_id and summary.state == "finished"
    assert scalar(schema_db, "select count(*) from resume_documents") == ds.counts["resumes"]
    assert scalar(schema_db, "select count(*) from job_documents") == ds.counts["jobs"]


def test_migrate_killed_run_resumes_to_exact_rows(schema_db, tmp_path):
    ds = generate(300, seed=11)
    path = tmp_path / "dump"
    write_dump(path, ds, gzip=True)
    env = pg_env(schema_db, tmp_path)
    cmd = ["migrate", "--all", "--source", f"dump:{path}", "--batch", "20"]
    proc = etl_popen(*cmd, env=env, text=False)
    kill_after_batches(proc, schema_db, 5)
    assert scalar(schema_db, "select state from etl_runs") == "running"  # killed, not finished
    # the indexes deferred for the bulk load are remembered, not lost
    assert scalar(schema_db, "select count(*) from etl_deferred_indexes") > 0
    loaded_at_kill = scalar(schema_db, "select count(*) from resume_documents")
    assert (
        0 < loaded_at_kill < ds.counts["resumes"]
        or scalar(schema_db, "select count(*) from job_documents") < ds.counts["jobs"]
    )
    done = etl("migrate", "--resume", env=env, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    assert scalar(schema_db, "select count(*) from resume_documents") == ds.counts["resumes"]
    assert scalar(schema_db, "select count(*) from job_documents") == ds.counts["jobs"]
    stored = db_rows(schema_db)
    expected_ids = {f"resumes/{d['_key']}" for d in ds["resumes"]} | {
        f"jobs/{d['_key']}" for d in ds["jobs"]
    }
    assert expected_ids <= set(stored)
    assert scalar(schema_db, "select count(*) from etl_deferred_indexes") == 0
    assert_schema_intact(schema_db)
    # the checkpoint of a finished collection says exactly how many documents it read
    assert (
        scalar(schema_db, "select read from etl_checkpoints where collection = 'resumes'")
        == ds.counts["resumes"]
    )


def test_migrate_unknown_collection_lists_existing(schema_db, tmp_path, small_dump):
    _, path = small_dump
    from etl.errors import PermanentError

    with pytest.raises(PermanentError, match="resumes"):
        run(schema_db, tmp_path, f"dump:{path}", collections=["nope"])


def test_migrate_schema_not_applied_is_one_clear_error(empty_db, tmp_path, small_dump):
    _, path = small_dump
    from etl.errors import PermanentError

    with pytest.raises(PermanentError, match="apply-schema"):
        run(empty_db, tmp_path, f"dump:{path}", all_=True)


def test_a_connection_killed_mid_run_reconnects_and_its_batches_really_commit(
    schema_db, tmp_path, small_dump
):
    """pg_terminate_backend between batches: the retry reconnects. Regression: the reconnect ran
    a probe query that opened a transaction, so every later batch was only a savepoint of it,
    and the end of the run rolled them all back while reporting 'finished'."""
    ds, path = small_dump
    killed: list[int] = []

    def kill_once() -> bool:  # called after each committed batch
        if not killed and scalar(schema_db, "select count(*) from resume_documents") > 0:
            with psycopg.connect(schema_db, autocommit=True) as admin:
                killed.append(
                    admin.execute(
                        "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity"
                        " where datname = current_database() and application_name = 'etl'"
                        " and pid <> pg_backend_pid()"
                    ).fetchone()[0]
                )
        return False

    summary = run(
        schema_db, tmp_path, f"dump:{path}", all_=True, batch_size=10, should_stop=kill_once
    )
    assert killed and killed[0] >= 1
    assert summary.state == "finished"
    by_name = {c.collection: c for c in summary.collections}
    for name, table in (("resumes", "resume_documents"), ("jobs", "job_documents")):
        c = by_name[name]
        assert c.counts.loaded + c.counts.rejected == ds.counts[name]
        assert scalar(schema_db, f"select count(*) from {table}") == c.counts.loaded
        assert (
            scalar(
                schema_db, "select read from etl_checkpoints where collection = %s and done", name
            )
            == ds.counts[name]
        )
