"""etl_rejects holds only live rejects: a document rejected earlier that becomes valid, or is
removed, loses its rows there, after a migrate as after sync; `etl status` counts what is left."""

from __future__ import annotations

import copy

import psycopg

from etl.mapping import load_mapping
from etl.status import status
from etl.sync.apply import Applier
from tests.datagen import generate
from tests.helpers import settings_for
from tests.test_sync_apply import Changes, migrate, state_of, write_jsonl


def reject_keys(dsn: str, collection: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return sorted(
            k
            for (k,) in conn.execute(
                "select key from etl_rejects where collection = %s", (collection,)
            )
        )


def live_state():
    s0 = state_of(generate(20, seed=44))
    keys = sorted(s0["resumes"])
    for k in keys[:3]:  # three resumes the transform rejects (no user_id)
        s0["resumes"][k] = {x: v for x, v in s0["resumes"][k].items() if x != "user_id"}
    return s0, keys


def test_migrate_keeps_only_live_rejects(schema_db, tmp_path):
    s0, keys = live_state()
    migrate(schema_db, write_jsonl(s0, tmp_path / "s0"), tmp_path)
    assert reject_keys(schema_db, "resumes") == keys[:3]
    s1 = copy.deepcopy(s0)
    s1["resumes"][keys[0]]["user_id"] = "fixed"  # valid now
    del s1["resumes"][keys[1]]  # removed from the source
    migrate(schema_db, write_jsonl(s1, tmp_path / "s1"), tmp_path)
    assert reject_keys(schema_db, "resumes") == [keys[2]]  # once, not once per run
    rows = status(schema_db)["rejects"]
    assert {(r["collection"], r["rejects"]) for r in rows} == {("resumes", 1)}


def test_sync_keeps_only_live_rejects(schema_db, tmp_path):
    s0, keys = live_state()
    migrate(schema_db, write_jsonl(s0, tmp_path / "s0"), tmp_path)
    ch = Changes(copy.deepcopy(s0))
    ch.put("resumes", {**s0["resumes"][keys[0]], "user_id": "fixed"})  # valid now
    ch.remove("resumes", keys[1])
    ch.put("resumes", dict(s0["resumes"][keys[2]], note="still bad"))  # a reject again
    good = s0["resumes"][keys[5]]
    ch.put("resumes", {x: v for x, v in good.items() if x != "user_id"})  # turns reject
    ch.next_batch()
    ch.put("resumes", good)  # and valid again
    applier = Applier(load_mapping(settings_for(schema_db, tmp_path).migrate.mapping), "sync-t")
    with psycopg.connect(schema_db) as conn:
        for batch in ch.batches:
            with conn.transaction():
                applier.apply(conn, batch)
    assert reject_keys(schema_db, "resumes") == [keys[2]]


def test_an_edge_moved_off_a_removed_job_in_the_same_batch_is_no_reject(schema_db, tmp_path):
    """Found by the property test: the job's removal made its edge a dangling reject, and the
    edge's move to another job (same batch) linked it again; the reject must not stay."""
    s0 = state_of(generate(20, seed=44))
    migrate(schema_db, write_jsonl(s0, tmp_path / "s0"), tmp_path)
    edge = next(iter(s0["job_research"].values()))
    job = edge["_from"].partition("/")[2]
    other = next(k for k in s0["jobs"] if k != job)
    ch = Changes(copy.deepcopy(s0))
    ch.remove("jobs", job)
    ch.put("job_research", {**edge, "_from": f"jobs/{other}"})
    applier = Applier(load_mapping(settings_for(schema_db, tmp_path).migrate.mapping), "sync-t")
    with psycopg.connect(schema_db) as conn, conn.transaction():
        applier.apply(conn, ch.batches[0])
    assert edge["_key"] not in reject_keys(schema_db, "job_research")
