"""etl sync against the ArangoDB test server's write-ahead log, over real HTTP: a migrate while
the application writes (behind and ahead of the cursor, a committed stream transaction, an
aborted one), then `etl sync --until-current` as a process; a pruned log, a truncated
collection and another server end in one line and exit 2; SIGTERM stops cleanly (130) and the
next run goes on; the metrics endpoint; the cutover's go with its audit entry and report."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import psycopg
import pytest

from etl.settings import load_settings
from tests.datagen import generate
from tests.fakearango.fixtures import DATABASE

# App, key_row, free_port and migrated live in tests.helpers; modules written before that
# import them from here, which keeps working
from tests.helpers import (
    App,
    arango_env,
    error_lines,
    etl,
    etl_popen,
    free_port,
    key_row,
    migrate_while_writing,
    migrated,  # noqa: F401
    newest_report,
    scalar,
)


def test_sync_until_current_after_a_migrate_under_writes(schema_db, tmp_path, arango_server):
    ds = generate(60, seed=31)
    resumes = sorted(d["_key"] for d in ds["resumes"])
    opts = [d for d in ds["documents"] if d.get("type") == "optimization"]
    touched = {}

    def writes(app: App):
        r = app.col("resumes")
        # behind the cursor (already copied) and ahead of it
        r.update({"_key": resumes[0], "status": "behind"})
        r.update({"_key": resumes[-1], "status": "ahead"})
        r.replace({"_key": resumes[1], "user_id": "user-replaced", "status": "uploaded"})
        r.delete(resumes[2])  # behind: copied, then removed
        r.delete(resumes[-2])  # ahead: never copied
        r.insert({"_key": "new-resume", "user_id": "user-new", "filename": "new.pdf"})
        app.col("documents").delete(opts[0]["_key"])
        # one committed multi-document stream transaction, one aborted
        txn = app.db.begin_transaction(write=["resumes", "jobs"])
        txn.collection("resumes").insert({"_key": "txn-a", "user_id": "u-t", "filename": "a"})
        txn.collection("jobs").insert({"_key": "txn-job", "user_id": "u-t", "title": "T"})
        txn.collection("resumes").update({"_key": resumes[3], "status": "in-txn"})
        txn.commit_transaction()
        bad = app.db.begin_transaction(write=["resumes"])
        bad.collection("resumes").insert({"_key": "aborted", "user_id": "u-x", "filename": "x"})
        bad.collection("resumes").delete(resumes[4])
        bad.abort_transaction()
        touched.update(resumes=resumes)

    env = migrate_while_writing(arango_server, schema_db, tmp_path, ds, writes)
    # more writes after the copy: the follower must apply them too
    app = App(arango_server)
    app.col("resumes").update({"_key": resumes[5], "status": "after"})
    app.col("jobs").insert({"_key": "late-job", "user_id": "u-l", "title": "Late"})

    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr
    assert "changes read" in r.stdout

    def column(key, name="status"):
        row = key_row(schema_db, "resume_documents", "resumes", key)
        return row[0][name] if row else None

    assert column(resumes[0]) == "behind"
    assert column(resumes[-1]) == "ahead"
    assert column(resumes[3]) == "in-txn"
    assert column(resumes[5]) == "after"
    assert column("new-resume", "filename") == "new.pdf" and column("txn-a", "filename") == "a"
    assert column(resumes[2]) is None and column(resumes[-2]) is None
    assert column("aborted") is None and column(resumes[4]) is not None
    assert key_row(schema_db, "resume_documents", "resumes", resumes[1])[0]["user_id"] == (
        "user-replaced"
    )
    assert key_row(schema_db, "job_documents", "jobs", "late-job") is not None
    assert key_row(schema_db, "optimization_results", "documents", opts[0]["_key"]) is None

    rec = etl("reconcile", "--all", env=env)
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr

    # idempotent: a second follower run finds nothing to do and changes nothing
    before = scalar(schema_db, "select count(*) from document_audit_log")
    r2 = etl("sync", "--until-current", env=env)
    assert r2.returncode == 0, r2.stderr
    assert scalar(schema_db, "select count(*) from document_audit_log") == before
    status = etl("status", env=env)
    assert "Change capture" in status.stdout and "lag_ticks" in status.stdout


def test_a_backlog_read_while_a_batch_commits_is_grouped_into_the_next(
    schema_db, arango_server, migrated_env, monkeypatch
):
    """Small tail responses and a slow committer: the reader goes on reading while a batch
    commits, and applies what it read as one batch (fewer batches than responses), losing
    nothing (reconcile is green, every change is in its row)."""
    from etl.sources import wal
    from etl.sync.apply import Applier
    from etl.sync.run import SyncJob

    env = migrated_env(seed=34)
    app = App(arango_server)
    for i in range(600):
        app.col("resumes").insert({"_key": f"g{i}", "user_id": "u-g", "filename": f"g{i}.pdf"})
    monkeypatch.setattr(wal, "CHUNK_SIZE", 16 * 1024)  # the server's smallest: a few changes
    batches = []
    execute = Applier.execute

    def slow_execute(self, c, plan, share=None):
        batches.append(sum(len(keys) for keys in plan.keys.values()))
        time.sleep(1.0)  # PostgreSQL busy: the reader reads on meanwhile
        return execute(self, c, plan, share)

    monkeypatch.setattr(Applier, "execute", slow_execute)
    job = SyncJob(load_settings(None, env=env))
    job.metrics_port = None
    job.open()
    try:
        out = job.follow(until_current=True)
    finally:
        job.close("finished")
    responses = out.polls
    # ungrouped, each response was a batch of its own (about 90 of these resumes each)
    assert sum(batches) == 600 and len(batches) <= responses // 2, (batches, responses)
    assert scalar(schema_db, "select count(*) from resume_documents where user_id = 'u-g'") == 600
    rec = etl("reconcile", "--all", env=env)
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr


def test_only_a_backlog_is_grouped_a_trickle_goes_to_the_committer_at_once():
    """The reader holds what it read for the next batch only while the server sends full
    responses (a backlog). A response below the chunk size goes to the committer, and the
    reader waits for it: checkmore is true after most single writes (index writes follow the
    marker), and grouping on it alone held a steady load's changes back (its lag tripled)."""
    from etl.sources.wal import TailResponse
    from etl.sync.follow import GROUP_CHANGES, reads_on

    def resp(full: bool, check_more: bool = True) -> TailResponse:
        return TailResponse(200, [{}], 10, 10, 11, check_more, True, full)

    assert reads_on(resp(full=True), moved=True, committing=True, pending=100)
    assert not reads_on(resp(full=False), moved=True, committing=True, pending=100)
    assert not reads_on(resp(full=True), moved=True, committing=False, pending=100)
    assert not reads_on(resp(full=True, check_more=False), True, True, 100)
    assert not reads_on(resp(full=True), moved=False, committing=True, pending=100)
    assert not reads_on(resp(full=True), moved=True, committing=True, pending=GROUP_CHANGES)


