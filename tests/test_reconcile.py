"""etl reconcile end to end on real PostgreSQL: a clean migration matches; every kind of damage
made directly in the database (and a source changed after the migration) is found and named
exactly (collection, key, field); --sample checks about P% of the keys; every run is recorded in
etl_runs and document_audit_log."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import psycopg
import pytest

from etl.migrate import Migration
from etl.reconcile import N_BUCKETS, NIL_UUID, Reconciliation, bucket_of, render_table
from etl.status import status
from etl.transform import row_id
from tests.datagen import generate, write_dump
from tests.helpers import settings_for

MAPPED = ("resumes", "jobs", "documents", "job_research")


def migrate(dsn, tmp_path, path):
    s = Migration(
        settings_for(dsn, tmp_path), source=f"dump:{path}", all_=True, retry_wait=lambda rs: 0
    ).run()
    assert s.state == "finished"
    return s


def reconcile(dsn, tmp_path, path, **kw):
    return Reconciliation(settings_for(dsn, tmp_path), source=f"dump:{path}", all_=True, **kw).run()


def q(dsn, sql, *args, tamper=False):
    """Run one statement; tamper=True writes as the ETL would (updated_at is then not bumped),
    so the damage is exactly the one the test makes."""
    with psycopg.connect(dsn) as conn:
        if tamper:
            conn.execute("select set_config('etl.run_id', 'test-tamper', true)")
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else None


def findings(summary) -> set[tuple]:
    """Every finding as (kind, collection, key, tuple of paths)."""
    out = set()
    for c in summary.collections:
        for kind in ("missing", "extra", "differing"):
            for it in getattr(c, kind):
                out.add((kind, c.collection, it.get("key"), tuple(it.get("paths", ()))))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 resumes with every bad case, and one number 1 in a resume's parsed_data."""
    ds = generate(60, seed=3, bad=True)
    docs = {c: [copy.deepcopy(d) for d in ds[c]] for c in ds}
    target = next(
        d
        for d in docs["resumes"]
        if isinstance(d.get("resume_data"), dict)
        and d["resume_data"].get("work_experience")
        and not d["_key"].startswith("bad-")
    )
    target["resume_data"]["work_experience"][0]["years"] = 1
    path = tmp_path_factory.mktemp("dump") / "atspro"
    write_dump(path, docs, gzip=True, types=ds.types)
    return docs, path, target["_key"], ds.types


def test_clean_migration_reconciles_equal(schema_db, tmp_path, dataset):
    docs, path, _, _ = dataset
    migrate(schema_db, tmp_path, path)
    summary = reconcile(schema_db, tmp_path, path)
    assert summary.state == "finished"
    assert not summary.has_differences, render_table(summary.asdict())
    by = {c.collection: c for c in summary.collections}
    for name in MAPPED:
        c = by[name]
        assert c.status == "match", name
        assert c.source_count == len(docs[name]) == c.checked
        assert c.balanced and c.checked == c.loaded + c.rejected + c.unmapped, name
    assert by["resumes"].rejected > 0  # the bad cases: rejected, not missing
    assert by["documents"].unmapped > 0  # types with no route
    assert by["documents"].dangling == {"resume_id": 1}  # bad-dangling_resume_id
    assert by["job_research"].rejected == 1  # the edge from an unknown collection
    assert by["task_results"].status == "match"  # the generic table arango.task_results
    assert by["task_results"].loaded == len(docs["task_results"])
    assert set(by["documents"].by_type) == {"optimization", "research"}
    # recorded: etl_runs (read by etl status) and one audit summary entry per collection and type
    latest = {r["collection"]: r for r in status(schema_db)["reconciles"]}
    assert latest["resumes"]["result"] == "match" and latest["resumes"]["differences"] == "0"
    audited = q(
        schema_db,
        "select document_type, changes from document_audit_log where action = 'reconcile'"
        " and run_id = %s and document_id = %s",
        summary.run_id,
        NIL_UUID,
    )
    assert len(audited) == 6  # the generic table's too, by its qualified name
    (generic,) = [c for t, c in audited if t == "arango.task_results"]
    assert generic["collection"] == "task_results" and generic["status"] == "match"
    assert generic["matched"] == len(docs["task_results"])
    report = json.loads((tmp_path / "reports" / f"{summary.run_id}.json").read_text())
    assert report["command"] == "reconcile" and report["has_differences"] is False


