"""The follower's oracle: after migrating state S0 and applying the changes that turn S0 into
S1, every table holds what a fresh migrate of S1 holds, and reconcile against S1 is green.
The changes are the hard ones: parents removed under their children, a child before its parent,
a document routed to another table, one that turns into a reject, edges removed, moved and
ahead of their research row, a key removed and re-inserted in one batch."""

from __future__ import annotations

import copy
import functools
import json
import secrets
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from etl import jsonutil
from etl.mapping import load_mapping
from etl.migrate import Migration
from etl.reconcile import Reconciliation
from etl.sync import committers
from etl.sync.apply import Applier
from etl.sync.changes import Change
from etl.sync.committers import Committers
from tests.datagen import generate
from tests.helpers import scalar, settings_for

TABLES = (
    "resume_documents",
    "job_documents",
    "optimization_results",
    "research_results",
    "arango.task_results",  # a generic table (etl/generic/)
)


def state_of(ds) -> dict[str, dict[str, dict]]:
    return {c: {d["_key"]: d for d in ds[c]} for c in ds}


def write_jsonl(state: dict, d: Path) -> str:
    d.mkdir(parents=True, exist_ok=True)
    for collection, docs in state.items():
        with open(d / f"{collection}.jsonl", "w") as f:
            for doc in docs.values():
                f.write(jsonutil.dumps_str(doc) + "\n")
    return f"jsonl:{d}"


def migrate(dsn: str, source: str, tmp_path: Path) -> None:
    Migration(settings_for(dsn, tmp_path), all_=True, source=source, batch_size=50).run()


def table_rows(dsn: str) -> dict[str, dict[str, dict]]:
    """Every row by id, without what differs between two runs (metadata.etl: run id, time)."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for t in TABLES:
            rows = conn.execute(
                f"select id::text, to_jsonb(x) - 'id' - 'metadata' - 'updated_at',"
                f" metadata - 'etl' from {t} x"
            ).fetchall()
            out[t] = {rid: {**row, "metadata": meta} for rid, row, meta in rows}
    return out


class Changes:
    """S0 -> S1 as WAL-like changes, each also applied to `state`."""

    def __init__(self, state: dict):
        self.state = state
        self.batches: list[list[Change]] = [[]]
        self.tick = 1000

    def next_batch(self) -> None:
        self.batches.append([])

    def put(self, collection: str, doc: dict) -> None:
        self.tick += 2
        self.state[collection][doc["_key"]] = doc
        self.batches[-1].append(Change(self.tick, collection, doc["_key"], copy.deepcopy(doc)))

    def remove(self, collection: str, key: str) -> None:
        self.tick += 2
        self.state[collection].pop(key)
        self.batches[-1].append(Change(self.tick, collection, key, None))


def of_type(state, kind: str) -> list[dict]:
    return [d for d in state["documents"].values() if d.get("type") == kind]


@pytest.fixture
def two_dbs(make_db):
    return make_db(schema=True), make_db(schema=True)


class Died(Exception):
    """The process died before the first connection's commit (its transaction rolls back)."""


