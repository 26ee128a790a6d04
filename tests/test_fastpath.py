"""The empty-table fast path (etl/fastpath.py) gives exactly what the merge path gives: the same
rows, counts, rejects and audit rows; a re-run, a resume and a non-empty table go through the
merge; a row the database refuses is one reject and its batch still loads; a crash in the
middle of a fast load resumes to the right rows."""

from __future__ import annotations

import copy
from datetime import datetime

import psycopg
import pytest

from etl import fastpath
from etl.fastpath import FastPath
from etl.load import Loader
from etl.mapping import load_mapping
from etl.target import DOCUMENT_TYPES
from etl.transform import Row, Transformer, row_id
from tests.datagen import generate, write_dump, write_jsonl
from tests.helpers import REPO, db_rows, etl, etl_popen, kill_after_batches, pg_env, run, scalar
from tests.test_counts import resumes_with_one_postgresql_refuses


@pytest.fixture
def spy(monkeypatch):
    """Counts the batches the fast path loaded by COPY and those it sent to the merge."""
    calls = {"copied": 0, "merged": 0}
    real_copy, real_load = FastPath._copy, Loader.load

    def counting_copy(self, *a, **kw):
        out = real_copy(self, *a, **kw)
        calls["copied"] += 1
        return out

    def counting_load(self, document_type, *a, **kw):
        if document_type in DOCUMENT_TYPES:  # a generic table always has its own merge
            calls["merged"] += 1
        return real_load(self, document_type, *a, **kw)

    monkeypatch.setattr(FastPath, "_copy", counting_copy)
    monkeypatch.setattr(Loader, "load", counting_load)
    return calls


def with_parents(ds) -> tuple[dict[str, list[dict]], str]:
    """The data set plus optimizations whose parent is earlier in the stream, later in the
    stream (another batch), in the same batch, and nowhere; and the earlier parent's key."""
    docs = {c: list(ds[c]) for c in ds}
    first = next(d for d in docs["documents"] if d.get("type") == "optimization")
    base = {k: v for k, v in first.items() if k not in ("_key", "_id", "_rev")}

    def opt(key, **kw):
        return {**base, "_key": key, "_id": f"documents/{key}", **kw}

    docs["documents"] += [
        opt("child-0", parent_id=first["_key"]),
        opt("child-1", parent_id="zz-later-parent"),
        opt("p-same-batch"),
        opt("child-2", parent_id="p-same-batch"),
        opt("child-3", parent_id="no-such-parent"),
    ]
    docs["documents"] += [
        {**d, "_key": f"filler-{i}", "_id": f"documents/filler-{i}"}
        for i, d in enumerate(docs["documents"][:60])
        if d.get("type") in ("optimization", "research")
    ]
    docs["documents"].append(opt("zz-later-parent"))
    return docs, first["_key"]


def comparable(row: dict) -> dict:
    """A row without what differs between two runs by design (run id, migration time)."""
    row = copy.deepcopy(row)
    row["metadata"].pop("etl", None)
    return row


def audit(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select document_type, document_id::text, user_id, action, changes"
            " from document_audit_log order by 1, 2, 4, changes::text"
        ).fetchall()


def rejects(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select collection, key, reason, stage from etl_rejects order by 1, 2"
        ).fetchall()


def counts(summary) -> list[tuple]:
    return [
        (c.collection, c.counts.asdict(), {t: v.asdict() for t, v in c.by_type.items()})
        for c in summary.collections
    ]


def started(dsn) -> datetime:
    return scalar(dsn, "select min(started_at) from etl_runs where command = 'migrate'")