def test_a_pruned_log_ends_in_one_line_naming_a_new_migrate(arango_server, migrated_env):
    env = migrated_env()
    app = App(arango_server)
    for i in range(5):
        app.col("resumes").insert({"_key": f"p{i}", "user_id": "u", "filename": "f"})
    arango_server.prune_wal(force=True)
    app.col("resumes").insert({"_key": "after-prune", "user_id": "u", "filename": "f"})
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "no longer covers" in lines[0] and "etl migrate" in lines[0]
    assert "Traceback" not in r.stderr


def test_a_small_truncate_arrives_as_removals(schema_db, arango_server, migrated_env):
    env = migrated_env(seed=33)
    App(arango_server).col("jobs").truncate()  # below ArangoDB's range-delete threshold
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr
    assert scalar(schema_db, "select count(*) from job_documents") == 0
    # the research reports that referenced the jobs stay, unlinked (as a fresh migrate)
    assert scalar(schema_db, "select count(*) from research_results") > 0
    assert scalar(schema_db, "select count(*) from research_results where job_id is not null") == 0


@pytest.mark.parametrize(
    "ddl, said",
    [
        (lambda s: s.truncate_collection(DATABASE, "jobs"), "'jobs' was truncated"),
        (lambda s: s.drop_collection(DATABASE, "jobs"), "'jobs' was dropped"),
        (lambda s: s.rename_collection(DATABASE, "jobs", "postings"), "renamed to 'postings'"),
    ],
    ids=["truncate", "drop", "rename"],
)
def test_collection_ddl_stops_sync_with_one_line(schema_db, arango_server, ddl, said, migrated_env):
    env = migrated_env(seed=33)
    arango_server.truncate_threshold = 0  # the range-delete path: a 2004 marker
    before = scalar(schema_db, "select count(*) from job_documents")
    ddl(arango_server)
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and said in lines[0] and "on_collection_ddl" in lines[0], r.stderr
    assert scalar(schema_db, "select count(*) from job_documents") == before