def test_every_kind_of_damage_is_found_and_named(schema_db, tmp_path, dataset):
    docs, path, one_key, _ = dataset
    migrate(schema_db, tmp_path, path)
    key = "metadata -> 'arango' ->> '_key'"

    # 1. one character changed in one nested string of parsed_data
    r1, company = q(
        schema_db,
        f"select {key}, parsed_data #>> '{{work_experience,0,company}}' from resume_documents"
        f" where parsed_data #> '{{work_experience,0,company}}' is not null and {key} <> %s"
        f" and {key} not like 'bad-%%' order by 1 limit 1",
        one_key,
    )[0]
    changed = ("X" if company[0] != "X" else "Y") + company[1:]
    q(
        schema_db,
        f"update resume_documents set parsed_data = jsonb_set(parsed_data, '{{work_experience,0,company}}',"
        f" to_jsonb(%s::text)) where {key} = %s",
        changed,
        r1,
        tamper=True,
    )
    # 2. a number changed from 1 to 1.0000001
    q(
        schema_db,
        f"update resume_documents set parsed_data = jsonb_set(parsed_data, '{{work_experience,0,years}}',"
        f" '1.0000001') where {key} = %s",
        one_key,
        tamper=True,
    )
    # 3. a key added to one parsed_data
    j1 = q(schema_db, f"select {key} from job_documents order by 1 limit 1")[0][0]
    q(
        schema_db,
        f"update job_documents set parsed_data = parsed_data || '{{\"added\": true}}' where {key} = %s",
        j1,
        tamper=True,
    )
    # 4. one row deleted (a resume nothing references, so nothing cascades)
    r_del = q(
        schema_db,
        f"select {key} from resume_documents r where {key} not in (%s, %s)"
        " and not exists (select 1 from optimization_results o where o.resume_id = r.id)"
        " and not exists (select 1 from research_results x where x.resume_id = r.id)"
        " order by 1 limit 1",
        r1,
        one_key,
    )[0][0]
    q(schema_db, f"delete from resume_documents where {key} = %s", r_del)
    # 5. extra rows: one whose metadata.arango names a key the source does not have, one with none
    q(
        schema_db,
        "insert into job_documents (user_id, metadata) values ('user_x',"
        ' \'{"source": "arangodb", "arango": {"collection": "jobs", "_key": "ghost-1"}}\')',
    )
    ghost_id = q(
        schema_db,
        "insert into resume_documents (user_id, filename) values ('user_y', 'x.pdf')"
        " returning id::text",
    )[0][0]
    # 6. a resume_id pointed at another resume
    o1, other = q(
        schema_db,
        f"select o.{key}, (select r.id from resume_documents r where r.id <> o.resume_id"
        " order by r.id limit 1) from optimization_results o where o.resume_id is not null"
        f" order by 1 limit 1",
    )[0]
    q(
        schema_db,
        f"update optimization_results set resume_id = %s where {key} = %s",
        other,
        o1,
        tamper=True,
    )
    # 7. a row's user_id changed, as the application would (so updated_at moves too)
    x1 = q(schema_db, f"select {key} from research_results order by 1 limit 1")[0][0]
    q(schema_db, f"update research_results set user_id = 'someone_else' where {key} = %s", x1)

    # 8. a rejected document whose copy in the reject store is gone: neither loaded nor kept
    q(
        schema_db,
        "delete from etl_rejects where collection = 'resumes' and key = 'bad-user_id_missing'",
    )

    summary = reconcile(schema_db, tmp_path, path)
    assert summary.has_differences
    assert findings(summary) == {
        ("missing", "resumes", "bad-user_id_missing", ()),
        ("differing", "resumes", r1, ("parsed_data.work_experience[0].company",)),
        ("differing", "resumes", one_key, ("parsed_data.work_experience[0].years",)),
        ("differing", "jobs", j1, ("parsed_data.added",)),
        ("missing", "resumes", r_del, ()),
        ("extra", "jobs", "ghost-1", ()),
        ("extra", "resumes", None, ()),
        ("differing", "documents", o1, ("resume_id",)),
        ("differing", "documents", x1, ("user_id", "updated_at")),
    }, render_table(summary.asdict())
    by = {c.collection: c for c in summary.collections}
    assert by["resumes"].status == by["jobs"].status == by["documents"].status == "differences"
    assert by["job_research"].status == "match"
    assert {it["id"] for it in by["resumes"].extra} == {ghost_id}
    diff = next(it for it in by["documents"].differing if it["key"] == o1)
    assert diff["fields"] == ["resume_id"] and diff["document_type"] == "optimization"
    # one extra row is one finding (extra), not also an unbalanced count (issue 25)
    assert by["jobs"].balanced and by["jobs"].loaded == by["jobs"].checked
    # one missing + one extra: the document that went nowhere unbalances the counts; the extra
    # row no longer hides it (it was counted in `loaded`)
    assert not by["resumes"].balanced
    # recorded: status shows the differences, the audit log has one entry per finding
    latest = {r["collection"]: r for r in status(schema_db)["reconciles"]}
    assert latest["resumes"]["result"] == "differences" and latest["resumes"]["differences"] == "5"
    rows = q(
        schema_db,
        "select document_type, document_id::text, changes from document_audit_log"
        " where action = 'reconcile' and run_id = %s and document_id <> %s",
        summary.run_id,
        NIL_UUID,
    )
    assert len(rows) == 9
    assert ("resume", ghost_id) in {(r[0], r[1]) for r in rows}
    for ext in ("md", "html"):
        text = (tmp_path / "reports" / f"{summary.run_id}.{ext}").read_text()
        assert "parsed_data.work_experience[0].company" in text and r_del in text, ext


