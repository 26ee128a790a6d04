"""`etl reconcile`: prove the target holds exactly what the source says, and name every difference.

Source count = loaded + rejected + unmapped per collection; each row's compare object is digested
on both sides and summed per bucket of row ids; mismatching buckets are drilled into, down to
missing, extra and differing keys with their fields and JSON paths. Modules: run (Reconciliation,
the run's lifecycle), documents and edges (the two checks), compare (the compare object),
buckets (bucket sums, drill-down SQL), workers (key ranges in forked processes), rejects
(documents that are not rows), context (what checks share), results, audit (etl_runs summary,
document_audit_log), report. This module re-exports the public API.
"""

from etl.reconcile.audit import NIL_UUID
from etl.reconcile.buckets import BUCKET_HEX, N_BUCKETS, bucket_of, bucket_ranges
from etl.reconcile.compare import DEFAULT_MARK, MAX_PATHS, diff_paths, ts_text
from etl.reconcile.report import (
    TERMINAL_FINDINGS,
    findings,
    render_markdown,
    render_table,
    write_reports,
)
from etl.reconcile.results import CollectionReconcile, ReconcileSummary, TypeCounts
from etl.reconcile.run import Reconciliation
from etl.reconcile.workers import RANGE_MIN_DOCS

__all__ = [
    "BUCKET_HEX",
    "DEFAULT_MARK",
    "MAX_PATHS",
    "N_BUCKETS",
    "NIL_UUID",
    "RANGE_MIN_DOCS",
    "TERMINAL_FINDINGS",
    "CollectionReconcile",
    "ReconcileSummary",
    "Reconciliation",
    "TypeCounts",
    "bucket_of",
    "bucket_ranges",
    "diff_paths",
    "findings",
    "render_markdown",
    "render_table",
    "ts_text",
    "write_reports",
]
