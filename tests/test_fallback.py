"""etl fallback: after a cutover, the application writes to PostgreSQL (inserts, updates, deletes
in every curated table and the job_research links, committed and rolled back); `etl fallback
--until-current` replays them to the ArangoDB test server, which then holds exactly those
changes, and `etl reconcile --all` is green; the same with SIGKILLs during the apply; conflicts
are reported, not overwritten; arm/retire/status; the inverse of the transform on its own."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest

from etl.transform import row_id
from tests import helpers
from tests.fakearango.fixtures import client_db
from tests.helpers import REPO, scalar
from tests.test_sync import free_port, migrated

SYSTEM = ("_id", "_rev")


@pytest.fixture(params=["trigger", "logical"])
def capture_db(request) -> tuple[str, str]:
    """(DSN, the mechanism `etl cutover` arms there): a database on the default server
    (wal_level = replica: triggers) or on the wal_level = logical one (logical decoding)."""
    fixture = "schema_db" if request.param == "trigger" else "logical_schema_db"
    return request.getfixturevalue(fixture), request.param


def applied(dsn: str) -> int:
    """Changes applied to ArangoDB so far (both mechanisms: the slot's backlog is not a row)."""
    return scalar(dsn, "select coalesce(sum(changes), 0) from etl_fallback_applied")


def etl(env: dict, *args: str) -> subprocess.CompletedProcess:
    return helpers.etl(*args, env=env)


def snapshot(server) -> dict[tuple[str, str], dict]:
    """Every document of the mapped collections: (collection, key) -> document."""
    db = client_db(server)
    out = {}
    for name in ("resumes", "jobs", "documents", "job_research", "task_results"):
        if db.has_collection(name):
            cursor = db.aql.execute(
                "FOR d IN @@c FILTER d._key > @last SORT d._key LIMIT @n RETURN d",
                bind_vars={"@c": name, "last": "", "n": 100000},
            )
            for d in cursor:
                out[(name, d["_key"])] = d
    return out


def cut_over(server, dsn, tmp_path, seed) -> dict:
    env = migrated(server, dsn, tmp_path, n=24, seed=seed)
    r = etl(env, "cutover", "--assume-frozen")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "fallback armed" in r.stdout
    return env


def one(conn, q, params=()):
    row = conn.execute(q, params).fetchone()
    return None if row is None else row[0]


def app_writes(dsn: str) -> dict:
    """What the application does on PostgreSQL after the switch; returns what to expect."""
    ids: dict = {}
    with psycopg.connect(dsn) as conn:
        resumes = [r[0] for r in conn.execute("select id from resume_documents order by id")]
        jobs = [r[0] for r in conn.execute("select id from job_documents order by id")]
        research = conn.execute(
            "select id, job_id, metadata -> 'edges' from research_results"
            " where metadata -> 'edges' <> '{}'::jsonb order by id"
        ).fetchall()
        opts = [r[0] for r in conn.execute("select id from optimization_results order by id")]
        conn.commit()
        # committed: updates of a column, a timestamp and parsed_data
        conn.execute(
            "update resume_documents set status = 'reviewed', updated_at = '2026-01-02T03:04:05Z'"
            " where id = %s",
            (resumes[0],),
        )
        conn.execute(
            "update job_documents set title = 'Staff Engineer',"
            ' parsed_data = parsed_data || \'{"skills": ["sql"]}\' where id = %s',
            (jobs[0],),
        )
        conn.execute("update optimization_results set ats_score = 77.5 where id = %s", (opts[0],))
        # the application's own rows
        ids["resume"] = one(
            conn,
            "insert into resume_documents (user_id, filename, status, parsed_data)"
            " values ('u-app', 'app.pdf', 'uploaded', '{\"summary\": \"hi\"}') returning id",
        )
        ids["job"] = one(
            conn,
            "insert into job_documents (user_id, title, company) values ('u-app', 'New', 'Co')"
            " returning id",
        )
        ids["opt"] = one(
            conn,
            "insert into optimization_results (user_id, resume_id, job_id, content, ats_score)"
            " values ('u-app', %s, %s, 'better', 90) returning id",
            (ids["resume"], ids["job"]),
        )
        ids["research"] = one(
            conn,
            "insert into research_results (user_id, job_id, company, content)"
            " values ('u-app', %s, 'Co', 'notes') returning id",
            (ids["job"],),
        )
        conn.commit()
        # edges: relink one research row to another job, unlink another
        ids["relinked"], old_job, _ = research[0]
        ids["relinked_to"] = next(j for j in jobs if j != old_job)
        conn.execute(
            "update research_results set job_id = %s where id = %s",
            (ids["relinked_to"], ids["relinked"]),
        )
        ids["unlinked"] = research[1][0]
        conn.execute("update research_results set job_id = null where id = %s", (ids["unlinked"],))
        # deletes: a resume (its optimizations go by cascade) and an optimization
        ids["deleted_resume"] = resumes[-1]
        conn.execute("delete from resume_documents where id = %s", (resumes[-1],))
        ids["deleted_opt"] = opts[-1]
        conn.execute("delete from optimization_results where id = %s", (opts[-1],))
        # a generic table (arango.task_results): an update, a delete and an insert whose id is
        # the one the key gives (docs/sync.md)
        tasks = conn.execute("select id, key from arango.task_results order by key").fetchall()
        ids["task_updated"], ids["task_deleted"] = tasks[0][1], tasks[1][1]
        conn.execute(
            'update arango.task_results set data = data || \'{"status": "redone"}\' where id = %s',
            (tasks[0][0],),
        )
        conn.execute("delete from arango.task_results where id = %s", (tasks[1][0],))
        conn.execute(
            "insert into arango.task_results (id, key, data, metadata) values"
            ' (%s, \'app-task\', \'{"task_id": "t-app", "type": "parse"}\', \'{}\')',
            (row_id("task_results", "app-task"),),
        )
        conn.commit()
        # rolled back: nothing of it may reach ArangoDB
        conn.execute(
            "update resume_documents set status = 'rolled-back' where id = %s", (resumes[1],)
        )
        conn.execute("insert into job_documents (user_id, title) values ('u-x', 'never')")
        conn.execute("delete from job_documents where id = %s", (jobs[1],))
        conn.rollback()
        # a row created and deleted again: never in ArangoDB
        gone = one(
            conn,
            "insert into job_documents (user_id, title) values ('u-y', 'brief') returning id",
        )
        conn.execute("delete from job_documents where id = %s", (gone,))
        conn.commit()
        ids["untouched_resume"] = resumes[1]
        ids["untouched_job"] = jobs[1]
    return ids


def check_arango(server, before: dict, ids: dict) -> None:
    after = snapshot(server)
    db = client_db(server)
    res = db.collection("resumes")
    jobs = db.collection("jobs")
    docs = db.collection("documents")

    def key_of(collection: str, rid) -> str:
        for (c, k), _ in before.items():
            if c == collection and row_id(c, k) == str(rid):
                return k
        return f"pg-{rid}"

    r0 = res.get(key_of("resumes", ids["untouched_resume"]))
    assert r0 == before[("resumes", r0["_key"])], "an untouched document stays as it was"
    assert (
        jobs.get(key_of("jobs", ids["untouched_job"]))["_rev"]
        == (before[("jobs", key_of("jobs", ids["untouched_job"]))]["_rev"])
    )
    new = res.get(f"pg-{ids['resume']}")
    assert new["user_id"] == "u-app" and new["status"] == "uploaded"
    assert new["file_metadata"]["filename"] == "app.pdf"
    assert new["resume_data"] == {"summary": "hi"}
    opt = docs.get(f"pg-{ids['opt']}")
    assert opt["type"] == "optimization" and opt["resume_id"] == f"pg-{ids['resume']}"
    assert opt["ats_score"] == 90 and opt["job_id"] == f"pg-{ids['job']}"
    rs = docs.get(f"pg-{ids['research']}")
    assert rs["type"] == "research" and "job_id" not in rs
    edge = db.collection("job_research").get(f"pg-{ids['research']}")
    assert edge["_from"] == f"jobs/pg-{ids['job']}"
    assert edge["_to"] == f"documents/pg-{ids['research']}"
    moved = [
        e
        for (c, _), e in after.items()
        if c == "job_research" and e["_to"] == f"documents/{key_of('documents', ids['relinked'])}"
    ]
    assert [e["_from"] for e in moved] == [f"jobs/{key_of('jobs', ids['relinked_to'])}"]
    assert not [
        e
        for (c, _), e in after.items()
        if c == "job_research" and e["_to"] == f"documents/{key_of('documents', ids['unlinked'])}"
    ]
    assert res.get(key_of("resumes", ids["deleted_resume"])) is None
    assert docs.get(key_of("documents", ids["deleted_opt"])) is None
    assert not [k for (c, k) in after if c == "jobs" and after[(c, k)].get("title") == "never"]
    assert not [k for (c, k) in after if c == "jobs" and after[(c, k)].get("title") == "brief"]
    assert not [d for d in after.values() if d.get("status") == "rolled-back"]
    tasks = db.collection("task_results")
    assert tasks.get(ids["task_updated"])["status"] == "redone"
    assert tasks.get(ids["task_deleted"]) is None
    assert tasks.get("app-task") == {
        "_key": "app-task", "_id": "task_results/app-task", "_rev": tasks.get("app-task")["_rev"],
        "task_id": "t-app", "type": "parse",
    }  # fmt: skip
    # exactly those changes: every other document is the same as before
    changed = {k for k in after.keys() & before.keys() if after[k] != before[k]}
    added = after.keys() - before.keys()
    removed = before.keys() - after.keys()
    assert {c for c, _ in added} <= {"resumes", "jobs", "documents", "job_research", "task_results"}
    assert len(added) == 6  # resume, job, optimization, research and its edge, task
    assert {c for c, _ in changed} <= {
        "resumes",
        "jobs",
        "documents",
        "job_research",
        "task_results",
    }
    assert (
        len(changed) <= 3 + 1 + 2 + 1 + 1 + 10
    )  # the updates, the relink and SET NULLs of cascades
    assert ("resumes", key_of("resumes", ids["deleted_resume"])) in removed


def test_fallback_until_current_replays_the_applications_writes(
    capture_db, tmp_path, arango_server
):
    schema_db, mechanism = capture_db
    env = cut_over(arango_server, schema_db, tmp_path, seed=61)
    assert scalar(schema_db, "select mechanism from etl_fallback_state") == mechanism
    before = snapshot(arango_server)
    ids = app_writes(schema_db)
    status = etl(env, "status")
    assert "The way back" in status.stdout and "pending_changes" in status.stdout
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "changes applied to ArangoDB" in r.stdout
    check_arango(arango_server, before, ids)
    rec = etl(env, "reconcile", "--all")
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr
    assert scalar(schema_db, "select count(*) from etl_fallback_changes") == 0
    # nothing left: a second run changes nothing in ArangoDB
    mid = snapshot(arango_server)
    r2 = etl(env, "fallback", "--until-current")
    assert r2.returncode == 0, r2.stderr
    assert snapshot(arango_server) == mid


def test_sigkill_during_the_apply_loses_and_doubles_nothing(capture_db, tmp_path, arango_server):
    schema_db, mechanism = capture_db
    env = cut_over(arango_server, schema_db, tmp_path, seed=62)
    assert scalar(schema_db, "select mechanism from etl_fallback_state") == mechanism
    before = snapshot(arango_server)
    ids = app_writes(schema_db)
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        start = applied(schema_db)
        p = subprocess.Popen(
            [sys.executable, "-m", "etl", "fallback", "--until-current", "--batch-size", "1"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # wait until it has applied something (or is done), then kill it mid-apply
        deadline = time.time() + 30
        while time.time() < deadline and p.poll() is None:
            if applied(schema_db) > start:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=30)
        if p.returncode == 0:  # it finished before the kill
            break
    assert kills >= 2, "the apply was killed while it ran"
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "conflicts 0" in r.stdout
    check_arango(arango_server, before, ids)
    rec = etl(env, "reconcile", "--all")
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr


def test_a_document_changed_in_arangodb_is_a_conflict_not_overwritten(
    schema_db, tmp_path, arango_server
):
    env = cut_over(arango_server, schema_db, tmp_path, seed=63)
    db = client_db(arango_server)
    with psycopg.connect(schema_db) as conn:
        rid, key = conn.execute(
            "select id, metadata -> 'arango' ->> '_key' from job_documents order by id limit 1"
        ).fetchone()
        conn.execute("update job_documents set title = 'from postgres' where id = %s", (rid,))
    attr = "job_title" if "job_title" in db.collection("jobs").get(key) else "title"
    db.collection("jobs").update({"_key": key, attr: "from arango"})
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "conflicts 1" in r.stdout and "changed in ArangoDB after the cutover" in r.stderr
    assert db.collection("jobs").get(key)[attr] == "from arango"
    conflict = scalar(
        schema_db, "select to_jsonb(c) from etl_fallback_conflicts c order by id desc limit 1"
    )
    assert conflict["key"] == key and conflict["overwritten"] is False
    # the policy says overwrite: PostgreSQL's row wins
    with psycopg.connect(schema_db) as conn:
        conn.execute("update job_documents set title = 'from postgres 2' where id = %s", (rid,))
    r = etl(env, "fallback", "--until-current", "--on-conflict", "overwrite")
    assert r.returncode == 1, r.stderr  # the conflict is reported, also when overwritten
    assert db.collection("jobs").get(key)[attr] == "from postgres 2"
    assert scalar(schema_db, "select count(*) from etl_fallback_conflicts where overwritten") == 1


def test_arm_status_metrics_and_retire(schema_db, tmp_path, arango_server):
    env = migrated(arango_server, schema_db, tmp_path, n=10, seed=64)
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 2 and "not armed" in r.stderr and "Traceback" not in r.stderr
    r = etl(env, "fallback", "arm")
    assert r.returncode == 0, r.stderr
    assert "fallback armed (triggers on 5 tables" in r.stdout and "wal_level" in r.stdout
    with psycopg.connect(schema_db) as conn:
        conn.execute("update resume_documents set status = 'x' where id = (select id"
                     " from resume_documents order by id limit 1)")  # fmt: skip
    s = etl(env, "status")
    assert "The way back" in s.stdout and "change_table_bytes" in s.stdout
    r = etl(env, "fallback", "retire")
    assert r.returncode == 2 and "not applied to ArangoDB yet" in r.stderr
    # follow mode with metrics: applies, serves the lag, stops on SIGTERM with 130
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "etl", "fallback", "--metrics-port", str(port)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    text = ""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            if 'operation="update"' in text:
                break
        except OSError:
            pass
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "etl_fallback_pending_changes 0.0" in text
    assert 'etl_fallback_applied_changes_total{collection="resumes",operation="update"} 1.0' in text
    r = etl(env, "fallback", "retire")
    assert r.returncode == 0, r.stderr
    assert (
        scalar(schema_db, "select count(*) from pg_trigger where tgname = 'etl_fallback_capture'")
        == 0
    )
    with psycopg.connect(schema_db) as conn:
        conn.execute("update resume_documents set status = 'y'")
    assert scalar(schema_db, "select count(*) from etl_fallback_changes") == 0


def test_an_unchanged_row_becomes_its_source_document_again(schema_db, tmp_path, arango_server):
    """The inverse of the transform on every row of a copy: with ArangoDB's document as the
    base (the apply's case) exactly the source; from the row's provenance alone the same but for
    attributes that held their column's default (the copy cannot tell them from absent ones)."""
    from etl.fallback.apply import Applier
    from etl.fallback.inverse import Keys
    from etl.mapping import load_mapping
    from etl.reconcile.compare import type_specs
    from etl.settings import load_settings
    from etl.target import qualified

    env = migrated(arango_server, schema_db, tmp_path, n=30, seed=65)
    source = snapshot(arango_server)
    mapping = load_mapping(load_settings(None, env=env).migrate.mapping)
    seen = 0
    with psycopg.connect(schema_db) as conn:
        specs = type_specs(conn, mapping)
        ap = Applier(mapping, conn, None, run_id="t", specs=specs)
        keys = Keys(ap._lookup)
        for dt in mapping.document_types():
            defaults = {c.name: c.default for c in specs[dt].columns if c.has_default}
            for (row,) in conn.execute(f"select to_jsonb(t) from {qualified(dt)} t"):
                collection, key, rev = ap.inverter.identity(dt, row)
                src = source[(collection, key)]
                assert rev == src["_rev"]
                want = {k: v for k, v in src.items() if k not in SYSTEM}
                plan = ap.inverter.plan(dt, row, keys, current=src)
                assert plan.doc == want and plan.edges == []
                plan = ap.inverter.plan(dt, row, keys)
                assert plan.key == key and plan.expected_rev == src["_rev"] and plan.edges == []
                got = json.loads(json.dumps(plan.doc))
                differ = {k for k in set(got) | set(want) if got.get(k) != want.get(k)}
                assert all(want.get(k) == defaults.get(k) for k in differ), differ
                same = [{k: v for k, v in d.items() if k not in differ} for d in (got, want)]
                assert json.dumps(same[0], sort_keys=True) == json.dumps(same[1], sort_keys=True)
                seen += 1
    assert seen > 60


def test_a_fallback_key_maps_back_to_its_row_id():
    from etl.fallback.inverse import key_for

    rid = "0b5e2c1a-8a57-4c1e-9a3b-1f6d8c1e0a57"
    assert row_id("resumes", key_for(rid)) == rid
    assert row_id("documents", key_for(rid)) == rid
    assert row_id("resumes", "pg-not-a-uuid") != rid  # other keys: uuid5 as always
    assert row_id("resumes", "pg-" + rid.upper()) != rid  # the rule writes lowercase only


def test_cutover_back_to_arangodb_says_go_after_the_last_writes(
    capture_db, tmp_path, arango_server
):
    schema_db, mechanism = capture_db
    env = cut_over(arango_server, schema_db, tmp_path, seed=66)
    assert scalar(schema_db, "select mechanism from etl_fallback_state") == mechanism
    with psycopg.connect(schema_db) as conn:
        conn.execute(
            "insert into job_documents (user_id, title, company) values ('u-b', 'Back', 'Co')"
        )
        conn.execute("update resume_documents set status = 'back' where id ="
                     " (select id from resume_documents order by id limit 1)")  # fmt: skip
    r = etl(env, "cutover", "--to", "arangodb", "--assume-frozen")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "cutover to arangodb: GO" in r.stdout
    reports = list((tmp_path / "reports").glob("cutover-back-*.json"))
    doc = json.loads(reports[0].read_text())
    assert doc["verdict"] == "go" and doc["reconcile_result"] == "everything matches"
    assert doc["fallback"]["changes"] == 2
    r = etl(env, "cutover", "--to", "mongodb")
    assert r.returncode == 2 and "use postgresql or arangodb" in r.stderr


def test_reads_use_only_the_documented_get_by_key(schema_db, tmp_path, arango_server, monkeypatch):
    """`PUT /_api/document/{c}?onlyget=true` is not in the documented API (a server that ignores
    `onlyget` takes the array for a replace-many): the fallback reads one GET per key."""
    from arango.collection import StandardCollection

    from etl.fallback.run import FallbackJob
    from etl.settings import load_settings

    env = cut_over(arango_server, schema_db, tmp_path, seed=67)
    with psycopg.connect(schema_db) as conn:
        key = conn.execute(
            "update job_documents set company = 'Bulkless' where id = (select id from"
            " job_documents order by id limit 1) returning metadata -> 'arango' ->> '_key'"
        ).fetchone()[0]

    def no_bulk(self, keys, allow_dirty_read=False):
        raise AssertionError("PUT ?onlyget sent")

    monkeypatch.setattr(StandardCollection, "get_many", no_bulk)
    job = FallbackJob(load_settings(None, env=env))
    job.execute(until_current=True)
    assert job.changes == 1 and not job.conflicts
    doc = client_db(arango_server).collection("jobs").get(key)
    assert doc.get("company_name", doc.get("company")) == "Bulkless"


def test_a_transaction_committing_after_a_later_one_was_applied_is_not_skipped(
    schema_db, tmp_path, arango_server
):
    env = cut_over(arango_server, schema_db, tmp_path, seed=68)
    db = client_db(arango_server)
    with psycopg.connect(schema_db) as slow, psycopg.connect(schema_db) as fast:
        (a, ka), (b, kb) = fast.execute(
            "select id, metadata -> 'arango' ->> '_key' from resume_documents order by id limit 2"
        ).fetchall()
        fast.commit()
        slow.execute("update resume_documents set status = 'slow' where id = %s", (a,))
        fast.execute("update resume_documents set status = 'fast' where id = %s", (b,))
        fast.commit()  # captured after the slow one, committed before it
        r = etl(env, "fallback", "--until-current")
        assert r.returncode == 0, r.stderr
        assert db.collection("resumes").get(kb)["status"] == "fast"
        assert db.collection("resumes").get(ka)["status"] != "slow"
        slow.commit()
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 0, r.stderr
    assert db.collection("resumes").get(ka)["status"] == "slow"


def test_a_row_the_application_holds_delays_the_batch_which_is_done_again(
    schema_db, tmp_path, arango_server, caplog
):
    # the write-back gives up on a held row within half of deadlock_timeout (1 s by default),
    # before PostgreSQL would look for a deadlock and perhaps abort the application instead
    import logging
    import threading

    from etl.fallback.run import FallbackJob
    from etl.settings import load_settings

    caplog.set_level(logging.WARNING, "etl.fallback")
    env = cut_over(arango_server, schema_db, tmp_path, seed=69)
    with psycopg.connect(schema_db) as conn:
        rid, key = conn.execute(
            "update job_documents set company = 'Held' where id = (select id from job_documents"
            " order by id limit 1) returning id, metadata -> 'arango' ->> '_key'"
        ).fetchone()
    holder = psycopg.connect(schema_db)
    holder.execute("select 1 from job_documents where id = %s for update", (rid,))
    threading.Timer(2.0, holder.commit).start()  # the application lets go after 2 s
    job = FallbackJob(load_settings(None, env=env))
    job.execute(until_current=True)
    holder.close()
    assert job.changes == 1 and not job.conflicts and not job.problems
    assert [r for r in caplog.records if "batch not committed" in r.message]
    doc = client_db(arango_server).collection("jobs").get(key)
    assert doc.get("company_name", doc.get("company")) == "Held"
    assert scalar(schema_db, "select count(*) from etl_fallback_changes") == 0
    rec = etl(env, "reconcile", "--all")
    assert rec.returncode == 0, rec.stdout[-2000:]


def test_one_document_reads_url_encode_the_key(arango_server):
    """Keys may hold '%' and other path characters (arangodb-http.md §6); the server decodes
    the document path, so a GET per key must encode it or it reads another (missing) key."""
    from etl.fallback.writes import ArangoWriter
    from tests.fakearango.fixtures import DATABASE, seed

    keys = ["a%20b", "p%2Fq", "x+y", "e=mc2;$!*'(),@:"]
    seed(arango_server, DATABASE, "things", [{"_key": k, "v": i} for i, k in enumerate(keys)])
    writer = ArangoWriter(
        client_db(arango_server), retry=lambda what, fn: fn(), on_conflict="report"
    )
    got: dict = {}
    writer.get_many({"things": set(keys) | {"missing"}}, got)
    assert {k: (d or {}).get("v") for (_, k), d in got.items()} == {
        **{k: i for i, k in enumerate(keys)},
        "missing": None,
    }


def test_reads_are_right_on_a_server_without_onlyget(arango_server, monkeypatch):
    """A server without `?onlyget` (arangodb-http.md §10 does not list it) would answer a bulk
    read as a bulk replace. etl reads by key with GETs, so such a server reads right (a delete
    is never skipped as "nothing exists") and no document is touched by a read."""
    from etl.fallback.writes import ArangoWriter
    from tests.fakearango.fixtures import DATABASE, seed
    from tests.fakearango.server import FakeArango

    seed(arango_server, DATABASE, "things", [{"_key": "a", "v": 1}, {"_key": "b", "v": 2}])
    before = {k: arango_server.documents(DATABASE, "things")[k]["_rev"] for k in "ab"}

    def no_onlyget(self, db, args, query, body):
        return self._modify(db, args, query, body, replace=True)

    monkeypatch.setattr(FakeArango, "_r_document_replace_many", no_onlyget)
    writer = ArangoWriter(
        client_db(arango_server), retry=lambda what, fn: fn(), on_conflict="report"
    )
    got: dict = {}
    writer.get_many({"things": {"a", "b", "missing"}}, got)
    assert {k: (d or {}).get("v") for (_, k), d in got.items()} == {"a": 1, "b": 2, "missing": None}
    assert {k: arango_server.documents(DATABASE, "things")[k]["_rev"] for k in "ab"} == before


# -- logical decoding (a replication slot) where the server allows it ---------------------------


def test_auto_picks_triggers_at_wal_level_replica_and_logical_decoding_where_allowed(
    schema_db, logical_schema_db, tmp_path
):
    from tests.test_preflight import checks, preflight

    _, doc = preflight(tmp_path, schema_db)
    c = checks(doc)["fallback.capture"]
    assert c["data"]["auto"] == "trigger" and "picks triggers" in c["detail"]
    assert "wal_level = replica" in c["detail"]
    _, doc = preflight(tmp_path, logical_schema_db)
    c = checks(doc)["fallback.capture"]
    assert c["data"]["auto"] == "logical" and "picks logical decoding" in c["detail"]
    # a role that may not replicate: triggers, and why
    from etl.fallback import capture

    with psycopg.connect(logical_schema_db, autocommit=True) as conn:
        conn.execute("create role etl_no_replication nologin")
        try:
            conn.execute("set role etl_no_replication")
            m = capture.mechanisms(conn)
        finally:
            conn.execute("reset role")
            conn.execute("drop role etl_no_replication")
    assert m["auto"] == "trigger" and "neither REPLICATION nor superuser" in m["why"]


def test_logical_arm_status_retire_and_rollback(logical_schema_db, tmp_path, arango_server):
    db = logical_schema_db
    env = migrated(arango_server, db, tmp_path, n=10, seed=66)
    r = etl(env, "fallback", "arm", "--capture", "nonsense")
    assert r.returncode == 2 and "--capture nonsense" in r.stderr and "Traceback" not in r.stderr
    r = etl(env, "fallback", "arm")
    assert r.returncode == 0, r.stderr
    assert "fallback armed (logical decoding, slot etl_fallback_" in r.stdout
    slot = scalar(db, "select slot_name from etl_fallback_state")
    assert scalar(db, "select count(*) from pg_replication_slots where slot_name = %s", slot)
    assert scalar(db, "select count(*) from pg_trigger where tgname = 'etl_fallback_capture'") == 0
    assert (
        scalar(db, "select relreplident from pg_class where oid = 'job_documents'::regclass") == "f"
    )  # a delete carries the row's key and provenance
    r = etl(env, "fallback", "arm", "--capture", "trigger")  # armed already, otherwise
    assert r.returncode == 2 and "armed with logical capture" in r.stderr
    with psycopg.connect(db) as conn:
        conn.execute("update resume_documents set status = 'x' where id = (select id"
                     " from resume_documents order by id limit 1)")  # fmt: skip
    s = etl(env, "status")
    assert "The way back" in s.stdout and "retained_wal_bytes" in s.stdout, s.stdout
    r = etl(env, "fallback", "retire")  # the change in the slot is not applied yet
    assert r.returncode == 2 and "not applied to ArangoDB yet" in r.stderr
    port = free_port()  # following, with metrics: the slot's WAL is served too
    p = subprocess.Popen(
        [sys.executable, "-m", "etl", "fallback", "--metrics-port", str(port)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    text = ""
    deadline = time.time() + 30
    while time.time() < deadline and applied(db) < 1:
        time.sleep(0.2)

    def retained() -> float:  # the gauge exists (0.0) before the first batch sets it
        m = re.search(r"^etl_fallback_slot_retained_wal_bytes (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    while time.time() < deadline and retained() == 0:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        except OSError:
            pass
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert retained() > 0, text
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 0, r.stdout + r.stderr
    assert applied(db) == 1  # etl's own write-back (provenance) is not captured again
    r = etl(env, "fallback", "retire")
    assert r.returncode == 0, r.stderr
    assert f"dropped replication slot {slot}" in r.stdout
    assert scalar(db, "select count(*) from pg_replication_slots where slot_name = %s", slot) == 0
    assert (
        scalar(db, "select relreplident from pg_class where oid = 'job_documents'::regclass") == "d"
    )
    # armed again, `etl rollback --component all` drops the slot with the rest
    r = etl(env, "fallback", "arm", "--capture", "logical")
    assert r.returncode == 0, r.stderr
    r = etl(env, "rollback", "--component", "all", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert scalar(db, "select count(*) from pg_replication_slots where slot_name = %s", slot) == 0


def test_a_slot_gone_or_lost_is_one_line_and_retire_force_clears(
    logical_schema_db, tmp_path, arango_server
):
    db = logical_schema_db
    env = migrated(arango_server, db, tmp_path, n=4, seed=68)
    assert etl(env, "fallback", "arm", "--capture", "logical").returncode == 0
    slot = scalar(db, "select slot_name from etl_fallback_state")
    scalar(db, "select count(*) from pg_drop_replication_slot(%s)", slot)  # as an invalidation
    r = etl(env, "fallback", "--until-current")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = helpers.error_lines(r.stderr)
    assert len(lines) == 1 and f"replication slot {slot} cannot be read" in lines[0], r.stderr
    r = etl(env, "fallback", "retire", "--force")
    assert r.returncode == 0, r.stderr
    assert scalar(db, "select count(*) from etl_fallback_state") == 0


def test_a_pump_killed_before_the_slot_advance_moves_nothing_twice(
    logical_schema_db, tmp_path, arango_server
):
    from etl.fallback import capture, decoding

    db = logical_schema_db
    env = migrated(arango_server, db, tmp_path, n=4, seed=69)
    assert etl(env, "fallback", "arm", "--capture", "logical").returncode == 0
    update = "update job_documents set title = %s where id = (select id from job_documents order by id limit 1)"

    def write(title: str) -> None:
        with psycopg.connect(db) as conn:
            conn.execute(update, (title,))

    write("one")
    write("two")

    class Killed(Exception):
        pass

    with psycopg.connect(db) as conn:
        real = conn.execute

        def execute(q, *a, **k):  # the process dies after the commit, before the advance
            if "pg_replication_slot_advance" in str(q):
                raise Killed
            return real(q, *a, **k)

        conn.execute = execute  # type: ignore[method-assign]
        with pytest.raises(Killed):
            decoding.pump(conn, capture.state(conn), 100)
    changes = "select count(*) from etl_fallback_changes"
    assert scalar(db, changes) == 2
    write("three")
    with psycopg.connect(db) as conn:
        moved, _ = decoding.pump(conn, capture.state(conn), 100)
    assert moved == 1 and scalar(db, changes) == 3  # the two are not moved again


def test_capture_logical_on_a_replica_level_server_is_one_line(schema_db, tmp_path, arango_server):
    env = migrated(arango_server, schema_db, tmp_path, n=4, seed=67)
    r = etl(env, "fallback", "arm", "--capture", "logical")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = helpers.error_lines(r.stderr)
    assert len(lines) == 1 and "wal_level = replica" in lines[0], r.stderr
    assert "--capture trigger" in lines[0]


def test_test_decoding_lines_parse_with_quotes_arrays_and_a_changed_key():
    from etl.fallback.decoding import parse

    rows = [
        ("0/10", "BEGIN"),
        ("0/11", "table public.t: INSERT: id[uuid]:'a' tags[text[]]:'{x,y}' n[integer]:3"),
        (
            "0/12",
            "table public.t: UPDATE: old-key: id[uuid]:'a' key[text]:'k''1 new-tuple: x'"
            " metadata[jsonb]:'{\"s\": \"it''s\"}' new-tuple: id[uuid]:'b' key[text]:null"
            " metadata[jsonb]:unchanged-toast-datum",
        ),
        ("0/13", "table public.other: DELETE: id[uuid]:'z'"),
        (
            "0/14",
            "table public.t: DELETE: id[uuid]:'c' \"odd \"\"col\"[text]:'v' key[text]:null"
            " metadata[jsonb]:'{}'",
        ),  # fmt: skip
        ("0/20", "COMMIT (at 2026-12-03 08:00:00.5+00)"),
        ("0/21", "BEGIN"),
        ("0/22", "message: transactional: 1 prefix: etl_fallback, sz: 3 content:run"),
        ("0/23", "table public.t: UPDATE: id[uuid]:'d' key[text]:'q'"),
        ("0/30", "COMMIT (at 2026-12-03 08:00:01+00)"),
        ("0/31", "BEGIN"),  # not committed in what was read: not taken
        ("0/32", "table public.t: INSERT: id[uuid]:'e'"),
    ]
    txs, problems = parse(rows, {"public.t"})
    assert problems == [] and [tx.end_lsn for tx in txs] == ["0/20", "0/30"]
    assert txs[0].changes == [
        ("public.t", "a", "I", None),
        ("public.t", "a", "D", {"key": "k'1 new-tuple: x", "metadata": {"s": "it's"}}),
        ("public.t", "b", "I", None),
        ("public.t", "c", "D", {"key": None, "metadata": {}}),
    ]
    assert txs[0].committed_at is not None and not txs[0].own
    assert txs[1].own and txs[1].changes == [("public.t", "d", "U", None)]
