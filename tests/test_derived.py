"""The column an edge sets (research_results.job_id) is a function of the source's current
state alone (etl/derived.py): the document's own job when it names one, else the job of its
edge with the greatest key. Whatever order `etl sync`, `etl migrate --all` and `etl migrate
--collection documents` run in, the row is the same and reconcile is green."""

from __future__ import annotations

import psycopg

from etl import derived
from etl.transform import row_id
from tests.helpers import App, arango_env, etl


def research_row(dsn: str, key: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select job_id::text, metadata -> 'edges', metadata - 'etl' from research_results"
            " where id = %s",
            (row_id("documents", key),),
        ).fetchone()


def test_derive_rule():
    assert derived.derive(True, "own", {"a": "j1", "b": "j2"}) == "own"
    assert derived.derive(True, None, {"a": "j1"}) is None  # names a job that is not a key
    assert derived.derive(False, None, {"b": "j2", "a": "j1", "B": "j3"}) == "j2"
    assert derived.derive(False, None, {}) is None
    assert derived.own_named({"job_id": 0}, [("job_id",)])
    assert not derived.own_named({"job_id": None}, [("job_id",)])


def test_a_second_edge_gives_the_same_row_in_every_order(
    schema_db, tmp_path, arango_server, seeded_arango
):
    ds = seeded_arango(20, seed=41)
    env = arango_env(arango_server, schema_db, tmp_path)
    assert etl("migrate", "--all", env=env).returncode == 0
    research = next(
        d for d in ds["documents"] if d.get("type") == "research" and d.get("job_id") is not None
    )
    own_job = research["job_id"]
    other_job = next(j["_key"] for j in ds["jobs"] if j["_key"] != own_job)
    # the application adds a second edge, with the greatest key, to another job
    App(arango_server).col("job_research").insert(
        {
            "_key": "9999999",
            "_from": f"jobs/{other_job}",
            "_to": f"documents/{research['_key']}",
        }
    )
    commands = {
        "sync": ("sync", "--until-current"),
        "all": ("migrate", "--all"),
        "documents": ("migrate", "--collection", "documents"),
    }
    # every command after every other one: s a d s d a s
    seen = []
    for step in ("sync", "all", "documents", "sync", "documents", "all", "sync"):
        r = etl(*commands[step], env=env)
        assert r.returncode == 0, (step, r.stderr[-2000:])
        job, edges, _ = research_row(schema_db, research["_key"])
        seen.append((step, job))
        assert job == row_id("jobs", own_job), seen
        assert "9999999" in edges and len(edges) >= 2, edges  # every edge stays visible
        if step in ("documents", "sync"):
            rec = etl("reconcile", "--all", env=env)
            assert rec.returncode == 0, (step, rec.stdout[-3000:])
