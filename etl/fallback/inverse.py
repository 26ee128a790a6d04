"""A PostgreSQL row -> the ArangoDB document it stands for: the inverse of etl/transform.py.

A row etl loaded keeps its source document in its provenance (metadata.arango, extra, original,
mapped_from: transform.rebuild_source()); a column the application changed since is written
back at the attribute it came from. A row the application created has no provenance: its
document is built from the mapping's first path of each column, under the key "pg-<row id>"
(transform.row_id() maps such a key back to the same row id). Every document is checked by
transforming it again: it must give the row's columns, or the row is reported as not invertible
instead of being written wrong.

Edges (job_research) live in their research row: metadata.edges holds the edge documents and
the column they set (job_id). A row whose job_id the application changed gets its last edge's
_from moved (the other edges go), a new link gets the edge "pg-<research row id>", an unlink
removes the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etl.mapping import SECTIONS, CollectionMapping, EdgeSpec, Mapping, Target, split_path
from etl.reconcile.compare import TypeSpec
from etl.target import parse_timestamp, referenced_type
from etl.transform import Row, Transformer, rebuild_source, row_id

KEY_PREFIX = "pg-"
SYSTEM = ("_id", "_rev")


class NotInvertible(Exception):
    """A row whose document etl cannot make (reported, never written half right)."""


def key_for(row_id_: str) -> str:
    """The ArangoDB key of a row the application created in PostgreSQL."""
    return KEY_PREFIX + row_id_


@dataclass
class EdgeOp:
    collection: str
    key: str
    doc: dict | None  # None: remove
    expected_rev: str | None


@dataclass
class DocPlan:
    """What one row becomes in ArangoDB."""

    collection: str
    key: str
    doc: dict  # without _id/_rev
    expected_rev: str | None  # the _rev the row's provenance names (None: new in ArangoDB)
    document_type: str
    edges: list[EdgeOp] = field(default_factory=list)
    kept_edges: dict[str, dict] = field(default_factory=dict)  # edges left as they are
    edge_spec: EdgeSpec | None = None


class Keys:
    """Row id -> ArangoDB key of referenced rows: metadata.arango._key, or the key rule for a
    row the application created; None when the row does not exist. Looked up in PostgreSQL
    once per row id (`lookup(document_type, row id)`)."""

    def __init__(self, lookup) -> None:
        self.lookup = lookup
        self.known: dict[str, str | None] = {}

    def key(self, document_type: str, rid: str) -> str:
        k = self.get(document_type, rid)
        return k if k is not None else key_for(rid)  # not there (yet): the rule still names it

    def exists(self, document_type: str, rid: str) -> bool:
        return self.get(document_type, rid) is not None

    def get(self, document_type: str, rid: str) -> str | None:
        if rid not in self.known:
            self.known[rid] = self.lookup(document_type, rid)
        return self.known[rid]


def provenance(md: dict) -> dict:
    """metadata.arango of a row ({} for a row the application created)."""
    a = md.get("arango")
    return a if isinstance(a, dict) else {}


def first_type(mapping: Mapping, collection: str) -> str:
    """The document type of a collection's (first) target."""
    cm = mapping.for_collection(collection)
    if cm is None:
        raise NotInvertible(f"collection {collection} is not in the mapping")
    return cm.targets()[0].document_type


def target_of(mapping: Mapping, document_type: str) -> tuple[CollectionMapping, Any, Any]:
    """(collection mapping, target, route value or None) of a document type."""
    for cm in mapping.collections.values():
        if cm.generic is not None and cm.generic.document_type == document_type:
            return cm, cm.generic, None
        if cm.target is not None and cm.target.document_type == document_type:
            return cm, cm.target, None
        for value, t in (cm.routes or {}).items():
            if t.document_type == document_type:
                return cm, t, value
    raise NotInvertible(f"document type {document_type} is not in the mapping")


def edge_spec_for(mapping: Mapping, document_type: str) -> EdgeSpec | None:
    for cm in mapping.collections.values():
        if cm.edge is not None and cm.edge.to_document_type == document_type:
            return cm.edge
    return None


def _set(doc: dict, path: tuple[str, ...], value: Any) -> None:
    d = doc
    for seg in path[:-1]:
        if not isinstance(d.get(seg), dict):
            d[seg] = {}
        d = d[seg]
    d[path[-1]] = value


def _drop(doc: dict, path: tuple[str, ...]) -> None:
    d: Any = doc
    for seg in path[:-1]:
        d = d.get(seg) if isinstance(d, dict) else None
    if isinstance(d, dict):
        d.pop(path[-1], None)