def test_edge_damage_is_found(schema_db, tmp_path, dataset):
    _, path, _, _ = dataset
    migrate(schema_db, tmp_path, path)
    x, edge_key = q(
        schema_db,
        "select metadata -> 'arango' ->> '_key', (select min(k) from jsonb_object_keys(metadata -> 'edges') k)"
        " from research_results where metadata ? 'edges' order by 1 limit 1",
    )[0]
    q(
        schema_db,
        "update research_results set metadata = jsonb_set(metadata, array['edges', %s, 'relationship'],"
        " '\"other\"') where metadata -> 'arango' ->> '_key' = %s",
        edge_key,
        x,
        tamper=True,
    )
    # prefer a report that names no job of its own: its job_id is the one its edges set
    y, own = q(
        schema_db,
        "select metadata -> 'arango' ->> '_key',"
        " coalesce(metadata -> 'extra' -> 'job_id', 'null') <> 'null' from research_results"
        " where metadata ? 'edges' and metadata -> 'arango' ->> '_key' <> %s order by 2, 1 limit 1",
        x,
    )[0]
    q(
        schema_db,
        "update research_results set metadata = metadata - 'edges' where metadata -> 'arango' ->> '_key' = %s",
        y,
        tamper=True,
    )
    summary = reconcile(schema_db, tmp_path, path)
    by = {c.collection: c for c in summary.collections}
    assert [c.collection for c in summary.collections if c.status == "differences"] == [
        "job_research"
    ]
    edges = by["job_research"]
    assert [(d["key"], d["paths"]) for d in edges.differing] == [
        (edge_key, [f"metadata.edges.{edge_key}.relationship"])
    ]
    assert {(m["what"], m["id"]) for m in edges.missing} == {
        ("job_research edge", row_id("documents", y)),
    } | (set() if own else {("research_results.job_id set by the edge", row_id("documents", y))})


