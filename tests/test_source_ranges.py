"""Key ranges for parallel workers: boundaries come from the server's own order, and the ranges
(after, until] read back every document exactly once, in ICU-like and bytewise collation."""

from __future__ import annotations

import pytest

from etl.sources.arango import ArangoSource
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
