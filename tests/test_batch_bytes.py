"""migrate.batch_bytes: a batch also ends once it has read that many bytes of source, so memory
is bounded in bytes, not only in documents; every document is still read once, in order, and a
batch's position resumes exactly after it."""

from __future__ import annotations

import pytest

from etl.sources.dump import DumpSource
from etl.sources.jsonl import JsonlSource
from tests.datagen import generate, write_dump, write_jsonl
from tests.fakearango.fixtures import DATABASE, seed
from tests.test_source_arango import make_source

DOCS = [{"_key": f"r{i:03d}", "i": i, "text": "x" * (200 + 37 * (i % 11))} for i in range(120)]


def check(batches, keys_expected, max_bytes, batch_size):
    keys = [d["_key"] for b in batches for d in b.docs]
    assert keys == keys_expected
    assert all(0 < len(b.docs) <= batch_size for b in batches)
    return keys


def test_arango_batches_end_at_the_byte_limit_and_resume_exactly(arango_server):
    seed(arango_server, DATABASE, "resumes", DOCS)
    src = make_source(arango_server, cursor_batch_size=10)
    whole = [d["_key"] for b in src.batches("resumes", 50) for d in b.docs]
    cut = list(src.batches("resumes", 50, max_bytes=2_000))
    check(cut, whole, 2_000, 50)
    assert len(cut) > len(whole) // 50 + 1  # the bytes, not the count, ended the batches
    assert all(len(b.docs) % 10 == 0 for b in cut[:-1])  # at the end of an HTTP response
    # a batch's position resumes right after it
    rest = [d["_key"] for b in src.batches("resumes", 50, after=cut[2].position) for d in b.docs]
    assert rest == whole[sum(len(b.docs) for b in cut[:3]) :]


@pytest.mark.parametrize("kind", ["dump", "jsonl"])
def test_file_batches_end_at_the_byte_limit_and_resume_exactly(tmp_path, kind):
    ds = generate(40, seed=2)
    if kind == "dump":
        src = DumpSource(str(write_dump(tmp_path / "d", ds, gzip=True)))
    else:
        src = JsonlSource(str(write_jsonl(tmp_path / "j", ds)))
    whole = [d["_key"] for b in src.batches("resumes", 1000) for d in b.docs]
    cut = list(src.batches("resumes", 1000, max_bytes=20_000))
    check(cut, whole, 20_000, 1000)
    assert len(cut) >= 3
    assert all(b.nbytes >= 20_000 for b in cut[:-1])
    rest = [d["_key"] for b in src.batches("resumes", 1000, after=cut[1].position) for d in b.docs]
    assert rest == whole[len(cut[0].docs) + len(cut[1].docs) :]