def test_source_changed_after_migration_is_reported(schema_db, tmp_path, dataset):
    docs, path, _, types = dataset
    migrate(schema_db, tmp_path, path)
    changed = copy.deepcopy(docs)
    job = changed["jobs"][3]
    job["job_title"] = job.get("job_title", "") + " (changed)"
    job["_rev"] = "_changed---"
    second = tmp_path / "d2"
    write_dump(second, changed, gzip=False, types=types)
    summary = reconcile(schema_db, tmp_path, second)
    assert findings(summary) == {
        ("differing", "jobs", job["_key"], ("title", "metadata.arango._rev"))
    }


def test_sample_checks_about_that_share_of_keys(schema_db, tmp_path):
    ds = generate(1300, seed=21)
    path = tmp_path / "big"
    write_dump(path, ds, gzip=False)
    migrate(schema_db, tmp_path, path)
    total = sum(ds.counts[c] for c in MAPPED)
    summary = reconcile(schema_db, tmp_path, path, sample=10, seed=7)
    assert not summary.has_differences
    checked = sum(c.checked for c in summary.collections if c.collection in MAPPED)
    assert total > 5000 and abs(checked / total - 0.10) < 0.02, (checked, total)
    assert summary.asdict()["sample"]["percent"] == 10
    assert "sample: 10" in render_table(summary.asdict())
    # damage inside the sampled key ranges is found, damage outside them is not looked at
    sampled = Reconciliation(settings_for(schema_db, tmp_path), sample=10, seed=7).sampled
    assert len(sampled) == round(N_BUCKETS / 10)
    keys = [d["_key"] for d in ds["jobs"]]
    inside = next(k for k in keys if bucket_of(row_id("jobs", k)) in sampled)
    outside = next(k for k in keys if bucket_of(row_id("jobs", k)) not in sampled)
    for k in (inside, outside):
        q(
            schema_db,
            "update job_documents set title = 'tampered' where metadata -> 'arango' ->> '_key' = %s",
            k,
            tamper=True,
        )
    summary = reconcile(schema_db, tmp_path, path, sample=10, seed=7)
    assert findings(summary) == {("differing", "jobs", inside, ("title",))}
    full = reconcile(schema_db, tmp_path, path)
    assert findings(full) == {
        ("differing", "jobs", inside, ("title",)),
        ("differing", "jobs", outside, ("title",)),
    }


def dump_with_a_later_parent(tmp_path) -> tuple[Path, dict, dict]:
    """A dump where an optimization's parent comes later in the stream (batches of 3 put them
    in different batches): (dump path, child, parent)."""
    ds = generate(10, seed=3)
    docs = {c: [copy.deepcopy(d) for d in ds[c]] for c in ds}
    opts = [d for d in docs["documents"] if d["type"] == "optimization"]
    child, parent = opts[0], opts[-1]
    child.update(
        parent_optimization_id=parent["_key"],
        user_id=parent["user_id"],
        resume_id=parent["resume_id"],
    )
    path = tmp_path / "d"
    write_dump(path, docs, gzip=False, types=ds.types)
    return path, child, parent


def test_parent_reference_to_a_later_document(schema_db, tmp_path):
    """An optimization whose parent comes later in the source (another batch): the parent id is
    set by the first run, and reconcile agrees."""
    path, child, parent = dump_with_a_later_parent(tmp_path)
    for _ in range(2):
        Migration(
            settings_for(schema_db, tmp_path),
            source=f"dump:{path}",
            all_=True,
            batch_size=3,
            retry_wait=lambda rs: 0,
        ).run()
        stored = q(
            schema_db,
            "select parent_optimization_id::text from optimization_results"
            " where metadata -> 'arango' ->> '_key' = %s",
            child["_key"],
        )[0][0]
        # the first run already links it: migrate re-links forward references when the
        # collection ends, and a second run changes nothing
        assert stored == row_id("documents", parent["_key"])
        assert findings(reconcile(schema_db, tmp_path, path)) == set()


