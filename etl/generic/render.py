"""The mapping file `etl discover` writes: TOML in the format of configs/atspro.toml, every
collection a generic table, with comments a reviewer reads before apply-schema: the sample,
each attribute's coverage and types, and what was chosen (or not) and why."""

from __future__ import annotations

import json
import re

from etl.generic.discover import Collection, Discovery

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
RULE = "# " + "-" * 93


def _s(v: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(v, ensure_ascii=False)


def _key(k: str) -> str:
    return k if _BARE.match(k) else _s(k)


def _list(items) -> str:
    return "[" + ", ".join(_s(i) for i in items) + "]"


def render(d: Discovery) -> str:
    docs = [c for c in d.collections if not c.edge]
    edges = [c for c in d.collections if c.edge]
    db = d.database or "arangodb"
    out = [
        f"# Mapping written by `etl discover` from {d.source}.",
        "#",
        "# Every collection below becomes a generic table in PostgreSQL schema"
        f" {_s(d.schema)}: id uuid (uuid5 of",
        '# "<collection>/<_key>"), key, data jsonb (the document without _key, _id, _rev, _from,'
        " _to), metadata",
        "# jsonb (provenance); edge tables also from_ref/to_ref (verbatim) and from_id/to_id"
        " (uuid5).",
        "# No foreign keys on edge tables: ArangoDB keeps no edge consistent, and during etl sync"
        " a removal",
        "# of a document that edges still name must apply; an edge whose end is not in the"
        " target is loaded",
        "# as it is, counted and listed as dangling by migrate and reconcile.",
        "# [collections.X.typed]: STORED generated columns read from data (data stays the whole"
        " truth).",
        "# [[collections.X.indexes]]: translated from the collection's ArangoDB indexes.",
        f"# Attribute figures come from a reservoir sample of at most {d.sample:,} documents"
        f" per collection (seed {d.seed}).",
        "# Review and edit, then: etl apply-schema --mapping THIS_FILE; etl migrate --all"
        " --mapping THIS_FILE.",
    ]
    if d.skipped_system:
        out.append(
            "# System collections not migrated (etl discover --include-system adds them): "
            + ", ".join(d.skipped_system)
        )
    for g in d.graphs:
        out.append(f"# Graph {g['name']}:")
        for e in g["edge_definitions"]:
            if isinstance(e, dict):
                out.append(
                    f"#   {e.get('collection')}: from {', '.join(e.get('from', []))}"
                    f" to {', '.join(e.get('to', []))}"
                )
    out += [
        "",
        f"mapping_version = {_s(db + '-discovered-1')}",
        "",
        "[policy]",
        "# U+0000 and lone surrogates cannot be stored by PostgreSQL: such a document is a reject,",
        '# kept whole in etl_rejects ("strip" and "escape" are the alternatives, see'
        " configs/atspro.toml).",
        'nul_in_strings = "reject"',
        'lone_surrogates = "reject"',
        f"order = {_list([c.name for c in docs + edges])}",
        "",
        "[generic]",
        f"schema = {_s(d.schema)}",
    ]
    for c in docs + edges:
        out += ["", "", *_collection(c)]
    return "\n".join(out) + "\n"


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _collection(c: Collection) -> list[str]:
    kind = "edge" if c.edge else "document"
    out = [
        RULE,
        f"# {c.name}: {kind} collection, {c.count:,} documents, {c.sampled:,} sampled"
        + (f"; table renamed from {c.name!r} (not a plain lower-case identifier)"
           if c.table != c.name else ""),
    ]  # fmt: skip
    if c.from_collections or c.to_collections:
        out.append(
            f"# graph edges from {', '.join(c.from_collections)} to {', '.join(c.to_collections)}"
            " (documented; no foreign keys: a missing end is reported as a dangling edge)"
        )
    if c.attributes:
        out.append("# attributes seen (coverage, JSON types) -> what was chosen:")
        width = min(max(len(a) for a in c.attributes), 30)
        for a in sorted(c.attributes.values(), key=lambda a: (-a.present, a.name)):
            types = ", ".join(
                f"{t} {_pct(n, a.present)}" if len(a.types) > 1 else t
                for t, n in a.types.most_common()
            )
            if a.typed:
                what = f"typed column {a.typed[0]} {a.typed[1]}"
            else:
                what = a.why
            out.append(f"#   {a.name:<{width}} {_pct(a.present, c.sampled):>6}  {types} -> {what}")
    elif c.sampled == 0:
        out.append("# no documents: no typed columns")
    if c.indexes:
        out.append("# indexes in ArangoDB:")
        for i in c.indexes:
            shown = f"{i.kind} {i.fields}" + (" unique" if i.unique else "")
            target = "translated" if i.translated else "not translated"
            out.append(f"#   {shown} -> {target}" + (f": {i.note}" if i.note else ""))
    out += [
        f"[collections.{_key(c.name)}]",
        'kind = "generic"',
        f"table = {_s(c.table)}",
    ]
    if c.edge:
        out.append("edge = true")
        if c.from_collections:
            out.append(f"from_collections = {_list(c.from_collections)}")
        if c.to_collections:
            out.append(f"to_collections = {_list(c.to_collections)}")
    if c.not_translated:
        out.append(f"not_translated = {_list(c.not_translated)}")
    typed = sorted((a.typed, a.name) for a in c.attributes.values() if a.typed)
    if typed:
        out += ["", f"[collections.{_key(c.name)}.typed]"]
        for (column, type_), path in typed:
            out.append(f"{_key(column)} = {{ path = {_s(path)}, type = {_s(type_)} }}")
    for i in c.indexes:
        if i.translated:
            out += ["", f"[[collections.{_key(c.name)}.indexes]]"]
            out.append(f"fields = {_list(i.translated['fields'])}")
            if i.translated["kind"] != "btree":
                out.append(f"kind = {_s(i.translated['kind'])}")
            if i.translated["unique"]:
                out.append("unique = true")
    return out