def test_fast_path_gives_exactly_the_rows_counts_rejects_and_audit_of_the_merge(
    make_db, tmp_path, monkeypatch, spy
):
    docs, first_parent = with_parents(generate(60, seed=3, bad=True))
    path = write_jsonl(tmp_path / "src", docs)
    fast_db, merge_db = make_db(schema=True), make_db(schema=True)

    fast = run(fast_db, tmp_path, f"jsonl:{path}", all_=True, batch_size=25)
    assert spy["copied"] >= 8 and spy["merged"] == 0  # every batch by COPY, none merged
    monkeypatch.setenv("ETL_PERF_OFF", "fastpath")
    spy["copied"] = 0
    merged = run(merge_db, tmp_path, f"jsonl:{path}", all_=True, batch_size=25)
    assert spy["copied"] == 0 and spy["merged"] >= 8

    assert counts(fast) == counts(merged)
    assert all(c.asdict()["balanced"] for c in fast.collections)
    assert sum(c.counts.dangling for c in fast.collections) >= 2  # a resume, a parent
    assert rejects(fast_db) == rejects(merge_db)
    assert audit(fast_db) == audit(merge_db)
    fast_rows, merge_rows = db_rows(fast_db), db_rows(merge_db)
    assert set(fast_rows) == set(merge_rows)
    now_defaults = 0
    for key, row in fast_rows.items():
        row, other = comparable(row), comparable(merge_rows[key])
        for col in ("created_at", "updated_at"):
            # a source without the timestamp gets the table default now(): each run's own
            if row[col] != other[col]:
                assert datetime.fromisoformat(row[col]) >= started(fast_db), key
                assert datetime.fromisoformat(other[col]) >= started(merge_db), key
                row[col] = other[col]
                now_defaults += 1
        assert row == other, key
    assert now_defaults > 0  # the defaults were really exercised
    parents = {k: fast_rows[f"documents/child-{k}"]["parent_optimization_id"] for k in range(4)}
    assert parents == {
        0: row_id("documents", first_parent),  # earlier in the stream
        1: row_id("documents", "zz-later-parent"),  # later: linked when the collection ended
        2: row_id("documents", "p-same-batch"),  # in the same batch
        3: None,  # nowhere: dangling
    }


def test_a_re_run_goes_through_the_merge_and_leaves_everything_unchanged(schema_db, tmp_path, spy):
    ds = generate(40, seed=4)
    path = write_dump(tmp_path / "dump", ds, gzip=False)
    first = run(schema_db, tmp_path, f"dump:{path}", all_=True, batch_size=30)
    assert spy["copied"] > 0 and spy["merged"] == 0
    audit_before = audit(schema_db)
    rows_before = db_rows(schema_db)
    spy.update(copied=0, merged=0)
    again = run(schema_db, tmp_path, f"dump:{path}", all_=True, batch_size=30)
    assert spy["copied"] == 0 and spy["merged"] > 0  # the tables were not empty: merge path
    for c0, c1 in zip(first.collections, again.collections, strict=True):
        assert c1.counts.read == c0.counts.read
        assert c1.counts.inserted == c1.counts.updated == 0, c1.collection
        assert c1.counts.unchanged == c0.counts.inserted + c0.counts.updated, c1.collection
        assert c1.asdict()["balanced"]
    assert audit(schema_db) == audit_before
    assert db_rows(schema_db) == rows_before  # metadata.etl too: nothing was rewritten


def test_a_row_postgresql_refuses_is_one_reject_and_the_rest_of_its_batch_loads(
    schema_db, tmp_path, spy
):
    data, bad_key = resumes_with_one_postgresql_refuses(9)
    path = write_jsonl(tmp_path / "export", data)
    summary = run(
        schema_db, tmp_path, f"jsonl:{path}", all_=True, batch_size=100, allow_missing=True
    )
    (c,) = [c for c in summary.collections if c.collection == "resumes"]
    assert (c.counts.read, c.counts.inserted, c.counts.rejected) == (10, 9, 1)
    assert c.asdict()["balanced"]
    assert spy["merged"] >= 1  # the refused COPY sent its batch to the merge, which bisected
    assert rejects(schema_db) == [
        ("resumes", bad_key, rejects(schema_db)[0][2], "load"),
    ]
    assert "index row requires" in rejects(schema_db)[0][2]
    assert scalar(schema_db, "select count(*) from resume_documents") == 9