def test_a_parent_collection_copied_after_its_children_links_them(schema_db, tmp_path):
    """`etl migrate --collection documents` before resumes and jobs: every reference to them
    loads NULL (dangling). Copying resumes and jobs afterwards links those rows as a fresh
    migrate of everything would have (etl/links.py), so reconcile is green."""
    ds = generate(10, seed=3)
    path = tmp_path / "d"
    write_dump(path, ds, gzip=False, types=ds.types)

    def run(collection: str):
        s = Migration(
            settings_for(schema_db, tmp_path),
            source=f"dump:{path}",
            collections=[collection],
            retry_wait=lambda rs: 0,
        ).run()
        assert s.state == "finished"
        return s

    first = run("documents")
    assert sum(c.counts.dangling for c in first.collections) > 0
    no_resume = "select count(*) from optimization_results where resume_id is null"
    assert q(schema_db, no_resume)[0][0] > 0
    for collection in ("resumes", "jobs", "job_research"):
        run(collection)
    assert q(schema_db, no_resume)[0][0] == 0
    mapped = Reconciliation(
        settings_for(schema_db, tmp_path), source=f"dump:{path}", collections=list(MAPPED)
    ).run()
    assert findings(mapped) == set()


def test_cli_exit_status_and_findings(schema_db, tmp_path, dataset):
    import os
    import subprocess
    import sys

    _, path, _, _ = dataset
    migrate(schema_db, tmp_path, path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    env.update({"ETL_PG_DSN": schema_db, "ETL_REPORTS_DIR": str(tmp_path / "reports")})
    cmd = [sys.executable, "-m", "etl", "reconcile", "--all", "--source", f"dump:{path}"]
    repo = Path(__file__).resolve().parent.parent
    ok = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "everything matches" in ok.stdout
    key = q(
        schema_db, "select metadata -> 'arango' ->> '_key' from job_documents order by 1 limit 1"
    )[0][0]
    q(
        schema_db,
        "update job_documents set company = company || '!' where metadata -> 'arango' ->> '_key' = %s",
        key,
        tamper=True,
    )
    bad = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"differing jobs/{key}" in bad.stdout and ": company" in bad.stdout


def test_every_value_shape_round_trips_through_the_loader(schema_db, tmp_path):
    """The canonical text matches what the loader really stored, for every shape of
    tests/test_canonical.py, in parsed_data, in metadata.extra and in the typed columns."""
    from tests.test_canonical import VALUES

    ds = generate(12, seed=8)
    docs = {c: [copy.deepcopy(d) for d in ds[c]] for c in ds}
    for i, v in enumerate(VALUES):
        docs["jobs"][i % len(docs["jobs"])][f"odd_{i}"] = v  # -> metadata.extra
        docs["jobs"][(i + 3) % len(docs["jobs"])].setdefault("parsed_data", {})[f"odd_{i}"] = v
    docs["jobs"][0].update(
        job_title='tab\\t \\\\ \t\n\r\x01 "q" \u2028 é 😀',
        company="\x7f\x1f" + "x" * 300,
        location="",
    )
    opts = [d for d in docs["documents"] if d["type"] == "optimization"]
    for d, (a, k) in zip(
        opts, [(33.333333333333336, 1e-7), (100.0, 0), (0.1, 99.99999999999999), (-0.0, 2.5)]
    ):
        d.pop("atsScore", None), d.pop("keywordScore", None)
        d.update(ats_score=a, keyword_match_score=k)
    path = tmp_path / "odd"
    write_dump(path, docs, gzip=False, types=ds.types)
    migrate(schema_db, tmp_path, path)
    summary = reconcile(schema_db, tmp_path, path)
    assert not summary.has_differences, render_table(summary.asdict())
    by = {c.collection: c for c in summary.collections}
    assert by["jobs"].loaded == len(docs["jobs"]) and by["documents"].rejected == 0
