"""Source documents that are not rows: the reject store's keys (etl_rejects), the count of
rejected and unmapped documents, and the finding for one that is neither loaded nor kept."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from etl import state
from etl.mapping import CollectionMapping, Target
from etl.target import ident
from etl.target import table as table_of
from etl.transform import Reject, Unmapped, row_id

LOAD_REFUSED = "refused by the database at load time (etl_rejects)"  # the reject reason counted


def recorded_keys(conn, collection: str) -> set[str]:
    """Keys of the collection in the reject store (any stage, any run)."""
    keys = {
        k
        for (k,) in conn.execute(
            "select distinct key from etl_rejects where collection = %s and key is not null",
            (collection,),
        )
    }
    conn.commit()
    return keys


def load_rejected_keys(conn, collection: str, cm: CollectionMapping) -> set[str]:
    """Keys of the collection the database refused at load time and that are not in the target."""
    tables = sorted({t.table for t in cm.targets()})
    cond = (
        sql.SQL(" and ").join(
            sql.SQL(
                "not exists (select 1 from {} x where x.metadata -> 'arango' ->> 'collection' = r.collection"
                " and x.metadata -> 'arango' ->> '_key' = r.key)"
            ).format(ident(t))
            for t in tables
        )
        if tables
        else sql.SQL("true")
    )
    keys = {
        k
        for (k,) in conn.execute(
            sql.SQL(
                "select distinct r.key from etl_rejects r where r.collection = %s and r.stage = 'load'"
                " and r.key is not null and {}"
            ).format(cond),
            (collection,),
        )
    }
    conn.commit()
    return keys


def target_of(cm: CollectionMapping, doc: dict) -> Target | None:
    """The target (document type) a document of the collection maps to; None: unmapped."""
    if cm.target is not None:
        return cm.target
    v: Any = doc
    for seg in cm.route_on or ():
        v = v.get(seg) if isinstance(v, dict) else None
    return (cm.routes or {}).get(v) if isinstance(v, str) else None


def count_not_a_row(
    collection: str,
    cm: CollectionMapping,
    doc: Any,
    out: Reject | Unmapped,
    recorded: set[str],
    into: Any,
) -> None:
    """Count a rejected or unmapped source document in `into` (anything with rejected,
    reject_reasons, unmapped and missing: a pass-1 part or a CollectionReconcile); it must be
    in etl_rejects."""
    if isinstance(out, Reject):
        reason = out.reason.split(":", 1)[0]
        into.rejected += 1
        into.reject_reasons[reason] += 1
        what = f"rejected ({reason})"
    else:
        into.unmapped += 1
        what = "unmapped"
    unrecorded(collection, cm, doc, out.key, what, recorded, into.missing)


def unrecorded(
    collection: str,
    cm: CollectionMapping,
    doc: Any,
    key: str | None,
    what: str,
    recorded: set[str],
    missing: list[dict],
) -> None:
    """A source document that is not a row must be in etl_rejects; else it was lost."""
    if key is None or state.db_text(key) in recorded:  # a key with U+0000 is stored escaped
        return
    if cm.edge is not None:
        dt = cm.edge.to_document_type
    else:
        t = target_of(cm, doc) if isinstance(doc, dict) else None
        dt = t.document_type if t is not None else cm.targets()[0].document_type
    missing.append(
        {
            "key": key,
            "id": row_id(collection, key),
            "document_type": dt,
            "table": table_of(dt),
            "source": f"{what}, and not in etl_rejects: neither loaded nor kept",
        }
    )