@pytest.mark.parametrize("mode", ["one-connection", "split", "split-crash"])
def test_applied_changes_equal_a_fresh_migrate_of_the_final_state(mode, two_dbs, tmp_path):
    """split: each batch goes through the follower's committers with every batch split over
    two connections; the second batch holds a row the table refuses, so that batch goes on one
    connection again after the split fails. split-crash: the first batch's second connection
    commits and the first dies before its commit; the batch is applied again by new
    committers, as the next run does from the position that was not saved."""
    followed, fresh = two_dbs
    s0 = state_of(generate(40, seed=5))
    migrate(followed, write_jsonl(s0, tmp_path / "s0"), tmp_path)
    s1 = copy.deepcopy(s0)
    ch = Changes(s1)
    resumes, jobs = list(s1["resumes"]), list(s1["jobs"])
    opts, research = of_type(s1, "optimization"), of_type(s1, "research")
    edges = list(s1["job_research"].values())

    # batch 1: replace a resume without its status (the column's default, not the old value)
    r0 = dict(s1["resumes"][resumes[0]])
    r0.pop("status", None)
    r0["filename"] = "renamed.pdf"
    ch.put("resumes", r0)
    # a removed resume that optimizations / research reports reference: they stay, unlinked
    parent = next(o["resume_id"] for o in opts if o["resume_id"] in s1["resumes"])
    ch.remove("resumes", parent)
    # new children of it in the same batch (one in each half of a split batch): they stay,
    # unlinked, whichever connection stores them
    for k in ("opt-orphan-a", "opt-orphan-b", "opt-orphan-c"):
        ch.put("documents", dict(opts[4], _key=k, _id=f"documents/{k}", resume_id=parent))
    # a removed job with research edges: its edges dangle (rejects), its research rows stay
    job_key = edges[0]["_from"].partition("/")[2]
    ch.remove("jobs", job_key)
    # a child whose parent arrives in a later batch
    child = dict(opts[1], _key="opt-new-child", _id="documents/opt-new-child")
    child["resume_id"] = "resume-late"
    ch.put("documents", child)
    # an optimization that becomes a research report (another table)
    moved = dict(opts[2], type="research", company="Moved Co", job_title="Moved")
    ch.put("documents", moved)
    # an optimization the transform now rejects (U+0000, which PostgreSQL cannot store)
    ch.put("documents", dict(opts[3], content="bad\x00text"))
    # an edge removed, another moved to another research row
    ch.remove("job_research", edges[1]["_key"])
    ch.put("job_research", dict(edges[2], _to=f"documents/{research[-1]['_key']}"))
    # an edge ahead of its research row
    ch.put(
        "job_research",
        {
            "_key": "edge-early",
            "_id": "job_research/edge-early",
            "_from": f"jobs/{jobs[-1]}",
            "_to": "documents/research-late",
        },
    )
    # a key removed and put back in one batch
    ch.remove("resumes", resumes[3])
    ch.put("resumes", dict(s0["resumes"][resumes[3]], summary_note="back"))
    ch.put("task_results", {"_key": "t-new", "state": "done"})  # a generic table's row
    ch.remove("task_results", next(iter(s1["task_results"])))

    ch.next_batch()
    late = dict(s0["resumes"][resumes[4]], _key="resume-late", _id="resumes/resume-late")
    ch.put("resumes", late)
    ch.put(
        "documents",
        dict(research[0], _key="research-late", _id="documents/research-late", job_id=None),
    )
    # the removed job comes back: its dangling edge links again
    ch.put("jobs", s0["jobs"][job_key])
    # the rejected optimization is fixed
    ch.put("documents", dict(opts[3], content="fixed text"))
    # a resume PostgreSQL refuses (a user_id too large to index): a load reject
    ch.put("resumes", dict(s1["resumes"][resumes[6]], user_id=secrets.token_hex(20_000)))

    mapping = load_mapping(settings_for(followed, tmp_path).migrate.mapping)
    applier = Applier(mapping, "sync-test")
    counts: Counter = Counter()
    if mode != "one-connection":
        both = Committers(followed, 1, None, applier, split_rows=2)
        how = []
        try:
            for i, batch in enumerate(ch.batches):
                plan = applier.prepare(batch)

                def attempt(c, split_plan=None, plan=plan, dies=False):
                    applied = applier.execute(c, *(split_plan or (plan,))).counts
                    if dies:
                        raise Died
                    return applied

                if mode == "split-crash" and i == 0:
                    with pytest.raises(Died):
                        both.commit(functools.partial(attempt, dies=True), [plan])
                    # the second connection's half is committed, the rest of the batch is not
                    assert (
                        0
                        < scalar(
                            followed,
                            "select count(*) from resume_documents"
                            " where metadata -> 'etl' ->> 'run_id' = 'sync-test'",
                        )
                        < sum(1 for c in batch if c.collection == "resumes" and c.doc)
                    )
                    both.close()
                    both = Committers(followed, 1, None, applier, split_rows=2)
                applied, h = both.commit(attempt, [plan])
                if not (mode == "split-crash" and i == 0):
                    counts.update(applied)  # (the replay counts the half committed unchanged)
                how.append(h)
        finally:
            both.close()
        assert how == [committers.SPLIT, committers.SPLIT_FAILED]
    else:
        with psycopg.connect(followed) as conn:
            for batch in ch.batches:
                with conn.transaction():
                    counts.update(applier.apply(conn, batch).counts)
    if mode != "split-crash":
        assert counts[("task_results", "insert")] == 1
        assert counts[("task_results", "remove")] == 1
        assert counts[("resumes", "remove")] == 1  # the other removal was put back: superseded
        assert counts[("documents", "reject")] == 1
    assert counts[("resumes", "reject")] == 1

    migrate(fresh, write_jsonl(s1, tmp_path / "s1"), tmp_path)
    want, got = table_rows(fresh), table_rows(followed)
    for t in TABLES:
        assert set(got[t]) == set(want[t]), t
        differing = [rid for rid in want[t] if got[t][rid] != want[t][rid]]
        diffs = {
            rid: {
                k: (got[t][rid].get(k), want[t][rid].get(k))
                for k in set(got[t][rid]) | set(want[t][rid])
                if got[t][rid].get(k) != want[t][rid].get(k)
            }
            for rid in differing
        }
        assert not differing, (t, diffs)

    settings = settings_for(followed, tmp_path)
    summary = Reconciliation(settings, all_=True, source=f"jsonl:{tmp_path / 's1'}").run()
    assert not summary.has_differences, json.dumps(
        [c.__dict__.get("missing") for c in summary.collections], default=str
    )[:2000]


