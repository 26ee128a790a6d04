"""etl migrate from the ArangoDB test server over real HTTP: the whole data set, a fault burst,
progress log lines off a terminal, and a SIGKILL followed by --resume."""

from __future__ import annotations

import psycopg

from etl.migrate import Migration
from etl.settings import load_settings
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed
from tests.helpers import arango_env, etl, etl_popen, kill_after_batches, scalar


def test_migrate_arango_all_collections_with_a_503_burst(
    schema_db, tmp_path, arango_server, seeded_arango
):
    ds = seeded_arango(80, seed=21, bad=True)
    arango_server.fail(3, status=503, error_num=21003)  # a burst on the cursor routes
    arango_server.drop_connection(1)
    env = arango_env(arango_server, schema_db, tmp_path)
    settings = load_settings(None, env=env)
    summary = Migration(settings, all_=True, batch_size=25, retry_wait=lambda rs: 0).run()
    by_name = {c.collection: c for c in summary.collections}
    for name, count in ds.counts.items():
        c = by_name[name]
        assert c.source_count == count
        assert count == c.counts.loaded + c.counts.rejected + c.counts.unmapped, name
    assert (
        scalar(schema_db, "select count(*) from resume_documents")
        == by_name["resumes"].counts.loaded
    )
    # the password never reaches the run tables or the report
    report = (tmp_path / "reports" / f"{summary.run_id}.json").read_text()
    assert ROOT_PASSWORD not in report
    assert (
        scalar(
            schema_db,
            "select count(*) from etl_runs where options::text like %s or source like %s",
            f"%{ROOT_PASSWORD}%",
            f"%{ROOT_PASSWORD}%",
        )
        == 0
    )


def test_migrate_arango_killed_then_resumed_gives_exact_rows(
    schema_db, tmp_path, arango_server, seeded_arango
):
    ds = seeded_arango(400, seed=22)
    env = arango_env(arango_server, schema_db, tmp_path)
    proc = etl_popen("migrate", "--collection", "resumes", "--batch", "20", env=env, text=False)
    kill_after_batches(proc, schema_db, 4)
    at_kill = scalar(schema_db, "select count(*) from resume_documents")
    assert 0 < at_kill < ds.counts["resumes"]
    done = etl("migrate", "--resume", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    # not a terminal: progress comes as log lines with a rate
    assert "docs/s" in done.stderr
    assert scalar(schema_db, "select count(*) from resume_documents") == ds.counts["resumes"]
    keys = {
        k
        for (k,) in psycopg.connect(schema_db).execute(
            "select metadata->'arango'->>'_key' from resume_documents"
        )
    }
    assert keys == {d["_key"] for d in ds["resumes"]}
    assert (
        scalar(schema_db, "select read from etl_checkpoints where collection = 'resumes'")
        == ds.counts["resumes"]
    )


def test_migrate_arango_wrong_password_is_one_line_exit_2(schema_db, tmp_path, arango_server):
    env = arango_env(arango_server, schema_db, tmp_path)
    env["ETL_ARANGO_PASSWORD"] = "wrong-password-xyz"
    proc = etl("migrate", "--collection", "resumes", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "wrong-password-xyz" not in proc.stderr + proc.stdout


def test_migrate_arango_unknown_collection_lists_existing(schema_db, tmp_path, arango_server):
    seed(arango_server, DATABASE, "resumes", [{"_key": "a", "user_id": "u1"}])
    env = arango_env(arango_server, schema_db, tmp_path)
    proc = etl("migrate", "--collection", "resumez", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "resumez" in proc.stderr and "resumes" in proc.stderr
