"""`etl discover`: a mapping file for any ArangoDB database, from its collections, their
indexes (live: the collection and index APIs; dump: `*.structure.json`), the `_graphs` edge
definitions and a reservoir sample of each collection's documents. The file is the same format
as configs/atspro.toml, all generic tables, commented for review (etl/generic/render.py)."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from etl.generic.ddl import ISO_8601
from etl.generic.names import BASE_COLUMNS, identifier
from etl.generic.transform import SYSTEM_ATTRS
from etl.jsonutil import type_name
from etl.target import BIGINT_MAX, BIGINT_MIN

log = logging.getLogger("etl.discover")

DEFAULT_SAMPLE = 10_000
MOST = 0.5  # a typed column needs its attribute (not null) in more than half of the sample
MAX_TYPED = 40  # typed columns per table at most
MAX_TEXT = 1000  # a string attribute longer than this in the sample gets no typed column
_ISO = re.compile(ISO_8601)
_BTREE = ("persistent", "hash", "skiplist")
_FIELD_COLUMNS = {"_key": "key", "_from": "from_ref", "_to": "to_ref"}


@dataclass
class Attribute:
    name: str
    present: int = 0  # documents with the attribute (null included)
    types: Counter = field(default_factory=Counter)  # JSON type -> documents
    iso: int = 0  # strings that are ISO-8601 timestamps
    big: int = 0  # integers beyond bigint
    longest: int = 0  # longest string
    typed: tuple[str, str] | None = None  # (column, type) chosen
    why: str = ""

    @property
    def not_null(self) -> int:
        return self.present - self.types.get("null", 0)


@dataclass
class Index:
    kind: str  # the ArangoDB type
    fields: list[str]
    name: str | None
    unique: bool
    translated: dict | None = None  # {fields, kind, unique}
    note: str = ""


@dataclass
class Collection:
    name: str
    edge: bool
    count: int
    table: str
    sampled: int = 0
    attributes: dict[str, Attribute] = field(default_factory=dict)
    indexes: list[Index] = field(default_factory=list)
    from_collections: list[str] = field(default_factory=list)
    to_collections: list[str] = field(default_factory=list)
    not_translated: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    source: str
    database: str | None
    schema: str
    sample: int
    seed: int
    collections: list[Collection]
    graphs: list[dict]
    skipped_system: list[str]


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return "string" if isinstance(v, str) else type_name(v)


def reservoir(docs, n: int, rng: random.Random) -> tuple[list, int]:
    """Algorithm R: a uniform sample of n documents of a stream, and the stream's length."""
    out: list = []
    seen = 0
    for d in docs:
        seen += 1
        if len(out) < n:
            out.append(d)
        else:
            j = rng.randrange(seen)
            if j < n:
                out[j] = d
    return out, seen


def _documents(source, name: str):
    for batch in source.batches(name, 1000):
        yield from batch.docs


def profile(c: Collection, sample: list) -> None:
    """Attribute coverage and types of the sampled documents; the typed columns chosen."""
    c.sampled = len(sample)
    for doc in sample:
        if not isinstance(doc, dict):
            continue
        for k, v in doc.items():
            if k in SYSTEM_ATTRS:
                continue
            a = c.attributes.get(k) or c.attributes.setdefault(k, Attribute(k))
            a.present += 1
            t = _json_type(v)
            a.types[t] += 1
            if t == "string":
                a.longest = max(a.longest, len(v))
                a.iso += bool(_ISO.match(v))
            elif t == "integer" and not BIGINT_MIN <= v <= BIGINT_MAX:
                a.big += 1
    taken = set(BASE_COLUMNS)
    chosen = 0
    for a in sorted(c.attributes.values(), key=lambda a: (-a.present, a.name)):
        kinds = {t for t in a.types if t != "null"}
        if "." in a.name:
            a.why = "the name holds a dot (a path to ArangoDB): left in data"
        elif c.sampled == 0 or a.not_null / c.sampled <= MOST:
            a.why = "in too few documents for a typed column"
        elif kinds <= {"integer", "number"} and kinds:
            a.typed = ("", "bigint" if kinds == {"integer"} and not a.big else "numeric")
        elif kinds == {"boolean"}:
            a.typed = ("", "boolean")
        elif kinds == {"string"}:
            if a.iso == a.not_null:
                a.typed = ("", "timestamptz")
            elif a.longest <= MAX_TEXT:
                a.typed = ("", "text")
            else:
                a.why = f"strings up to {a.longest} characters: left in data"
        elif len(kinds) > 1:
            a.why = "mixed types: left in data"
        else:
            a.why = f"{next(iter(kinds))}: left in data (the GIN index on data covers it)"
        if a.typed is not None:
            if chosen >= MAX_TYPED:
                a.typed, a.why = None, f"more than {MAX_TYPED} candidates: left in data"
                continue
            col = identifier(a.name, tuple(taken))
            taken.add(col)
            a.typed = (col, a.typed[1])
            chosen += 1


