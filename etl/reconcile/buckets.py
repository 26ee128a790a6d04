"""Bucket digests: rows are bucketed by the first BUCKET_HEX hex digits of their id, and each
side sums (count, digest mod 2^64) per bucket. This module holds the bucket arithmetic, the
sample of buckets, and the SQL the server runs: bucket sums, and for the drill-down the row
digests and compare objects inside mismatching buckets."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from psycopg import sql

from etl.mapping import Mapping
from etl.reconcile.compare import TypeSpec, digest_of
from etl.target import ident
from etl.transform import row_id

BUCKET_HEX = 3
N_BUCKETS = 16**BUCKET_HEX
MOD = 1 << 64  # digest sums are kept mod 2^64


def bucket_of(id_str: str) -> int:
    return int(id_str[:BUCKET_HEX], 16)


def bucket_sql(id_expr: sql.Composable) -> sql.Composed:
    """The server's bucket_of() of a uuid expression."""
    return sql.SQL(f"(('x' || left({{}}::text, {BUCKET_HEX}))::bit({BUCKET_HEX * 4})::int)").format(
        id_expr
    )


def bucket_ranges(buckets) -> list[tuple[str, str]]:
    """Contiguous runs of buckets as inclusive uuid ranges (for index range scans on id)."""
    out: list[tuple[str, str]] = []
    for b in sorted(buckets):
        lo = f"{b:0{BUCKET_HEX}x}" + "0" * (8 - BUCKET_HEX) + "-0000-0000-0000-000000000000"
        hi = f"{b:0{BUCKET_HEX}x}" + "f" * (8 - BUCKET_HEX) + "-ffff-ffff-ffff-ffffffffffff"
        if out and bucket_of(out[-1][1]) == b - 1:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def sample_buckets(percent: float, seed: int | None) -> set[int]:
    """The buckets a --sample of `percent` checks (random.Random(seed): repeatable)."""
    k = max(1, round(N_BUCKETS * percent / 100))
    return set(random.Random(seed).sample(range(N_BUCKETS), k))


def in_sample(sampled: set[int] | None, collection: str, doc: Any) -> bool:
    if sampled is None:
        return True
    key = doc.get("_key") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not key:
        return True  # no id to bucket: always checked (it is a reject)
    return bucket_of(row_id(collection, key)) in sampled


def differing_buckets(
    counts: list[int],
    sums: list[int],
    server: dict[int, tuple[int, int]],
    checked: Iterable[int],
) -> set[int]:
    """The checked buckets whose (count, digest sum) differ between source and server."""
    return {
        b
        for b in checked
        if (counts[b], sums[b] % MOD) != (server.get(b, (0, 0))[0], server.get(b, (0, 0))[1] % MOD)
    }


def range_join(buckets) -> tuple[sql.Composable, list]:
    """A join of `t` to the buckets' uuid ranges (index range scans on t.id); none: all rows."""
    if buckets is None:
        return sql.SQL(""), []
    ranges = bucket_ranges(buckets)
    return (
        sql.SQL(
            " join (select unnest(%s::uuid[]) lo, unnest(%s::uuid[]) hi) rg on t.id between rg.lo and rg.hi"
        ),
        [[r[0] for r in ranges], [r[1] for r in ranges]],
    )


def bucket_join(buckets) -> tuple[sql.Composable, list]:
    """A hash join on the bucket number, for a derived table (no index on a range to use)."""
    if buckets is None:
        return sql.SQL(""), []
    return sql.SQL(" join unnest(%s::int[]) sb(b) on sb.b = t.b"), [sorted(buckets)]


def collection_scope(mapping: Mapping, spec: TypeSpec, collection: str) -> sql.Composed:
    """The rows of spec.table that belong to `collection` (the first collection feeding the table
    also gets the rows of no or a foreign arango collection)."""
    feeding = [
        c
        for c in mapping.collections_in_order()
        if (m := mapping.for_collection(c)) is not None
        and m.edge is None
        and any(t.document_type == spec.document_type for t in m.targets())
    ]
    own = sql.SQL("t.metadata -> 'arango' ->> 'collection' = {}").format(sql.Literal(collection))
    if feeding and feeding[0] == collection:
        return sql.SQL(
            "({} or t.metadata -> 'arango' ->> 'collection' is null"
            " or t.metadata -> 'arango' ->> 'collection' not in ({}))"
        ).format(own, sql.SQL(", ").join(map(sql.Literal, feeding)))
    return sql.SQL("({})").format(own)


def server_buckets(
    conn, spec: TypeSpec, scope: sql.Composable, masked: set[str], buckets: set[int] | None
) -> dict[int, tuple[int, int]]:
    """bucket -> (rows, digest sum) of the rows in scope, in `buckets` (None: all)."""
    join, params = range_join(buckets)
    q = sql.SQL(
        "select b, count(*), sum(d) from (select {} b, {} d from {} t{} where {}) s group by b"
    ).format(
        bucket_sql(sql.SQL("t.id")),
        digest_of(spec.compare_sql(masked)),
        ident(spec.table),
        join,
        scope,
    )
    out = {b: (n, int(s)) for b, n, s in conn.execute(q, params)}
    conn.commit()
    return out


def server_row_digests(
    conn, spec: TypeSpec, scope: sql.Composable, masked: set[str], buckets: set[int]
) -> dict[str, tuple[int, str | None, str | None]]:
    """row id -> (digest, metadata.arango._key, metadata.arango.collection) in `buckets`."""
    join, params = range_join(buckets)
    q = sql.SQL(
        "select t.id::text, {}, t.metadata -> 'arango' ->> '_key', t.metadata -> 'arango' ->> 'collection'"
        " from {} t{} where {}"
    ).format(digest_of(spec.compare_sql(masked)), ident(spec.table), join, scope)
    out = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(q, params)}
    conn.commit()
    return out


def server_compare_texts(conn, spec: TypeSpec, masked: set[str], ids: list[str]) -> dict[str, str]:
    """row id -> the server's compare object text, for the rows whose digests differ."""
    q = sql.SQL("select t.id::text, {} from {} t where t.id = any(%s::uuid[])").format(
        spec.compare_sql(masked), ident(spec.table)
    )
    out = {r[0]: r[1] for r in conn.execute(q, (ids,))}
    conn.commit()
    return out