def test_collection_ddl_applied_when_the_mapping_says_so(
    schema_db, tmp_path, arango_server, migrated_env
):
    from etl.resources import default_mapping

    mapping = tmp_path / "m.toml"
    text = default_mapping().read_text()
    mapping.write_text(text.replace("[policy]\n", '[policy]\non_collection_ddl = "apply"\n', 1))
    env = {**migrated_env(seed=40), "ETL_MAPPING": str(mapping)}
    arango_server.truncate_threshold = 0
    arango_server.truncate_collection(DATABASE, "jobs")
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr
    assert scalar(schema_db, "select count(*) from job_documents") == 0


def test_sigterm_stops_cleanly_and_the_next_run_goes_on(schema_db, arango_server, migrated_env):
    env = migrated_env(seed=34)
    proc = etl_popen("sync", "--metrics-port", str(free_port()), env=env)
    app = App(arango_server)
    deadline = time.time() + 30
    while time.time() < deadline:  # the follower is up once it recorded a poll
        if scalar(schema_db, "select count(*) from etl_runs where command = 'sync'"):
            break
        time.sleep(0.2)
    for i in range(30):
        app.col("resumes").insert({"_key": f"s{i}", "user_id": "u", "filename": f"f{i}"})
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    for i in range(30, 40):
        app.col("resumes").insert({"_key": f"s{i}", "user_id": "u", "filename": f"f{i}"})
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr
    assert (
        scalar(
            schema_db,
            "select count(*) from resume_documents where metadata->'arango'->>'_key' like 's%%'",
        )
        == 40
    )


def test_metrics_endpoint_serves_lag_and_applied_changes(
    schema_db, tmp_path, arango_server, migrated_env
):
    migrated_env(seed=35)
    from etl.sync.metrics import SyncMetrics
    from etl.sync.run import SyncJob

    settings = load_settings(None, env=arango_env(arango_server, schema_db, tmp_path))
    App(arango_server).col("resumes").insert({"_key": "m1", "user_id": "u", "filename": "f"})
    job = SyncJob(settings)
    job.metrics_port = None
    job.open()
    job.metrics = job.follower.metrics = SyncMetrics(0)
    try:
        job.follow(until_current=True)
        port = job.metrics.server.server_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        job.close("finished")
    assert "etl_sync_lag_ticks 0.0" in text
    assert 'etl_sync_applied_changes_total{collection="resumes",operation="insert"} 1.0' in text
    assert "etl_sync_last_applied_timestamp_seconds" in text


