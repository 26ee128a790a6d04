"""`etl fallback`: the way back after cutover (docs/sync.md)."""
