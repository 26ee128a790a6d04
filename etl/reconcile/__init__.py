"""`etl reconcile`: prove the target holds exactly what the source says, and name every difference.

Per collection, source count = loaded + rejected + unmapped; every source document is
transformed again and its compare object digested, and the server digests the stored row the
same way; (count, digest sum) per bucket of row ids settles equal buckets, and a drill-down
names the missing, extra and differing keys in the others (fields and JSON paths).

  run.py        Reconciliation: the run's lifecycle, collection by collection
  documents.py  document collections    edges.py     the job_research edges
  compare.py    the compare object      buckets.py   bucket sums and drill-down SQL
  workers.py    key ranges, forked      rejects.py   documents that are not rows
  context.py    state the checks share  results.py   the result data
  audit.py      etl_runs summary, document_audit_log    report.py  the reports
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
