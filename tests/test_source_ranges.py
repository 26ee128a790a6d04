"""Ranges for parallel workers: ArangoDB's boundaries come from the server's own order, and the
ranges (after, until] read back every document exactly once, in ICU-like and bytewise collation.
File sources are one range, but honour (after, until] in their own positions (record counts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.errors import PermanentError
from etl.sources.arango import ArangoSource
from etl.sources.dump import DumpSource
from etl.sources.jsonl import JsonlSource
from tests.fakearango.fixtures import DATABASE, arango_settings, seed

# mixed case, digits and punctuation: ICU-like and bytewise orders differ on these
KEYS = [f"{p}{i}" for i in range(120) for p in ("a", "B", "c-", "Z_", "9")]


@pytest.mark.parametrize("server_fixture", ["arango_server", "arango_server_bytewise"])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 600, 700])
def test_ranges_cover_the_collection_exactly_once(request, server_fixture, parts):
    server = request.getfixturevalue(server_fixture)
    seed(server, DATABASE, "resumes", [{"_key": k, "n": i} for i, k in enumerate(KEYS)])
    with ArangoSource(arango_settings(server)) as src:
        points = src.split_points("resumes", parts)
        assert len(points) == len(set(points)) <= parts - 1
        bounds = [None, *points, None]
        seen: list[str] = []
        for lo, hi in zip(bounds, bounds[1:]):
            got = [
                d["_key"] for b in src.batches("resumes", 37, after=lo, until=hi) for d in b.docs
            ]
            assert src.remaining("resumes", after=lo, until=hi) == len(got)
            if hi is not None:
                assert got and got[-1] == hi  # a boundary is the last key of its range
            seen += got
        assert sorted(seen) == sorted(KEYS) and len(seen) == len(KEYS)
        # the concatenation is the server's own full order
        assert seen == [d["_key"] for b in src.batches("resumes", 1000) for d in b.docs]
        if parts <= len(KEYS):
            assert len(points) == parts - 1


def test_split_points_of_an_empty_collection(arango_server):
    seed(arango_server, DATABASE, "jobs", [])
    with ArangoSource(arango_settings(arango_server)) as src:
        assert src.split_points("jobs", 4) == []


DUMPS = Path(__file__).parent / "cases" / "dumps"


def _read(src, name, batch_size=1000, **kw) -> tuple[list[str], list[str]]:
    batches = list(src.batches(name, batch_size, **kw))
    return [d["_key"] for b in batches for d in b.docs], [b.position for b in batches]


@pytest.mark.parametrize("case", ["v38_envelope", "split_files", "v311_gzip"])
def test_a_file_source_is_one_range_and_reads_any_range_of_positions(case):
    src = DumpSource(DUMPS / case)
    for info in src.collections():
        name = info.name
        assert src.split_points(name, 4) == []
        everything, positions = _read(src, name)
        records = int(positions[-1]) if positions else 0
        for lo in range(records + 1):
            for hi in range(lo, records + 1):
                got, pos = _read(src, name, after=str(lo), until=str(hi))
                rest, _ = _read(src, name, 2, after=str(hi))
                assert got + rest == _read(src, name, after=str(lo))[0], (name, lo, hi)
                assert src.remaining(name, after=str(lo), until=str(hi)) == len(got)
                assert not pos or pos[-1] == str(hi)
                small, _ = _read(src, name, 1, after=str(lo), until=str(hi))
                assert small == got
        assert _read(src, name, until=str(records))[0] == everything


def test_a_file_source_refuses_a_range_it_cannot_read(tmp_path):
    src = DumpSource(DUMPS / "v38_envelope")
    with pytest.raises(PermanentError, match="before"):
        list(src.batches("resumes", 10, after="5", until="4"))
    with pytest.raises(PermanentError, match="before"):
        src.remaining("resumes", after="5", until="4")
    with pytest.raises(PermanentError, match="not a record count"):
        list(src.batches("resumes", 10, until="r1003"))
    with pytest.raises(PermanentError, match="outside"):
        list(src.batches("resumes", 10, until="12"))
    with pytest.raises(PermanentError, match="not in"):
        src.split_points("nope", 2)
    (tmp_path / "jobs.jsonl").write_text('{"_key":"a"}\n{"_key":"b"}\n{"_key":"c"}\n')
    jsonl = JsonlSource(tmp_path)
    assert jsonl.split_points("jobs", 3) == []
    assert _read(jsonl, "jobs", after="1", until="2") == (["b"], ["2"])
