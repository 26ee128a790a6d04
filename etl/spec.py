"""What the operator asked of a migrate run, as one frozen typed value. It is persisted with
the run (etl_runs.options, JSON) and read back by `etl migrate --resume` and by every parallel
worker (`etl worker --run ID`), so that they load exactly what the run was started with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MigrateSpec:
    collections: tuple[str, ...] = ()
    source_spec: str = "arangodb"  # arangodb | dump:PATH | jsonl:PATH
    batch_size: int | None = None
    limit: int | None = None  # --limit (trials)
    since_key: str | None = None  # --since-key (trials)
    mapping: str | None = None  # the mapping file the run loaded
    workers: int | None = None  # --workers N (a parallel run)

    def to_options(self) -> dict[str, Any]:
        """The JSON etl_runs.options keeps (the same keys as before the spec existed)."""
        out: dict[str, Any] = {
            "collections": list(self.collections),
            "source_spec": self.source_spec,
            "batch_size": self.batch_size,
            "limit": self.limit,
            "since_key": self.since_key,
            "mapping": self.mapping,
        }
        if self.workers is not None:
            out["workers"] = self.workers
        return out

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> MigrateSpec:
        o = options or {}
        return cls(
            collections=tuple(o.get("collections") or ()),
            source_spec=o.get("source_spec") or "arangodb",
            batch_size=o.get("batch_size"),
            limit=o.get("limit"),
            since_key=o.get("since_key"),
            mapping=o.get("mapping"),
            workers=o.get("workers"),
        )