def test_edges_from_path_matches_handles_with_every_key_character(schema_db):
    """The removed jobs' edges are found through a jsonpath built from their handles: each
    character ArangoDB allows in a key (and JSON escapes) must match itself only."""
    from etl.sync.apply import edges_from_path

    odd = "jobs/a'b\"c\\d(e)+,=;$!*%:@.-_" + "é"
    edges = {"e1": {"_from": odd, "_to": "documents/r1"}, "e2": {"_from": "jobs/x"}}
    with psycopg.connect(schema_db) as conn:
        hit = conn.execute(
            "select %s::jsonb @? %s::jsonpath, %s::jsonb @? %s::jsonpath",
            (
                json.dumps({"edges": edges}),
                edges_from_path([odd, "jobs/none"]),
                json.dumps({"edges": edges}),
                edges_from_path(["jobs/a'b", "jobs/y"]),
            ),
        ).fetchone()
    assert hit == (True, False)


def test_late_parent_lookup_path_finds_exactly_what_reference_key_reads(schema_db):
    """links.waiting() asks the metadata GIN index first: its jsonpath must hold for every
    value reference_key() accepts (a string, an integer's decimal string)."""
    from etl.links import named_path

    assert named_path(["items", "0"], {"k"}) is None  # an array index: the scan, not the index
    cases = [  # (the value in metadata.extra.resume_id, keys, must match)
        ("k'x(y)+é", {"k'x(y)+é"}, True),
        (123, {"123"}, True),
        (-7, {"-7"}, True),
        ("123", {"123"}, True),
        ("other", {"k"}, False),
        (None, {"null"}, False),
    ]
    with psycopg.connect(schema_db) as conn:
        for value, keys, expected in cases:
            path = named_path(["resume_id"], keys)
            got = conn.execute(
                "select %s::jsonb @? %s::jsonpath",
                (json.dumps({"extra": {"resume_id": value}}), path),
            ).fetchone()[0]
            assert got is expected, (value, keys, path)
