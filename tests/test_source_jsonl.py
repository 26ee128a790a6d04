"""JsonlSource: arangoexport jsonl/json output (spec section 4, checklist item 18)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from etl.errors import PermanentError
from etl.sources import open_source
from etl.sources.base import Source
from etl.sources.jsonl import JsonlSource

JOBS = [
    '{"_key":"j1","_id":"jobs/j1","_rev":"_a","job_title":"A"}',
    '{"_key":"j2","_id":"jobs/j2","_rev":"_b","job_title":"B","n":123456789012345678901}',
    '{"_key":"j3","_id":"jobs/j3","_rev":"_c","job_title":"C\u2028D"}',
]
EDGES = [
    '{"_key":"e1","_id":"job_research/e1","_rev":"_e","_from":"jobs/j1","_to":"documents/d1"}',
    '{"_key":"e2","_id":"job_research/e2","_rev":"_f","_from":"jobs/j2","_to":"documents/d2"}',
]


def keys(src, collection, **kw):
    return [
        d["_key"] for b in src.batches(collection, kw.pop("batch_size", 2), **kw) for d in b.docs
    ]


def jsonl(lines) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def json_array(lines) -> bytes:
    """arangoexport --type json: "[", "\\n  " doc, ",\\n  " doc ..., "\\n]" without a final newline."""
    if not lines:
        return b"[\n]"
    return ("[\n  " + ",\n  ".join(lines) + "\n]").encode()


@pytest.fixture
def export_dir(tmp_path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    (d / "ENCRYPTION").write_text("none")
    (d / "jobs.jsonl").write_bytes(jsonl(JOBS))
    (d / "job_research.json.gz").write_bytes(gzip.compress(json_array(EDGES)))
    (d / "empty.json").write_bytes(json_array([]))
    (d / "query.jsonl.gz").write_bytes(gzip.compress(jsonl(JOBS[:1])))
    (d / "mixed.json").write_bytes(json_array([EDGES[0], JOBS[0]]))
    (d / "notes.txt").write_text("ignored")
    return d


def test_directory_of_every_export_kind(export_dir):
    src = JsonlSource(export_dir)
    assert isinstance(src, Source)
    infos = {c.name: (c.type, c.count) for c in src.collections()}
    assert infos == {
        "jobs": ("document", 3),
        "job_research": ("edge", 2),
        "empty": ("document", 0),
        "query": ("document", 1),
        "mixed": ("document", 2),
    }  # edge only if every row is one
    assert keys(src, "jobs") == ["j1", "j2", "j3"]
    assert keys(src, "job_research") == ["e1", "e2"]
    assert keys(src, "empty") == [] and keys(src, "query") == ["j1"]
    docs = [d for b in src.batches("jobs", 10) for d in b.docs]
    assert docs[1]["n"] == 123456789012345678901 and docs[2]["job_title"] == "C\u2028D"


def test_single_file_and_open_source(export_dir):
    src = open_source(f"jsonl:{export_dir / 'job_research.json.gz'}", settings=None)
    assert isinstance(src, JsonlSource)
    assert [(c.name, c.type, c.count) for c in src.collections()] == [("job_research", "edge", 2)]
    with pytest.raises(PermanentError, match="expected a .jsonl"):
        JsonlSource(export_dir / "notes.txt")
    with pytest.raises(PermanentError, match="does not exist"):
        JsonlSource(export_dir / "nope.jsonl")


def test_positions_and_remaining(export_dir):
    src = JsonlSource(export_dir)
    batches = list(src.batches("jobs", 2))
    assert [b.position for b in batches] == ["2", "3"] and all(b.nbytes > 0 for b in batches)
    assert keys(src, "jobs", after="2") == ["j3"]
    assert src.remaining("jobs", "1") == 2 and src.remaining("jobs") == 3
    # the json layout's "[" and "]" lines are not records
    assert [b.position for b in src.batches("job_research", 1)] == ["1", "2"]
    assert keys(src, "job_research", after="1") == ["e2"]


def test_non_object_row_names_file_and_line(tmp_path):
    f = tmp_path / "query.jsonl"
    f.write_bytes(jsonl([JOBS[0], "42"]))
    with pytest.raises(
        PermanentError, match=r"query.jsonl: line 2: expected a JSON object, found int"
    ):
        JsonlSource(f).collections()
    f.write_bytes(jsonl(['"just a string"']))
    with pytest.raises(PermanentError, match=r"line 1: expected a JSON object, found str"):
        JsonlSource(f).collections()
    f.write_bytes(jsonl([JOBS[0], '{"name":"no key"}']))
    with pytest.raises(PermanentError, match=r"line 2: a row without a string _key"):
        JsonlSource(f).collections()
    # an envelope is not an arangoexport row
    f.write_bytes(jsonl(['{"type":2300,"data":{"_key":"x"}}']))
    with pytest.raises(PermanentError, match="without a string _key"):
        JsonlSource(f).collections()


def test_single_line_array_is_not_the_export_layout(tmp_path):
    f = tmp_path / "jobs.json"
    f.write_text("[" + ",".join(JOBS) + "]")
    with pytest.raises(
        PermanentError, match="jobs.json: line 1: expected a JSON object, found list"
    ):
        JsonlSource(f).collections()


def test_ambiguous_pair_and_encryption(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "jobs.jsonl").write_bytes(jsonl(JOBS))
    (d / "jobs.jsonl.gz").write_bytes(gzip.compress(jsonl(JOBS)))
    with pytest.raises(PermanentError, match="ambiguous"):
        JsonlSource(d)
    (d / "jobs.jsonl.gz").unlink()
    (d / "ENCRYPTION").write_text("aes-256-ctr")
    with pytest.raises(PermanentError, match="is encrypted"):
        JsonlSource(d)
    (d / "ENCRYPTION").unlink()
    (d / "jobs.jsonl").unlink()
    with pytest.raises(PermanentError, match="no .jsonl/.json export files"):
        JsonlSource(d)


def test_truncated_tail_bom_crlf_duplicates(tmp_path, caplog):
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + jsonl(JOBS).replace(b"\n", b"\r\n") + b'{"_key":"j4","_id":"jo')
    with pytest.raises(PermanentError, match=r"jobs.jsonl is truncated.*after 3 good records"):
        JsonlSource(f).collections()
    caplog.set_level(logging.WARNING, "etl.sources.jsonl")
    src = JsonlSource(f, allow_truncated=True)
    assert keys(src, "jobs") == ["j1", "j2", "j3"]
    assert any("truncated" in r.message for r in caplog.records)
    # a custom query can return one key twice: last wins, each key once, a warning
    f.write_bytes(jsonl([JOBS[0], JOBS[1], JOBS[0].replace('"A"', '"A2"')]))
    src = JsonlSource(f)
    docs = [d for b in src.batches("jobs", 10) for d in b.docs]
    assert [(d["_key"], d["job_title"]) for d in docs] == [("j2", "B"), ("j1", "A2")]
    assert src.collection("jobs").count == 2
    assert any("'j1'" in r.message and r.name == "etl.sources.jsonl" for r in caplog.records)


def test_unknown_collection(export_dir):
    with pytest.raises(
        PermanentError, match="'resumes' is not in arangoexport.*empty, job_research, jobs"
    ):
        JsonlSource(export_dir).collection("resumes")
