"""Change capture: follow ArangoDB's write-ahead log after the bulk copy (etl sync, etl cutover)."""
