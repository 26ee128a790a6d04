"""etl reconcile with workers: pass 1 of a collection runs in forked processes, one key range
each (boundaries from the ArangoDB test server's own key order, ICU-like and bytewise), and the
result is exactly what one process gives, on a clean and on a damaged target; a dump source
falls back to one range per collection; a worker's error reaches the caller as the same one-line
error, and a worker that dies fails the run instead of hanging it."""

from __future__ import annotations

import copy
import json
import logging
import os
import time

import pytest

from etl.errors import EtlError, PermanentError
from etl.migrate import Migration
from etl.reconcile import RANGE_MIN_DOCS, Reconciliation, render_table
from etl.transform import Transformer
from tests.datagen import generate, write_dump
from tests.fakearango.fixtures import DATABASE, seed
from tests.helpers import arango_settings_for, settings_for
from tests.test_reconcile import MAPPED, findings, q

# resumes whose keys sort differently in ICU-like and bytewise order (case, digits, punctuation)
ODD_KEYS = [f"{p}{i}" for i in range(40) for p in ("a", "B", "c-", "Z_", "9")]


def dataset() -> tuple[dict[str, list[dict]], dict[str, str]]:
    """About 2,900 documents with every bad case, 200 resumes with mixed-order keys and four
    optimizations whose parent is another optimization (earlier and later in key order)."""
    ds = generate(600, seed=11, bad=True)
    docs = {c: [copy.deepcopy(d) for d in ds[c]] for c in ds}
    base = [d for d in docs["resumes"] if not d["_key"].startswith("bad-")]
    for i, k in enumerate(ODD_KEYS):
        d = copy.deepcopy(base[i])
        d.update(_key=k, _id=f"resumes/{k}")
        docs["resumes"].append(d)
    opts = [
        d
        for d in docs["documents"]
        if d["type"] == "optimization" and not d["_key"].startswith("bad-")
    ]
    for child, parent in (
        (opts[5], opts[-3]),
        (opts[-2], opts[1]),
        (opts[300], opts[301]),
        (opts[302], opts[10]),
    ):
        child.update(
            parent_optimization_id=parent["_key"],
            user_id=parent["user_id"],
            resume_id=parent["resume_id"],
        )
    opts[303].update(
        user_id=opts[10]["user_id"], resume_id=opts[10]["resume_id"]
    )  # another possible parent
    return docs, dict(ds.types)


def comparable(summary) -> str:
    """Everything a summary says except timings and run ids, in its order."""
    d = summary.asdict()
    for c in d["collections"]:
        c.pop("seconds")
    return json.dumps(
        {k: d[k] for k in ("state", "source", "has_differences", "collections")}, indent=1
    )


def reconcile(settings, source, workers, **kw):
    progress: dict[str, int] = {}

    def on_progress(c, n, total):
        progress[c] = max(progress.get(c, 0), n)

    summary = Reconciliation(
        settings,
        all_=True,
        source=source,
        workers=workers,
        batch_size=100,
        on_progress=on_progress,
        **kw,
    ).run()
    return summary, progress


def tamper(dsn) -> set[tuple]:
    """The damage tests/test_reconcile.py makes (a changed character, a deleted row, extra rows,
    wrong references, a lost reject); returns the findings reconcile must report."""
    key = "metadata -> 'arango' ->> '_key'"
    r1, company = q(
        dsn,
        f"select {key}, parsed_data #>> '{{work_experience,0,company}}' from resume_documents"
        f" where parsed_data #> '{{work_experience,0,company}}' is not null"
        f" and {key} not like 'bad-%%' order by 1 desc limit 1",
    )[0]
    changed = ("X" if company[0] != "X" else "Y") + company[1:]
    q(
        dsn,
        f"update resume_documents set parsed_data = jsonb_set(parsed_data, '{{work_experience,0,company}}',"
        f" to_jsonb(%s::text)) where {key} = %s",
        changed,
        r1,
        tamper=True,
    )
    r_del = q(
        dsn,
        f"select {key} from resume_documents r where {key} <> %s and {key} like 'B%%'"
        " and not exists (select 1 from optimization_results o where o.resume_id = r.id)"
        " and not exists (select 1 from research_results x where x.resume_id = r.id)"
        " order by 1 limit 1",
        r1,
    )[0][0]
    q(dsn, f"delete from resume_documents where {key} = %s", r_del)
    q(
        dsn,
        "insert into job_documents (user_id, metadata) values ('user_x',"
        ' \'{"source": "arangodb", "arango": {"collection": "jobs", "_key": "ghost-1"}}\')',
    )
    q(dsn, "insert into resume_documents (user_id, filename) values ('user_y', 'x.pdf')")
    o1, other = q(
        dsn,
        f"select o.{key}, (select r.id from resume_documents r where r.id <> o.resume_id"
        " order by r.id limit 1) from optimization_results o where o.resume_id is not null"
        " and o.parent_optimization_id is null order by 1 limit 1",
    )[0]
    q(
        dsn,
        f"update optimization_results set resume_id = %s where {key} = %s",
        other,
        o1,
        tamper=True,
    )
    child, parent = q(
        dsn,
        f"select c.{key}, x.id from optimization_results c join optimization_results x"
        " on x.user_id = c.user_id and x.id <> c.id and x.id <> c.parent_optimization_id"
        " where c.parent_optimization_id is not null order by 1, 2 limit 1",
    )[0]
    q(
        dsn,
        f"update optimization_results set parent_optimization_id = %s where {key} = %s",
        parent,
        child,
        tamper=True,
    )
    q(dsn, "delete from etl_rejects where collection = 'resumes' and key = 'bad-user_id_missing'")
    return {
        ("differing", "resumes", r1, ("parsed_data.work_experience[0].company",)),
        ("missing", "resumes", r_del, ()),
        ("missing", "resumes", "bad-user_id_missing", ()),
        ("extra", "jobs", "ghost-1", ()),
        ("extra", "resumes", None, ()),
        ("differing", "documents", o1, ("resume_id",)),
        ("differing", "documents", child, ("parent_optimization_id",)),
    }


