"""A document of a generic collection -> its row: id, key, data (the document without its
system attributes), metadata (provenance), and for edges the verbatim _from/_to with their
row ids. Pure; called by etl.transform.Transformer."""

from __future__ import annotations

from typing import Any

from etl.generic.spec import GenericTarget

SYSTEM_ATTRS = ("_key", "_id", "_rev", "_from", "_to")


def edge_problem(doc: dict) -> str | None:
    """The reject reason of an edge whose _from or _to is not "<collection>/<key>"."""
    for attr, code in (("_from", "edge_bad_from"), ("_to", "edge_bad_to")):
        v = doc.get(attr)
        if not isinstance(v, str) or not v.partition("/")[0] or not v.partition("/")[2]:
            from etl.privacy import shown

            # a string is a document id (shown as keys are); anything else may be data
            what = repr(v)[:57] if isinstance(v, str) else shown(v)
            return f"{code}: {attr} is {what}, not '<collection>/<key>'"
    return None


def values(
    target: GenericTarget,
    key: str,
    doc: dict,
    escaped: list | None,
    etl: dict[str, Any],
    row_id,
) -> dict[str, Any]:
    """The row's column values (jsonb columns as Python objects)."""
    # _id and _rev are provenance when they are what ArangoDB writes (strings); _from and _to
    # are system attributes of edges only. Anything else stays in data, so nothing is lost.
    system = {k: doc[k] for k in ("_id", "_rev") if isinstance(doc.get(k), str)}
    drop = {"_key", *system, *(("_from", "_to") if target.edge else ())}
    metadata: dict[str, Any] = {
        "source": "arangodb",
        "arango": {
            "collection": target.collection,
            "_key": key,
            "_id": system.get("_id"),
            "_rev": system.get("_rev"),
        },
        "etl": etl,
    }
    if escaped:
        metadata["escaped"] = escaped
    out: dict[str, Any] = {
        "id": row_id(target.collection, key),
        "key": key,
        "data": {k: v for k, v in doc.items() if k not in drop},
        "metadata": metadata,
    }
    if target.edge:
        f, t = doc["_from"], doc["_to"]
        out.update(
            from_ref=f,
            to_ref=t,
            from_id=row_id(*f.split("/", 1)),
            to_id=row_id(*t.split("/", 1)),
        )
    return out


def rebuild(values_: dict) -> dict:
    """The source document of a generic row (before the string policies' escapes)."""
    md = values_["metadata"]["arango"]
    doc: dict[str, Any] = {"_key": values_["key"]}
    for k in ("_id", "_rev"):
        if md.get(k) is not None:
            doc[k] = md[k]
    if values_.get("from_ref") is not None:
        doc["_from"], doc["_to"] = values_["from_ref"], values_["to_ref"]
    doc.update(values_["data"])
    return doc
