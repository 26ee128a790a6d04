"""`etl cutover` as the operator runs it, with the application writing right after the freeze
confirmation: a mapped change committed after it is applied and verified and the report says
the freeze did not hold; writes that go on make it no-go (exit 1) naming the keys; a row that
differs from the source is a no-go naming the key and the field; every key changed since the
copy is verified (continuously, and the last ones in the freeze) without a full reconcile."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

from tests.fakearango.fixtures import DATABASE
from tests.test_migrate_arango import scalar
from tests.test_sync import REPO, App, etl, key_row, migrated


def cutover(env: dict, server, *args: str, after_confirm=None, timeout: float = 120):
    """Run `etl cutover`, answer its freeze question with yes, and call after_confirm() (which
    may arm the test server) just before the answer goes in."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "cutover", *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    head = []
    for line in proc.stdout:  # click.echo flushes each line
        head.append(line)
        if "freeze writes to ArangoDB now" in line:
            break
    if after_confirm is not None:
        after_confirm()
    out, err = proc.communicate("y\n", timeout=timeout)
    return proc.returncode, "".join(head) + out, err


def report(tmp_path) -> dict:
    newest = sorted((tmp_path / "reports").glob("cutover-*.json"))[-1]
    return json.loads(newest.read_text())


def test_a_change_right_after_the_confirmation_is_applied_and_verified(
    schema_db, tmp_path, arango_server
):
    env = migrated(arango_server, schema_db, tmp_path, seed=50)

    def late_write():  # committed just after the drain's first poll was scanned
        arango_server.insert(DATABASE, "jobs", {"_key": "late-job", "user_id": "u", "title": "L"})

    code, out, err = cutover(
        env,
        arango_server,
        "--sample",
        "10",
        after_confirm=lambda: arango_server.after(late_write, routes=("wal_tail",)),
    )
    assert code == 0, out[-2000:] + err
    assert "cutover: GO" in out and "the freeze did not hold" in out, out
    assert key_row(schema_db, "job_documents", "jobs", "late-job") is not None
    doc = report(tmp_path)
    assert doc["freeze_held"] is False and doc["late_keys"] == ["jobs/late-job"]
    assert doc["keys_verified_in_freeze"].get("jobs", 0) >= 1


def test_writes_going_on_after_the_freeze_are_a_no_go_exit_1(schema_db, tmp_path, arango_server):
    env = migrated(arango_server, schema_db, tmp_path, seed=51)
    n = {"i": 0}

    def write():  # the application never stops: a new job after every tick the cutover reads
        n["i"] += 1
        arango_server.insert(DATABASE, "jobs", {"_key": f"w{n['i']}", "user_id": "u", "title": "W"})

    code, out, err = cutover(
        env,
        arango_server,
        after_confirm=lambda: arango_server.after(write, 1000, routes=("wal_last_tick",)),
    )
    assert code == 1, out[-2000:] + err
    assert "cutover: NO-GO" in out and "kept arriving after the freeze" in out, out
    assert "Traceback" not in err and "error:" not in err, err
    doc = report(tmp_path)
    assert doc["verdict"] == "no-go" and doc["freeze_held"] is False
    assert "jobs/w1" in doc["late_keys"]


def test_a_row_that_differs_from_the_source_is_a_no_go_naming_key_and_field(
    schema_db, tmp_path, arango_server
):
    env = migrated(arango_server, schema_db, tmp_path, seed=52)
    app = App(arango_server)
    app.col("jobs").insert({"_key": "j-diff", "user_id": "u", "title": "Right"})
    assert etl(env, "sync", "--until-current").returncode == 0
    with psycopg.connect(schema_db) as conn:  # someone edits the target behind the follower
        conn.execute(
            "update job_documents set title = 'Wrong' where metadata -> 'arango' ->> '_key' = 'j-diff'"
        )
    code, out, err = cutover(env, arango_server)
    assert code == 1, out[-2000:] + err
    assert "jobs/j-diff (title)" in out, out
    doc = report(tmp_path)
    assert doc["differing"] == [{"collection": "jobs", "key": "j-diff", "fields": ["title"]}]


def test_every_changed_key_is_verified_without_a_full_reconcile(schema_db, tmp_path, arango_server):
    env = migrated(arango_server, schema_db, tmp_path, seed=53)
    app = App(arango_server)
    for i in range(5):
        app.col("jobs").insert({"_key": f"v{i}", "user_id": "u", "title": f"T{i}"})
    app.col("jobs").delete("v0")
    edges = sorted(arango_server.documents(DATABASE, "job_research"))
    app.col("job_research").delete(edges[0])  # an edge unlinked, another one changed
    app.col("job_research").update({"_key": edges[1], "note": "changed"})
    assert etl(env, "sync", "--until-current").returncode == 0
    code, out, err = cutover(env, arango_server)
    assert code == 0, out[-2000:] + err
    assert scalar(schema_db, "select count(*) from etl_sync_pending") == 0
    doc = report(tmp_path)
    assert doc["freeze_held"] is True and "reconcile_run" not in doc
    verified = {v["collection"]: v for v in doc["verification"]}
    # every key changed since the copy: 5 jobs (one removed again) and 2 edges, none pending
    assert verified["jobs"]["keys_verified"] >= 5 and verified["jobs"]["last_verified_at"]
    assert verified["job_research"]["keys_verified"] >= 2
    assert all(v["pending"] == 0 and v["differing"] == 0 for v in verified.values())
