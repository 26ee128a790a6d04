"""`etl migrate --collection jobs` while a follower exists: the follower keeps its position and
its etl_sync_applied counts for the other collections; the re-copied collection is caught up
from its own copy's start. So the next `etl sync` reads only the new changes, and a log pruned
past the first copy's start (but not past the follower) does not demand a new full migrate."""

from __future__ import annotations

import re

import psycopg

from etl.sync import positions
from tests.helpers import App, arango_env, etl, scalar


def applied(dsn: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(dsn) as conn:
        return positions.applied(conn)


def read_count(stdout: str) -> int:
    m = re.search(r"(\d+) changes read", stdout)
    assert m, stdout
    return int(m.group(1))


def test_recopy_one_collection_keeps_the_follower(
    schema_db, tmp_path, arango_server, seeded_arango
):
    seeded_arango(20, seed=45)
    env = arango_env(arango_server, schema_db, tmp_path)
    assert etl("migrate", "--all", env=env).returncode == 0
    app = App(arango_server)
    for i in range(5):
        app.col("resumes").insert({"_key": f"w1-{i}", "user_id": "u", "filename": "f"})
    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr
    before = applied(schema_db)
    assert before[("resumes", "insert")] == 5
    followed = int(
        scalar(schema_db, "select from_tick from etl_wal_positions where kind = 'follow'")
    )

    # changes before the re-copy (the copy of jobs holds the job ones), the re-copy, changes after
    for i in range(4):
        app.col("resumes").insert({"_key": f"w2-{i}", "user_id": "u", "filename": "f"})
    for i in range(2):
        app.col("jobs").insert({"_key": f"w2-job-{i}", "user_id": "u", "title": "T"})
    r = etl("migrate", "--collection", "jobs", env=env)
    assert r.returncode == 0, r.stderr
    for i in range(3):
        app.col("resumes").insert({"_key": f"w3-{i}", "user_id": "u", "filename": "f"})
    app.col("jobs").insert({"_key": "w3-job", "user_id": "u", "title": "T"})
    # ArangoDB pruned what the follower had already read (the first copy's start with it)
    arango_server.prune_wal(followed, force=True)

    r = etl("sync", "--until-current", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_count(r.stdout) == 10, r.stdout  # the 4 + 2 + 3 + 1 new ones, no replay
    after = applied(schema_db)
    assert after[("resumes", "insert")] == 5 + 7  # kept, and only the new ones
    assert after.get(("jobs", "insert"), 0) == before.get(("jobs", "insert"), 0) + 1
    n = scalar(
        schema_db,
        "select count(*) from job_documents where metadata -> 'arango' ->> '_key' like 'w%%'",
    )
    assert n == 3
    rec = etl("reconcile", "--all", env=env)
    assert rec.returncode == 0, rec.stdout[-3000:]