def test_rows_already_there_make_the_fast_path_merge_its_batch(schema_db):
    """A batch committed before a crash the client did not see, or a concurrent writer: the
    COPY meets the primary key, and the merge path counts the rows as they are."""
    mapping = load_mapping(REPO / "configs" / "atspro.toml")
    t = Transformer(mapping, "run-1", "2026-01-01T00:00:00+00:00")
    rows = [t.transform("resumes", d) for d in generate(6, seed=8)["resumes"]]
    assert all(isinstance(r, Row) for r in rows)
    dup = Row("resume", rows[1].key, dict(rows[1].values))  # the same id twice in one batch
    fast = FastPath({"resume"})
    with psycopg.connect(schema_db) as conn:
        conn.execute("select set_config('etl.run_id', 'run-1', true)")
        first = fast.load(Loader(conn, "run-1"), "resume", rows[:3] + [dup])
        assert (first.inserted, first.unchanged, fast.fallbacks) == (3, 1, 0)
        second = fast.load(Loader(conn, "run-1"), "resume", rows)
        assert (second.inserted, second.updated, second.unchanged) == (3, 0, 3)
        assert fast.fallbacks == 1
        assert conn.execute("select count(*) from resume_documents").fetchone()[0] == 6


def test_a_run_killed_in_the_fast_path_resumes_through_the_merge_to_exact_rows(schema_db, tmp_path):
    ds = generate(300, seed=11)
    path = write_dump(tmp_path / "dump", ds, gzip=True)
    env = pg_env(schema_db, tmp_path)
    cmd = ["-v", "migrate", "--all", "--source", f"dump:{path}"]
    proc = etl_popen(*cmd, "--batch", "20", env=env, text=False)
    kill_after_batches(proc, schema_db, 5)
    assert "loaded by COPY without the merge" in proc.stderr.read().decode()
    loaded_at_kill = scalar(schema_db, "select count(*) from resume_documents")
    assert 0 < loaded_at_kill < ds.counts["resumes"]
    done = etl(*cmd, "--resume", env=env, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    assert "loaded by COPY without the merge" not in done.stderr  # a resume merges
    for name, table in (("resumes", "resume_documents"), ("jobs", "job_documents")):
        assert scalar(schema_db, f"select count(*) from {table}") == ds.counts[name]
        assert (
            scalar(schema_db, "select read from etl_checkpoints where collection = %s", name)
            == ds.counts[name]
        )
    stored = db_rows(schema_db)
    assert {f"resumes/{d['_key']}" for d in ds["resumes"]} <= set(stored)
    # every row inserted once: one audit insert per row, none twice
    inserts = "from document_audit_log where changes->>'op' = 'insert'"
    assert scalar(schema_db, f"select count(*) {inserts}") == len(stored)
    assert scalar(schema_db, f"select count(distinct (document_type, document_id)) {inserts}") == (
        len(stored)
    )
    assert scalar(schema_db, "select count(*) from etl_deferred_indexes") == 0


def test_lever_names_in_etl_perf_off(monkeypatch):
    monkeypatch.setenv("ETL_PERF_OFF", "binary, fastpath")
    assert not fastpath.lever_on("fastpath") and not fastpath.lever_on("binary")
    assert fastpath.lever_on("lz4")
    monkeypatch.delenv("ETL_PERF_OFF")
    assert fastpath.lever_on("fastpath")


@pytest.mark.parametrize("off", ["", "lz4"])
def test_rows_are_toasted_with_lz4_where_the_server_has_it(schema_db, tmp_path, monkeypatch, off):
    monkeypatch.setenv("ETL_PERF_OFF", off)
    path = write_dump(tmp_path / "dump", generate(30, seed=6), gzip=False)
    run(schema_db, tmp_path, f"dump:{path}", all_=True)
    with psycopg.connect(schema_db) as conn:
        have_lz4 = fastpath.lz4_available(conn)
        methods = {
            m
            for (m,) in conn.execute(
                "select pg_column_compression(metadata) from resume_documents"
                " union select pg_column_compression(parsed_data) from resume_documents"
            )
            if m is not None  # values under about 2 kB are not compressed at all
        }
        assert conn.execute("show default_toast_compression").fetchone()[0] == "pglz"
    assert methods == ({"lz4"} if have_lz4 and not off else {"pglz"})
