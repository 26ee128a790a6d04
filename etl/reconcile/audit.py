"""What a reconcile run records in the database besides its etl_runs row's state: the summary
jsonb for etl_runs ({collection: {status, differences, ...}}, shown by `etl status`) and the
document_audit_log entries (action 'reconcile'): one per collection and document type
(document_id = NIL_UUID, the counts in `changes`) and one per finding (document_id = the row id).
A generic table's document type is its schema-qualified name (arango.users), which sql/008's
check on document_type allows."""

from __future__ import annotations

from psycopg import sql

from etl import jsonutil
from etl.reconcile.results import ReconcileSummary
from etl.target import AUDIT_TABLE

NIL_UUID = "00000000-0000-0000-0000-000000000000"


def run_summary(summary: ReconcileSummary) -> dict:
    out = {}
    for c in summary.collections:
        out[c.collection] = {
            "status": c.status,
            "differences": c.differences,
            "missing": len(c.missing),
            "extra": len(c.extra),
            "differing": len(c.differing),
            "balanced": c.balanced,
            "source_count": c.source_count,
            "checked": c.checked,
            "loaded": c.loaded,
            "rejected": c.rejected,
            "unmapped": c.unmapped,
            "sample_percent": summary.sample_percent,
        }
    return out


def write_audit(conn, run_id: str, summary: ReconcileSummary) -> None:
    rows = []
    for c in summary.collections:
        if c.kind == "unmapped":
            continue  # no document type, no table: reported in etl_runs and the report only
        for dt, tc in c.by_type.items():
            rows.append(
                (
                    dt,
                    NIL_UUID,
                    "reconcile",
                    jsonutil.dumps_str(
                        {
                            "summary": True,
                            "collection": c.collection,
                            "status": c.status,
                            "differences": c.differences,
                            "sample_percent": summary.sample_percent,
                            "balanced": c.balanced,
                            **tc.asdict(),
                        }
                    ),
                    run_id,
                )
            )
        for kind, items in (("missing", c.missing), ("extra", c.extra), ("differing", c.differing)):
            for it in items:
                rows.append(
                    (
                        it["document_type"],
                        it["id"],
                        "reconcile",
                        jsonutil.dumps_str(
                            {
                                "finding": kind,
                                "collection": c.collection,
                                **{k: v for k, v in it.items() if k != "id"},
                            }
                        ),
                        run_id,
                    )
                )
    if not rows:
        return
    copy_sql = sql.SQL(
        "copy {} (document_type, document_id, action, changes, run_id) from stdin"
    ).format(sql.Identifier(AUDIT_TABLE))
    with conn.cursor().copy(copy_sql) as copy:
        for r in rows:
            copy.write_row(r)
