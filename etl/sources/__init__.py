"""Sources: ArangoDB over HTTP, arangodump directories, arangoexport JSONL files."""

from __future__ import annotations

from etl.errors import ConfigError
from etl.sources.base import Batch, CollectionInfo, Source

__all__ = ["Batch", "CollectionInfo", "Source", "open_source"]


def open_source(spec: str, settings) -> Source:
    """`arangodb` (default), `dump:PATH` or `jsonl:PATH`."""
    kind, _, path = spec.partition(":")
    migrate = getattr(settings, "migrate", None)  # tests open files without settings
    allow_truncated = bool(migrate and migrate.allow_truncated)
    if kind == "arangodb" and not path:
        from etl.sources.arango import ArangoSource

        return ArangoSource(settings.arango)
    if kind == "dump" and path:
        from etl.sources.dump import DumpSource

        return DumpSource(path, allow_truncated=allow_truncated)
    if kind == "jsonl" and path:
        from etl.sources.jsonl import JsonlSource

        return JsonlSource(path, allow_truncated=allow_truncated)
    raise ConfigError(f"--source {spec!r}: expected 'arangodb', 'dump:PATH' or 'jsonl:PATH'")
