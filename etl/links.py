"""Late parents: ONE mechanism for migrate (single run and parallel units) and sync.

A reference to a row the target does not hold loads as NULL, and the document's raw key stays
in metadata.extra (a reference never consumes its attribute). So the target itself records
which rows wait for a parent: a NULL reference column whose document names a key at one of the
reference's paths. When rows of a collection arrive (the end of a migrate's pass over it, or
the new rows of a batch of sync changes), `link_arrived()` finds the rows waiting for them, in
any table, and sets their references (`Loader.relink_parents`: only where the parent exists and
the validation accepts the link). Nothing is kept on the side, so a crash loses nothing and a
second call sets nothing twice; the order in which parents and children arrive does not matter.
"""

from __future__ import annotations

import json
import logging
import re
from collections import abc
from typing import Any

import psycopg
from psycopg import sql

from etl import derived, jsonutil
from etl.load import Loader
from etl.mapping import Field_, Mapping
from etl.transform import reference_key, row_id

log = logging.getLogger("etl.links")

# (collection of the child rows, their document type) -> references set
Linked = dict[tuple[str, str], int]


def waiting(
    c: psycopg.Connection, table: str, ref: Field_, keys: abc.Collection[str] | None = None
) -> list[tuple[str, str]]:
    """(child id, parent id) of the rows of `table` whose reference `ref` is NULL and whose
    document names a parent at the first of ref's paths that has a value (the transform's
    rule); with `keys`, only parents among them. Whether the parent exists is not asked here."""
    assert ref.collection is not None  # a reference names its collection
    extra = sql.SQL("t.metadata -> 'extra'")
    if keys is None:
        named = derived.own_named_sql(ref.paths)
        params: list[Any] = []
    else:
        if not keys:
            return []
        named = sql.SQL(" or ").join(
            sql.SQL("({} #>> %s) = any(%s)").format(extra) for _ in ref.paths
        )
        params = []
        for p in ref.paths:
            params += [list(p), sorted(keys)]
        paths = [named_path(p, keys) for p in ref.paths]
        if all(paths):  # first through the metadata GIN index, not a scan of the table
            named = sql.SQL("({}) and ({})").format(
                sql.SQL(" or ").join(sql.SQL("t.metadata @? %s::jsonpath") for _ in paths), named
            )
            params = [*paths, *params]
    values = sql.SQL(", ").join(
        sql.SQL("{} #> {}").format(extra, sql.Literal(list(p))) for p in ref.paths
    )
    found = c.execute(
        sql.SQL(
            "select t.id::text, jsonb_build_array({v}) from {t} t where t.{c} is null and ({n})"
        ).format(v=values, t=sql.Identifier(table), c=sql.Identifier(ref.name), n=named),
        params,
    ).fetchall()
    out = []
    for child_id, named_values in found:
        k = reference_key(next((v for v in named_values if v is not None), None))
        if k is not None and (keys is None or k in keys):
            out.append((child_id, row_id(ref.collection, k)))
    return out


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def named_path(path: abc.Sequence[str], keys: abc.Collection[str]) -> str | None:
    """A jsonpath that the metadata GIN index answers, true for every row whose
    metadata.extra names one of `keys` at `path` as reference_key() reads it (a string, or an
    integer's decimal string); a superset (lax mode also looks into arrays), so the exact
    condition is kept beside it. None for a path with an array index (the index cannot follow
    it as #>> does)."""
    if any(not isinstance(part, str) or _INTEGER.fullmatch(part) for part in path):
        return None
    literals: list[str | int] = []
    for k in sorted(keys):
        literals.append(k)
        if _INTEGER.fullmatch(k):
            literals.append(int(k))
    steps = "".join(f".{json.dumps(part)}" for part in ("extra", *path))
    return jsonutil.jsonpath_any(f"${steps}", "@", literals)


def link_arrived(
    c: psycopg.Connection,
    mapping: Mapping,
    run_id: str,
    arrived: abc.Mapping[str, abc.Collection[str] | None],
) -> Linked:
    """In the caller's transaction: set the references to rows that arrived after the rows
    naming them. `arrived`: collection -> keys of its rows just stored, or None for every row
    of it (the end of a pass over the collection). Returns the links set per child collection
    and document type."""
    linked: Linked = {}
    if not arrived:
        return linked
    loader = Loader(c, run_id)
    for cm in mapping.collections.values():
        for tg in cm.targets():
            for ref in tg.references:
                if ref.collection is None or ref.collection not in arrived:
                    continue
                refs = waiting(c, tg.table, ref, arrived[ref.collection])
                n = loader.relink_parents(tg.table, refs, ref.name) if refs else 0
                if n:
                    key = (cm.name, tg.document_type)
                    linked[key] = linked.get(key, 0) + n
                    log.info(
                        "%s: linked %d of %d %s references to rows of %s that came later",
                        cm.name,
                        n,
                        len(refs),
                        ref.name,
                        ref.collection,
                    )
    return linked
