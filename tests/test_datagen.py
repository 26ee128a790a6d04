"""tests/datagen.py: deterministic, realistic shapes, every bad case, faithful writers."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import statistics
import subprocess
import sys

import pytest

from tests import datagen
from tests.datagen import ALLOWED_KEY_SPECIALS, bad_cases, encode, generate, write_dump, write_jsonl
from tests.helpers import REPO

KEY_RE = re.compile(r"^[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$")
BAD_CASE_NAMES = {
    "user_id_missing",
    "user_id_empty",
    "user_id_number",
    "nul_in_string",
    "lone_surrogate",
    "file_size_1e20",
    "score_250",
    "int_beyond_2_53",
    "int_beyond_2_63",
    "negative_zero",
    "float_1e308",
    "ts_with_zone",
    "ts_no_zone",
    "ts_epoch_ms",
    "ts_year_only",
    "ts_garbage",
    "filename_over_255",
    "list_field_holds_object",
    "multi_mb_document",
    "nested_200_levels",
    "key_all_allowed_chars",
    "type_routes_nowhere",
    "edge_from_unknown_collection",
    "dangling_resume_id",
}


@pytest.fixture(scope="module")
def data():
    ds = generate(600, seed=0)
    return ds, {c: list(ds[c]) for c in ds}


def test_deterministic_from_seed():
    a, b, c = generate(60, seed=3), generate(60, seed=3), generate(60, seed=4)
    for coll in a:
        ea = [encode(d) for d in a[coll]]
        assert ea == [encode(d) for d in b[coll]]
        assert ea == [encode(d) for d in a[coll]]  # re-iterable
        assert ea != [encode(d) for d in c[coll]]


def test_counts_keys_ids_revs(data):
    ds, docs = data
    assert {c: len(v) for c, v in docs.items()} == ds.counts
    assert ds.counts == {
        "resumes": 600,
        "jobs": 600,
        "documents": 912,
        "job_research": 300,
        "task_results": 300,
    }
    for coll, items in docs.items():
        ks = [d["_key"] for d in items]
        assert len(ks) == len(set(ks)), coll
        assert all(KEY_RE.match(k) for k in ks)
        assert any(k.isdigit() for k in ks) and any(
            not k.isdigit() for k in ks
        )  # numeric + special chars
        assert all(d["_id"] == f"{coll}/{d['_key']}" for d in items)
        assert all(
            isinstance(d["_rev"], str) and re.match(r"^_[A-Za-z0-9_-]{10}$", d["_rev"])
            for d in items
        )


def test_resume_shapes_and_sizes(data):
    _ds, docs = data
    resumes = docs["resumes"]
    current = [r for r in resumes if "resume_data" in r]
    assert len(current) > len(resumes) * 0.7
    for r in current:
        assert set(r["file_metadata"]) == {"filename", "content_type", "size", "processed_at"}
        rd = r["resume_data"]
        assert set(rd) == {
            "contact_info",
            "summary",
            "work_experience",
            "education",
            "certifications",
            "skills",
        }
        assert set(rd["contact_info"]) == {"full_name", "email", "phone", "address", "links"}
        for w in rd["work_experience"]:
            assert set(w) == {
                "company",
                "position",
                "start_date",
                "end_date",
                "is_current",
                "description",
                "responsibilities",
                "skills",
            }
        assert r["status"] and r["task_id"] and r["user_id"].startswith("user_")
    assert any("parsed_data" in r and "filename" in r for r in resumes)
    assert any("content" in r and "file_name" in r for r in resumes)
    oldest = [r for r in resumes if "contact_info" in r]
    assert oldest and all(
        {"summary", "experience", "education", "skills"} <= set(r) for r in oldest
    )
    assert all(
        "filename" not in r and "file_name" not in r and "file_metadata" not in r for r in oldest
    )
    sizes = sorted(len(encode(r)) for r in resumes)
    assert 2000 <= statistics.median(sizes) <= 8000
    big = [s for s in sizes if s >= 50_000]
    assert 1 <= len(big) <= 20 and max(sizes) <= 250_000  # a tail of ~1 % large resumes


def test_jobs(data):
    _ds, docs = data
    jobs = docs["jobs"]
    assert 400 <= statistics.mean(len(encode(j)) for j in jobs) <= 1200
    assert all(
        j["type"] == "job"
        and set(j["parsed_data"])
        == {"description", "requirements", "qualifications", "benefits", "skills", "keywords"}
        for j in jobs
    )
    assert any(j.get("company_name") == "" and j.get("job_title") == "" for j in jobs)
    assert any("title" in j and "company" in j and "url" in j and "work_type" in j for j in jobs)
    assert {j["source_type"] for j in jobs} == {"url", "document"}
    assert any(j.get("remote_type") is None and "remote_type" in j for j in jobs)


def test_documents_edges_and_task_results_reference_generated_keys(data):
    _ds, docs = data
    resume_keys = {r["_key"] for r in docs["resumes"]}
    job_keys = {j["_key"] for j in docs["jobs"]}
    by_type: dict[str, list] = {}
    for d in docs["documents"]:
        by_type.setdefault(d["type"], []).append(d)
    assert {"optimization", "research"} <= set(by_type) and len(
        set(by_type) - {"optimization", "research"}
    ) >= 1
    for o in by_type["optimization"]:
        assert o["resume_id"] in resume_keys and o["job_id"] in job_keys
        assert o["content"].startswith("# ") and isinstance(o["optimized_data"], dict)
    opts = by_type["optimization"]
    assert any("ats_score" in o for o in opts) and any("atsScore" in o for o in opts)
    assert any("keyword_match_score" in o for o in opts) and any("keywordScore" in o for o in opts)
    assert any(not ({"ats_score", "atsScore"} & set(o)) for o in opts)
    research = {d["_key"]: d for d in by_type["research"]}
    for r in research.values():
        assert set(r["metadata"]) == {"content_type", "report_type", "word_count"}
        assert r["metadata"]["word_count"] == len(r["content"].split()) and r["job_id"] in job_keys
    edges = docs["job_research"]
    assert len(edges) == len(research)
    for e in edges:
        coll, _, key = e["_from"].partition("/")
        assert coll == "jobs" and key in job_keys
        coll, _, key = e["_to"].partition("/")
        assert coll == "documents" and key in research
        assert (
            research[key]["job_id"] == e["_from"].split("/", 1)[1]
            and e["relationship"] == "has_research"
        )
    assert {e["_to"] for e in edges} == {f"documents/{k}" for k in research}
    assert all(
        t["type"] == "task_result" and isinstance(t["result"], dict) for t in docs["task_results"]
    )


def test_bad_cases_cover_the_spec():
    cases = bad_cases()
    assert {name for _c, _d, name in cases} == BAD_CASE_NAMES
    by = {name: (coll, doc) for coll, doc, name in cases}
    assert all(doc["_key"].startswith("bad-" + name) for name, (_c, doc) in by.items())
    assert all(KEY_RE.match(doc["_key"]) for _c, doc in by.values())
    assert set(ALLOWED_KEY_SPECIALS) <= set(by["key_all_allowed_chars"][1]["_key"])
    assert "user_id" not in by["user_id_missing"][1] or by["user_id_missing"][1]["user_id"] is None
    assert by["user_id_empty"][1]["user_id"] == "" and by["user_id_number"][1]["user_id"] == 12345
    assert "\x00" in by["nul_in_string"][1]["resume_data"]["summary"]
    assert "\ud800" in by["lone_surrogate"][1]["resume_data"]["summary"]
    assert by["file_size_1e20"][1]["file_metadata"]["size"] == 1e20
    assert by["score_250"][1]["ats_score"] == 250
    assert by["int_beyond_2_53"][1]["resume_data"]["big"] == 2**53 + 1
    assert by["int_beyond_2_63"][1]["resume_data"]["huge"] > 2**63
    assert str(by["negative_zero"][1]["resume_data"]["neg_zero"]) == "-0.0"
    assert by["float_1e308"][1]["resume_data"]["max_float"] == 1e308
    assert (
        by["ts_epoch_ms"][1]["created_at"] == 1755380083160
        and by["ts_year_only"][1]["created_at"] == "2019"
    )
    assert (
        "+" in by["ts_with_zone"][1]["created_at"]
        and by["ts_no_zone"][1]["created_at"].count(":") == 2
    )
    assert len(by["filename_over_255"][1]["file_metadata"]["filename"]) > 255
    assert isinstance(by["list_field_holds_object"][1]["resume_data"]["skills"], dict)
    assert len(encode(by["multi_mb_document"][1])) > 2_000_000
    depth, node = 0, by["nested_200_levels"][1]["resume_data"]["deep"]
    while isinstance(node, dict):
        depth, node = depth + 1, node.get("child")
    assert depth == 200
    assert by["type_routes_nowhere"][1]["type"] not in ("optimization", "research")
    assert by["edge_from_unknown_collection"][0] == "job_research"
    assert by["edge_from_unknown_collection"][1]["_from"].split("/")[0] not in datagen.COLLECTIONS
    assert by["dangling_resume_id"][1]["resume_id"] not in {
        d["_key"] for d in generate(50)["resumes"]
    }
    # every bad document encodes to valid JSON that the stdlib reads back
    for _c, doc in by.values():
        json.loads(encode(doc))


def test_bad_true_mixes_every_case_in_exactly_once():
    ds = generate(40, bad=True)
    found = {}
    for coll in ds:
        items = list(ds[coll])
        assert len(items) == ds.counts[coll]
        for d in items:
            if d["_key"].startswith("bad-"):
                found.setdefault(d["_key"], []).append(coll)
    assert len(found) == len(BAD_CASE_NAMES) and all(len(v) == 1 for v in found.values())
    clean = generate(40)
    assert sum(clean.counts.values()) + len(BAD_CASE_NAMES) == sum(ds.counts.values())


def _h(name):
    return hashlib.md5(name.encode()).hexdigest()


def test_write_dump_layout(tmp_path):
    ds = generate(30)
    d = write_dump(tmp_path / "d", ds)
    assert (d / "ENCRYPTION").read_bytes() == b"none"
    meta_raw = (d / "dump.json").read_bytes()
    assert b"\n" not in meta_raw
    meta = json.loads(meta_raw)
    assert meta["database"] == "atspro" and isinstance(meta["lastTickAtDumpStart"], str)
    assert meta["useEnvelope"] is False and meta["properties"]["name"] == "atspro"
    assert _h("persons") == "d20dd267d55aba2427ce07f1f8b4d46e"  # the spec's example
    for coll in datagen.COLLECTIONS:
        st = json.loads((d / f"{coll}_{_h(coll)}.structure.json").read_text())
        assert st["parameters"]["name"] == coll and st["parameters"]["type"] == (
            3 if coll == "job_research" else 2
        )
        assert "indexes" in st
        data = (d / f"{coll}_{_h(coll)}.data.json.gz").read_bytes()
        assert data[:2] == b"\x1f\x8b"
        lines = gzip.decompress(data).split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == ds.counts[coll]
        assert json.loads(lines[0])["_key"] == next(iter(ds[coll]))["_key"]


def test_write_dump_variants(tmp_path):
    ds = generate(30)
    d = write_dump(tmp_path / "env", ds, gzip=False, envelope=True, version_style="3.8")
    line = (d / f"jobs_{_h('jobs')}.data.json").read_bytes().split(b"\n")[0]
    env = json.loads(line)
    assert (
        set(env) == {"type", "data"}
        and env["type"] == 2300
        and env["data"]["_id"].startswith("jobs/")
    )
    assert json.loads((d / "dump.json").read_text())["useEnvelope"] is True
    d = write_dump(tmp_path / "split", ds, split_files=12)
    parts = sorted(p.name for p in d.glob(f"jobs_{_h('jobs')}.*.data.json.gz"))
    assert parts == [
        f"jobs_{_h('jobs')}.{n}.data.json.gz" for n in range(3)
    ]  # 30 jobs, 12 per file
    d = write_dump(tmp_path / "plain", ds, gzip=False, plain_names=True, version_style="legacy")
    assert (d / "jobs.structure.json").exists() and (d / "jobs.data.json").exists()
    assert not (d / "ENCRYPTION").exists()
    st = json.loads((d / "jobs.structure.json").read_text())
    assert "indexes" in st["parameters"] and "indexes" not in st
    d = write_dump(tmp_path / "v312", ds, version_style="3.12")
    assert "useEnvelope" not in json.loads((d / "dump.json").read_text())
    assert (
        "numberOfShards"
        not in json.loads((d / f"jobs_{_h('jobs')}.structure.json").read_text())["parameters"]
    )


def test_writers_stream_one_shot_generators(tmp_path):
    def docs():
        for i in range(3):
            yield {"_key": str(i), "_id": f"things/{i}", "_rev": "_r"}

    d = write_dump(tmp_path / "g", {"things": docs()}, gzip=False)
    assert (d / f"things_{_h('things')}.data.json").read_bytes().count(b"\n") == 3
    d = write_jsonl(tmp_path / "j", {"things": docs(), "none": iter(())}, fmt="json")
    assert (d / "things.json").read_bytes() == (
        b'[\n  {"_key":"0","_id":"things/0","_rev":"_r"},\n  {"_key":"1","_id":"things/1","_rev":"_r"},'
        b'\n  {"_key":"2","_id":"things/2","_rev":"_r"}\n]'
    )
    assert (d / "none.json").read_bytes() == b"[\n]"
    d = write_jsonl(tmp_path / "jl", {"things": docs()}, gzip=True)
    assert gzip.decompress((d / "things.jsonl.gz").read_bytes()).count(b"\n") == 3


def test_cli(tmp_path):
    assert (
        datagen.main(["--resumes", "5", "--out", str(tmp_path / "j"), "--format", "jsonl", "--bad"])
        == 0
    )
    assert {p.name for p in (tmp_path / "j").iterdir()} == {"ENCRYPTION"} | {
        f"{c}.jsonl" for c in datagen.COLLECTIONS
    }
    r = subprocess.run(
        [sys.executable, "-m", "tests.datagen", "--resumes", "5", "--out", str(tmp_path / "d")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "resumes=5" in r.stderr and (tmp_path / "d" / "dump.json").exists()