def check_clean(summary, docs) -> None:
    assert summary.state == "finished"
    assert not summary.has_differences, render_table(summary.asdict())
    by = {c.collection: c for c in summary.collections}
    for name in MAPPED:
        c = by[name]
        assert c.status == "match" and c.source_count == c.checked == len(docs[name]), name
        assert c.checked == c.loaded + c.rejected + c.unmapped, name
    assert by["resumes"].loaded == len(docs["resumes"]) - by["resumes"].rejected
    assert (
        by["resumes"].rejected == 5 == sum(by["resumes"].reject_reasons.values())
    )  # the bad cases
    assert {"missing_user_id", "bad_user_id", "nul_in_string", "lone_surrogate"} < set(
        by["resumes"].reject_reasons
    )
    assert by["documents"].dangling == {"resume_id": 1}  # bad-dangling_resume_id
    assert by["documents"].unmapped > 0 and by["job_research"].rejected == 1
    assert by["task_results"].status == "match"  # the generic table arango.task_results
    assert by["task_results"].loaded == len(docs["task_results"])


@pytest.mark.parametrize("server_fixture", ["arango_server", "arango_server_bytewise"])
def test_workers_give_the_same_result_as_one_process(
    request, server_fixture, schema_db, tmp_path, caplog
):
    server = request.getfixturevalue(server_fixture)
    docs, types = dataset()
    for name, items in docs.items():
        seed(server, DATABASE, name, items, edge=types[name] == "edge")
    settings = arango_settings_for(server, schema_db, tmp_path)
    migrated = Migration(settings, all_=True, retry_wait=lambda rs: 0).run()
    assert migrated.state == "finished"
    assert (
        q(
            schema_db,
            "select count(*) from optimization_results where parent_optimization_id is not null",
        )[0][0]
        == 4
    )

    one, p1 = reconcile(settings, "arangodb", 1)
    check_clean(one, docs)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="etl.reconcile"):
        three, p3 = reconcile(settings, "arangodb", 3)
    # the collections really were split: 3 workers, up to 6 ranges of >= RANGE_MIN_DOCS documents
    split = {r.args[0]: r.args[1] for r in caplog.records if "key ranges" in r.getMessage()}
    assert split == {
        n: min(6, len(docs[n]) // RANGE_MIN_DOCS) for n in ("resumes", "jobs", "documents")
    }
    assert split["resumes"] == 3 and split["documents"] == 3
    check_clean(three, docs)
    assert comparable(three) == comparable(one)
    # progress: every document read is reported, per collection
    assert (
        p3 == p1
        and p3["resumes"] == len(docs["resumes"])
        and p3["documents"] == len(docs["documents"])
    )

    expected = tamper(schema_db)
    one, _ = reconcile(settings, "arangodb", 1)
    assert findings(one) == expected, render_table(one.asdict())
    three, _ = reconcile(settings, "arangodb", 3)
    assert findings(three) == expected, render_table(three.asdict())
    assert comparable(three) == comparable(one)
    by = {c.collection: c for c in three.collections}
    assert [c.collection for c in three.collections if c.status == "differences"] == [
        "resumes",
        "jobs",
        "documents",
    ]
    assert (
        len(by["resumes"].missing) == 2
        and len(by["resumes"].extra) == 1
        and len(by["resumes"].differing) == 1
    )
    assert (
        by["resumes"].by_type["resume"].missing == 1
    )  # the other one is a reject lost from etl_rejects
    assert by["documents"].by_type["optimization"].differing == 2
    assert by["documents"].dangling == {"resume_id": 1}
    # the extra row is one finding, not also an unbalanced count (issue 25)
    assert by["jobs"].balanced and by["jobs"].loaded == len(docs["jobs"])

    # one collection alone: the ids of the collections it references are read in key ranges too
    d1 = Reconciliation(settings, collections=["documents"], workers=1).run()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="etl.reconcile"):
        d3 = Reconciliation(settings, collections=["documents"], workers=3, batch_size=100).run()
    assert {r.args[0] for r in caplog.records if "key ranges" in r.getMessage()} == {
        "resumes",
        "jobs",
        "documents",
    }
    assert comparable(d3) == comparable(d1)
    assert findings(d3) == {f for f in expected if f[1] == "documents"} and len(findings(d3)) == 2

    # sampling splits the same way
    s1, _ = reconcile(settings, "arangodb", 1, sample=30, seed=5)
    s3, _ = reconcile(settings, "arangodb", 3, sample=30, seed=5)
    assert comparable(s3) == comparable(s1)
    assert findings(s3) == {f for f in expected if f in findings(s3)} and 0 < sum(
        c.checked for c in s3.collections if c.collection in MAPPED
    ) < sum(len(docs[n]) for n in MAPPED)