def _json_ts(iso: str) -> str:
    """A timestamp as ArangoDB documents hold them: ISO 8601 in UTC with Z."""
    s = parse_timestamp(iso) or iso
    return s[:-6] + "Z" if s.endswith("+00:00") else s


class Inverter:
    def __init__(self, mapping: Mapping, specs: dict[str, TypeSpec], run_id: str):
        self.mapping = mapping
        self.specs = specs
        self.transformer = Transformer(mapping, run_id, "1970-01-01T00:00:00+00:00")

    # generic tables -------------------------------------------------------------------
    def _generic(self, cm: CollectionMapping, row: dict) -> DocPlan:
        g = cm.generic
        assert g is not None
        md = row.get("metadata") or {}
        arango = provenance(md)
        if arango and md.get("escaped"):
            doc = rebuild_source(row, self.mapping, g.document_type)
        else:
            doc = {"_key": row["key"], **(row.get("data") or {})}
            if g.edge:
                doc["_from"], doc["_to"] = row["from_ref"], row["to_ref"]
        for k in SYSTEM:
            doc.pop(k, None)
        doc["_key"] = row["key"]
        return DocPlan(g.collection, row["key"], doc, arango.get("_rev"), g.document_type)

    # curated tables -------------------------------------------------------------------
    def identity(self, document_type: str, row: dict) -> tuple[str, str, str | None]:
        """(collection, key, the _rev the row's provenance names) of a row's document."""
        cm, target, _ = target_of(self.mapping, document_type)
        key = target.key_of(row)
        if key:
            return cm.name, key, provenance(row.get("metadata") or {}).get("_rev")
        return cm.name, key_for(row["id"]), None

    def plan(
        self, document_type: str, row: dict, keys: Keys, current: dict | None = None
    ) -> DocPlan:
        """current: the document as ArangoDB holds it, when nobody else changed it there (its
        _rev is the one the row's provenance names, or etl wrote it): the base to patch, so that
        attributes the copy cannot tell apart (an explicit default or none) stay as they are."""
        cm, target, route = target_of(self.mapping, document_type)
        if cm.generic is not None:
            return self._generic(cm, row)
        spec = self.specs[document_type]
        values = dict(row)
        for c in spec.columns:
            if c.kind == "ts" and values.get(c.name) is not None:
                values[c.name] = parse_timestamp(values[c.name])
        md = values.get("metadata") or {}
        arango = provenance(md)
        if current is not None:
            key, expected = current["_key"], current.get("_rev")
            doc = {k: v for k, v in current.items() if k not in SYSTEM}
        elif arango and arango.get("_key"):
            key = arango["_key"]
            # A column holding its table default is taken as absent from the source (the copy
            # keeps no trace of an attribute that held the default explicitly; both give the
            # same row): the document gets no attribute the source most likely did not have.
            doc = rebuild_source(
                {
                    c.name: None if c.has_default and values.get(c.name) == c.default else v
                    for c in spec.columns
                    for v in [values.get(c.name)]
                },
                self.mapping,
                document_type,
            )
            expected = arango.get("_rev")
        else:
            key, expected = key_for(row["id"]), None
            doc = {"_key": key}
            if route is not None and cm.route_on is not None:
                _set(doc, cm.route_on, route)
            for f in target.columns:  # every column at its first path: the transform needs them
                self._patch(doc, target, "column", f, values, {}, keys)
            self._patch(doc, target, "parsed_data", None, values, {}, keys)
        for k in SYSTEM:
            doc.pop(k, None)
        doc["_key"] = key
        mapped_from = md.get("mapped_from") or {}
        edge = edge_spec_for(self.mapping, document_type)
        for _ in range(3):
            diffs = self._diffs(target, spec, cm.name, doc, values, keys, edge)
            if not diffs:
                break
            for what, f in diffs:
                self._patch(doc, target, what, f, values, mapped_from, keys)
        else:
            raise NotInvertible(
                f"{document_type} row {row['id']}: its document does not transform back to it"
                f" ({', '.join(sorted({f if isinstance(f, str) else f.name for _, f in diffs}))})"
            )
        plan = DocPlan(cm.name, key, doc, expected, document_type, edge_spec=edge)
        if edge is not None:
            own = self._own(target, edge, doc)
            edges = md.get("edges") if isinstance(md.get("edges"), dict) else {}
            if edges or not own:  # an own attribute and no edge: the attribute says it all
                self._edges(plan, values, md, keys)
        return plan

    @staticmethod
    def _own(target: Target, edge: EdgeSpec, doc: dict) -> bool:
        """The document has its own attribute for the column the edges set."""
        f = next((f for f in target.references if f.name == edge.sets), None)
        return f is not None and any(len(p) == 1 and doc.get(p[0]) is not None for p in f.paths)

    def _diffs(self, target, spec: TypeSpec, collection, doc, values, keys, edge) -> list:
        out = self.transformer.transform(collection, doc)
        if not isinstance(out, Row) or out.document_type != target.document_type:
            reason = getattr(out, "reason", type(out).__name__)
            raise NotInvertible(f"{target.document_type} row {values['id']}: {reason}")
        got = out.values
        cols = {c.name: c for c in spec.columns}
        diffs: list = []
        for f in target.columns:
            a, b = got.get(f.name), values.get(f.name)
            c = cols.get(f.name)
            if a is None and c is not None and c.has_default:
                a = c.default
            if a != b:
                diffs.append(("column", f))
        own = edge is None or self._own(target, edge, doc)
        refs = reference_types(self.mapping, target.document_type)
        for f in target.references:
            if edge is not None and f.name == edge.sets and not own:
                continue
            a, b = got.get(f.name), values.get(f.name)
            if a == b or (b is None and a is not None and not keys.exists(refs[f.name], a)):
                continue  # equal, or dangling: the raw key stays, as the copy keeps it
            diffs.append(("reference", f))
        if got.get("parsed_data") != values.get("parsed_data"):
            diffs.append(("parsed_data", "parsed_data"))
        return diffs

    def _patch(self, doc, target: Target, what, f, values, mapped_from, keys: Keys) -> None:
        if what == "parsed_data":
            src = mapped_from.get("parsed_data")
            if src == SECTIONS:
                for s in target.sections:
                    doc.pop(s, None)
            if not isinstance(src, str) or src == SECTIONS:
                src = target.parsed_data[0]
            doc[src] = values.get("parsed_data") or {}
            return
        v = values.get(f.name)
        if what == "reference":
            singles = [p for p in f.paths if len(p) == 1]
            for p in singles:
                doc.pop(p[0], None)
            if v is not None:
                rt = reference_types(self.mapping, target.document_type)[f.name]
                doc[singles[0][0]] = keys.key(rt, v)
            return
        if v is None:
            for p in f.paths:
                _drop(doc, p)
            return
        if f.type is not None and f.type.kind == "timestamptz":
            v = _json_ts(v)
        src = mapped_from.get(f.name)
        path = split_path(src) if isinstance(src, str) and src != SECTIONS else f.paths[0]
        if any(path in g.paths for g in target.columns if g is not f):
            path = f.paths[0]  # updated_at read from created_at: write its own attribute
        _set(doc, path, v)
        if path != f.paths[0]:
            _drop(doc, f.paths[0])  # an earlier path would win over the one patched

    def _edges(self, plan: DocPlan, values: dict, md: dict, keys: Keys) -> None:
        edge = plan.edge_spec
        assert edge is not None
        current = md["edges"] if isinstance(md.get("edges"), dict) else {}
        job = values.get(edge.sets)
        job_type = first_type(self.mapping, edge.from_collection)
        items = list(current.items())

        def remove(k: str, e: dict) -> None:
            plan.edges.append(EdgeOp(edge.collection, k, None, e.get("_rev")))

        if job is None:
            for k, e in items:
                remove(k, e)
            return
        if items:
            last_key, last = items[-1]
            _, _, from_key = str(last.get("_from", "")).partition("/")
            if from_key and row_id(edge.from_collection, from_key) == job:
                plan.kept_edges = dict(items)
                return
            for k, e in items[:-1]:
                remove(k, e)
            new = {k: v for k, v in last.items() if k not in SYSTEM and k != "_etl_escaped"}
            new["_from"] = f"{edge.from_collection}/{keys.key(job_type, job)}"
            plan.edges.append(EdgeOp(edge.collection, last_key, new, last.get("_rev")))
            return
        ek = key_for(values["id"])
        new = {
            "_key": ek,
            "_from": f"{edge.from_collection}/{keys.key(job_type, job)}",
            "_to": f"{edge.to_collection}/{plan.key}",
        }
        plan.edges.append(EdgeOp(edge.collection, ek, new, None))


def reference_types(mapping: Mapping, document_type: str) -> dict[str, str]:
    """Reference column -> the document type it points at (for the applier's key lookups)."""
    try:
        _, target, _ = target_of(mapping, document_type)
    except NotInvertible:
        return {}
    out = {}
    for f in getattr(target, "references", ()):
        out[f.name] = referenced_type(f.name) or first_type(mapping, f.collection)
    return out