def test_cutover_go_writes_its_audit_entry_and_report(
    schema_db, tmp_path, arango_server, migrated_env
):
    env = migrated_env(seed=36)
    App(arango_server).col("jobs").insert({"_key": "cut-job", "user_id": "u", "title": "C"})
    r = etl("cutover", "--assume-frozen", "--sample", "100", env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "cutover: GO" in r.stdout, r.stderr
    assert "could not record" not in r.stderr, r.stderr
    audit = scalar(
        schema_db,
        "select changes from document_audit_log where action = 'cutover' order by id desc limit 1",
    )
    assert audit["verdict"] == "go" and audit["final_tick"] > 0
    assert audit["reconcile_result"] == "everything matches"
    doc = newest_report(tmp_path / "reports", "cutover-")
    assert doc["verdict"] == "go" and doc["freeze_seconds"] >= 0
    assert key_row(schema_db, "job_documents", "jobs", "cut-job") is not None


@pytest.mark.parametrize("answer", ["n"])
def test_cutover_cancelled_at_the_freeze_question(answer, migrated_env):
    env = migrated_env(seed=37)
    r = etl("cutover", env=env, input=answer + "\n", timeout=120)
    assert r.returncode == 2 and "cancelled before the freeze" in r.stderr, r.stderr
    assert os.environ.get("ETL_ARANGO_PASSWORD", "rootpw") not in r.stdout


def test_a_loader_role_with_the_printed_grants_follows_and_cuts_over(
    schema_db, tmp_path, arango_server, new_role, seeded_arango
):
    from psycopg.conninfo import make_conninfo

    loader = new_role(schema_db)
    printed = etl("grants", "--role", loader, env={**os.environ, "ETL_PG_DSN": schema_db})
    assert printed.returncode == 0, printed.stderr
    with psycopg.connect(schema_db, autocommit=True) as conn:
        for s in printed.stdout.splitlines():
            if s.strip():
                conn.execute(s)
    ds = seeded_arango(20, seed=38)
    env = arango_env(arango_server, make_conninfo(schema_db, user=loader), tmp_path)
    assert etl("migrate", "--all", env=env).returncode == 0
    app = App(arango_server)
    victim = sorted(d["_key"] for d in ds["resumes"])[0]
    app.col("resumes").delete(victim)  # its optimizations stay, unlinked
    app.col("jobs").insert({"_key": "loader-job", "user_id": "u", "title": "L"})
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr
    assert key_row(schema_db, "resume_documents", "resumes", victim) is None
    cut = etl("cutover", "--assume-frozen", env=env)
    assert cut.returncode == 0, cut.stdout[-2000:] + cut.stderr


def test_sync_and_cutover_through_pgbouncer_in_transaction_pooling(
    pg_admin_dsn, make_db, tmp_path, arango_server, seeded_arango
):
    from psycopg.conninfo import conninfo_to_dict

    from tests.pgbouncer import pgbouncer

    direct = make_db(schema=True)
    with pgbouncer(pg_admin_dsn, "transaction") as via:
        pooled = via(conninfo_to_dict(direct)["dbname"])
        seeded_arango(20, seed=39)
        env = arango_env(arango_server, pooled, tmp_path)
        assert etl("migrate", "--all", "--batch", "7", env=env).returncode == 0
        env["ETL_SYNC_SPLIT_ROWS"] = "2"  # its batches split over two pooled connections
        app = App(arango_server)
        for i in range(12):
            app.col("jobs").insert({"_key": f"pb{i}", "user_id": "u", "title": f"J{i}"})
        txn = app.db.begin_transaction(write=["jobs"])
        txn.collection("jobs").delete("pb0")
        txn.commit_transaction()
        r = etl("sync", "--until-current", env=env)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        synced = newest_report(tmp_path / "reports", "sync-")["sync"]
        assert synced["batches"].get("split"), synced
        cut = etl("cutover", "--assume-frozen", "--sample", "50", env=env)
        assert cut.returncode == 0, cut.stdout[-2000:] + cut.stderr
    keys = scalar(
        direct,
        "select array_agg(metadata->'arango'->>'_key' order by 1) from job_documents"
        " where metadata->'arango'->>'_key' like 'pb%%'",
    )
    assert sorted(keys) == sorted(f"pb{i}" for i in range(1, 12))