def translate_indexes(c: Collection, raw: list[dict], sample: list) -> None:
    """ArangoDB indexes -> btree / GIN full-text indexes, or a note of what was not translated."""
    typed = {a.name for a in c.attributes.values() if a.typed}
    for ix in raw:
        kind = str(ix.get("type", "?"))
        fields = [str(f) for f in ix.get("fields") or []]
        if kind in ("primary", "edge"):
            continue  # the table's id/key, and from_id/to_id of an edge table
        i = Index(kind, fields, ix.get("name"), bool(ix.get("unique")))
        c.indexes.append(i)
        shown = f"{kind} index {i.name or ''} on {fields}".replace("  ", " ")
        if kind in _BTREE:
            if not fields or any("[*]" in f for f in fields):
                i.note = "array expansion [*] is not translated (the GIN index on data covers containment)"
            else:
                unique = i.unique and _unique_in(sample, fields)
                i.translated = {"fields": fields, "kind": "btree", "unique": unique}
                i.note = (
                    "unique: no duplicate in the sample; a duplicate at load becomes a reject"
                    if unique
                    else "unique in ArangoDB, but duplicates in the sample: not unique here"
                    if i.unique
                    else ""
                )
                untyped = [f for f in fields if f not in typed and f not in _FIELD_COLUMNS]
                if untyped:
                    i.note = (i.note + "; " if i.note else "") + (
                        f"{', '.join(untyped)} indexed as text (no typed column)"
                    )
        elif kind == "fulltext" and len(fields) == 1:
            i.translated = {"fields": fields, "kind": "fulltext", "unique": False}
            i.note = "GIN full-text index (to_tsvector('simple', ...))"
        else:
            what = {
                "geo": "PostGIS is not assumed; the coordinates stay in data",
                "geo1": "PostGIS is not assumed; the coordinates stay in data",
                "geo2": "PostGIS is not assumed; the coordinates stay in data",
                "ttl": f"PostgreSQL does not expire rows (expireAfter {ix.get('expireAfter', ix.get('expiry_time', '?'))} s)",
            }.get(kind, "no PostgreSQL counterpart chosen")
            i.note = what
            c.not_translated.append(f"{shown}: {what}")


def _unique_in(sample: list, fields: list[str]) -> bool:
    seen = set()
    for doc in sample:
        vals = []
        for f in fields:
            v: Any = doc
            for seg in f.split("."):
                v = v.get(seg) if isinstance(v, dict) else None
            vals.append(None if v is None else str(v))
        if None in vals:
            continue  # PostgreSQL's unique indexes, like sparse ones, let NULLs repeat
        t = tuple(vals)
        if t in seen:
            return False
        seen.add(t)
    return True


def _graphs(source, names: set[str]) -> list[dict]:
    if "_graphs" not in names:
        return []
    out = []
    try:
        for doc in _documents(source, "_graphs"):
            if isinstance(doc, dict):
                defs = doc.get("edgeDefinitions") or []
                out.append({"name": doc.get("_key"), "edge_definitions": defs})
    except Exception as exc:  # noqa: BLE001 - documentation only: say so and go on
        log.warning("could not read _graphs (edge definitions are not documented): %s", exc)
    return out


def open_source(spec: str, settings):
    """The source to discover: like etl.sources.open_source, but a dump also lists its system
    collections (for `_graphs` and --include-system)."""
    kind, _, path = spec.partition(":")
    if kind == "dump" and path:
        from etl.sources.dump import DumpSource

        return DumpSource(path, include_system=True)
    from etl.sources import open_source as plain

    return plain(spec, settings)


def discover(
    source,
    *,
    sample: int = DEFAULT_SAMPLE,
    schema: str = "arango",
    include_system: bool = False,
    seed: int = 0,
) -> Discovery:
    """Read the source's collections, indexes, graphs and a sample of each collection."""
    infos = {c.name: c for c in source.collections()}
    if not hasattr(source, "system_collections") and not include_system:
        infos = {n: c for n, c in infos.items() if not n.startswith("_")}
    system: list[str] = []
    if hasattr(source, "system_collections"):  # live: system collections are listed apart
        system = source.system_collections()
        if include_system:
            for n in system:
                infos.setdefault(n, source.collection(n))
    names = set(infos) | set(system) | {c.name for c in source.collections()}
    graphs = _graphs(source, names)
    skipped = sorted(n for n in names if n.startswith("_") and not include_system)
    tables: set[str] = set()
    out = []
    for name in sorted(n for n in infos if include_system or not n.startswith("_")):
        info = infos[name]
        table = identifier(name)
        if table in tables:  # pragma: no cover - identifier() keeps distinct names apart
            table = identifier(name + "_")
        tables.add(table)
        c = Collection(name, info.type == "edge", info.count, table)
        rng = random.Random(f"{seed}:{name}")
        docs, total = reservoir(_documents(source, name), sample, rng)
        c.count = total
        profile(c, docs)
        translate_indexes(c, _indexes(source, name), docs)
        for g in graphs:
            for d in g["edge_definitions"]:
                if isinstance(d, dict) and d.get("collection") == name:
                    c.from_collections += [
                        x for x in d.get("from", []) if x not in c.from_collections
                    ]
                    c.to_collections += [x for x in d.get("to", []) if x not in c.to_collections]
        log.info("discovered %s: %d documents, %d sampled", name, total, len(docs))
        out.append(c)
    settings = getattr(source, "settings", None)
    return Discovery(
        source.description,
        getattr(source, "database", None) or getattr(settings, "database", None),
        schema,
        sample,
        seed,
        out,
        graphs,
        skipped,
    )


def _indexes(source, name: str) -> list[dict]:
    if hasattr(source, "indexes"):
        return source.indexes(name)
    if hasattr(source, "structure"):
        return source.structure(name)["indexes"]
    return []  # arangoexport files record no indexes