def test_a_dump_source_falls_back_to_one_range(schema_db, tmp_path, caplog):
    docs, types = dataset()
    path = tmp_path / "dump"
    write_dump(path, docs, gzip=False, types=types)
    settings = settings_for(schema_db, tmp_path)
    assert (
        Migration(settings, source=f"dump:{path}", all_=True, retry_wait=lambda rs: 0).run().state
        == "finished"
    )
    one, _ = reconcile(settings, f"dump:{path}", 1)
    check_clean(one, docs)
    with caplog.at_level(logging.INFO, logger="etl.reconcile"):
        three, p3 = reconcile(settings, f"dump:{path}", 3)
    # a file source's split_points() is []: one range, read here, and said once
    said = [
        r.getMessage() for r in caplog.records if "cannot be read in key ranges" in r.getMessage()
    ]
    assert len(said) == 1 and said[0].startswith("--workers 3: the source")
    assert not any("worker processes" in r.getMessage() for r in caplog.records)
    assert comparable(three) == comparable(one)
    assert p3["documents"] == len(docs["documents"])
    expected = tamper(schema_db)
    one, _ = reconcile(settings, f"dump:{path}", 1)
    three, _ = reconcile(settings, f"dump:{path}", 3)
    assert findings(one) == findings(three) == expected
    assert comparable(three) == comparable(one)


@pytest.fixture
def small_target(arango_server, schema_db, tmp_path):
    ds = generate(520, seed=4)  # 520 jobs: two key ranges
    for name in ds:
        seed(arango_server, DATABASE, name, ds[name], edge=ds.types[name] == "edge")
    settings = arango_settings_for(arango_server, schema_db, tmp_path)
    assert Migration(settings, all_=True, retry_wait=lambda rs: 0).run().state == "finished"
    return settings, [d["_key"] for d in ds["jobs"]]


def _fail_on(monkeypatch, key, action):
    """Transformer.transform runs `action` for one document; forked workers inherit the patch."""
    real = Transformer.transform
    parent = os.getpid()

    def transform(self, collection, doc):
        if collection == "jobs" and doc.get("_key") == key and os.getpid() != parent:
            action()
        return real(self, collection, doc)

    monkeypatch.setattr(Transformer, "transform", transform)


def test_a_worker_error_is_the_same_one_line_error(small_target, monkeypatch, schema_db):
    settings, keys = small_target
    for bad in (0, -2):
        with pytest.raises(PermanentError, match=f"--workers {bad}: expected a whole number >= 1"):
            Reconciliation(settings, all_=True, workers=bad)
    msg = "jobs: a permanent problem (hint text)"

    def boom():
        raise PermanentError("jobs: a permanent problem", hint="hint text")

    _fail_on(monkeypatch, keys[-1], boom)
    t0 = time.monotonic()
    with pytest.raises(PermanentError) as err:
        reconcile(settings, "arangodb", 2)
    assert str(err.value) == msg and "\n" not in str(err.value)
    assert time.monotonic() - t0 < 60
    run = q(
        schema_db,
        "select state, error from etl_runs where command = 'reconcile' order by started_at desc limit 1",
    )
    assert run == [("failed", msg)]


def test_a_worker_that_dies_fails_the_run(small_target, monkeypatch, schema_db):
    settings, keys = small_target
    _fail_on(monkeypatch, keys[0], lambda: os._exit(9))
    t0 = time.monotonic()
    with pytest.raises(EtlError) as err:
        reconcile(settings, "arangodb", 2)
    assert "worker process ended unexpectedly" in str(err.value) and "'jobs'" in str(err.value)
    assert time.monotonic() - t0 < 60
    assert q(
        schema_db,
        "select state from etl_runs where command = 'reconcile' order by started_at desc limit 1",
    ) == [("failed",)]
