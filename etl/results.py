"""What a migrate run found, per collection and in total: the model behind its reports and its
etl_runs summary. The pipeline fills it; the reports and `etl status` read it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from etl.state import Counts
from etl.summary import Summary, now_iso  # noqa: F401 - now_iso: many modules take it from here

EXAMPLES_PER_REASON = 5
MAX_LISTED = 1000  # keys listed per collection (unmapped keys, dangling edges)


@dataclass
class CollectionResult:
    collection: str
    status: str = "pending"  # migrated | unmapped | interrupted | failed | pending
    source_count: int = 0
    counts: Counts = field(default_factory=Counts)
    by_type: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    batches: int = 0
    seconds: float = 0.0
    nbytes: int = 0
    reject_reasons: Counter = field(default_factory=Counter)
    reject_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unmapped_reasons: Counter = field(default_factory=Counter)
    unmapped_keys: list[str] = field(default_factory=list)
    dangling: Counter = field(default_factory=Counter)
    # generic edges: ends the target does not hold ({key, end, ref, problem}, the first
    # MAX_LISTED), and ends whose collection is not migrated, per collection
    dangling_edges: list[dict] = field(default_factory=list)
    unknown_end_collections: Counter = field(default_factory=Counter)
    columns_filled: Counter = field(default_factory=Counter)
    extra_fields: Counter = field(default_factory=Counter)
    batch_stats: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def asdict(self) -> dict:
        loaded = self.counts.loaded
        return {
            "collection": self.collection,
            "status": self.status,
            "source_count": self.source_count,
            "counts": self.counts.asdict(),
            # None while the collection is incomplete (interrupted, failed, not reached)
            "balanced": (
                self.source_count == loaded + self.counts.rejected + self.counts.unmapped
                if self.status in ("migrated", "unmapped")
                else None
            ),
            "by_type": {k: v.asdict() for k, v in self.by_type.items()},
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "bytes": self.nbytes,
            "docs_per_second": round(self.counts.read / self.seconds, 1) if self.seconds else None,
            "rejects_by_reason": [
                {"reason": r, "count": n, "examples": self.reject_examples.get(r, [])}
                for r, n in self.reject_reasons.most_common()
            ],
            "unmapped_by_reason": [
                {"reason": r, "count": n} for r, n in self.unmapped_reasons.most_common()
            ],
            "unmapped_keys": self.unmapped_keys,
            "dangling_references": dict(self.dangling),
            "dangling_edges": self.dangling_edges,
            "unknown_end_collections": dict(self.unknown_end_collections),
            "field_coverage": {
                "columns_filled": dict(self.columns_filled),
                "kept_in_metadata_extra": dict(self.extra_fields),
            },
            "batch_stats": self.batch_stats,
            "warnings": self.warnings,
        }


@dataclass(kw_only=True)
class RunSummary(Summary):
    """A migrate run's summary: the common header and, per collection, what it found."""

    command: str = "migrate"
    dry_run: bool = False
    schema_version: str | None = None
    server_version: str | None = None
    mapping_version: str | None = None
    batch_size: int = 0
    collections: list[CollectionResult] = field(default_factory=list)
    estimated_seconds: float | None = None
    index_builds: list[dict] = field(default_factory=list)

    @property
    def has_findings(self) -> bool:
        return any(c.counts.rejected for c in self.collections)

    def body(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "schema_version": self.schema_version,
            "server_version": self.server_version,
            "mapping_version": self.mapping_version,
            "batch_size": self.batch_size,
            "estimated_seconds": self.estimated_seconds,
            "index_builds": self.index_builds,
            "collections": [c.asdict() for c in self.collections],
        }

    def row(self) -> dict:
        return summary_counts(self)


def count_relinked(result: CollectionResult, linked: dict[str, int]) -> None:
    """Links set after the fact are no longer dangling."""
    for document_type, n in linked.items():
        result.counts.dangling -= n
        result.by_type[document_type].dangling -= n


def record_edge_ends(result, ends: list[dict]) -> None:
    """Ends of generic edges the target does not hold (etl.generic.load.edge_ends), into a
    CollectionResult or a reconcile's CollectionReconcile: a dangling end counts under its
    column (from_id, to_id) and is listed; an end whose collection is not migrated counts
    under that collection and is listed too."""
    for e in ends:
        if e["problem"] == "dangling":
            result.dangling["from_id" if e["end"] == "_from" else "to_id"] += 1
        else:
            result.unknown_end_collections[e["ref"].split("/", 1)[0]] += 1
        if len(result.dangling_edges) < MAX_LISTED:
            result.dangling_edges.append(e)


def record_findings(result: CollectionResult, rejects) -> None:
    for _col, key, _doc, reason, stage in rejects:
        if stage == "unmapped":
            result.unmapped_reasons[reason] += 1
            if len(result.unmapped_keys) < MAX_LISTED:
                result.unmapped_keys.append(key)
        else:
            code = reason.split(":", 1)[0]
            result.reject_reasons[code] += 1
            examples = result.reject_examples[code]
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append(f"{key}: {reason}")


def rate(summary: RunSummary) -> float:
    docs = sum(c.counts.read for c in summary.collections)
    secs = sum(c.seconds for c in summary.collections)
    return docs / secs if secs else 0.0


def summary_counts(summary: RunSummary) -> dict:
    return {
        c.collection: {"status": c.status, "source_count": c.source_count, **c.counts.asdict()}
        for c in summary.collections
    }
