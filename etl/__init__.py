"""etl: migrate ATSPro documents from ArangoDB into PostgreSQL JSONB tables, and prove nothing was lost.

Pipeline, one module a stage:
    settings -> sources (arango | dump | jsonl) -> transform (mapping) -> load -> reconcile -> report
with cli as a thin layer over them.
"""

__version__ = "0.1.0"
