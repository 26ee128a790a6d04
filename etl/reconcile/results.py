"""What a reconcile run finds: counts per document type, per collection, and the run's summary
(the shape of the .json report). Plain data; nothing here reads the source or the database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from etl.summary import Summary, now_iso

utc_now = now_iso  # the one clock of every run's summary


@dataclass
class TypeCounts:
    source_rows: int = 0  # source documents that become a row of this type (checked ones)
    loaded: int = 0  # rows the target holds for them (same buckets)
    rejected: int = 0  # refused by the database at load time (etl_rejects stage 'load')
    matched: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    buckets: int = 0
    buckets_differing: int = 0

    def asdict(self) -> dict:
        return dict(vars(self))


NOT_IN_SOURCE = "not in source"  # the status of a collection --allow-missing left unread


@dataclass
class CollectionReconcile:
    collection: str
    kind: str = "document"  # document | edge | unmapped | missing
    status: str = "pending"  # match | differences | unmapped | not in source | failed | pending
    source_count: int = 0
    checked: int = 0  # source documents examined (all, or the sampled keys)
    loaded: int = 0
    rejected: int = 0
    unmapped: int = 0
    by_type: dict[str, TypeCounts] = field(default_factory=lambda: defaultdict(TypeCounts))
    missing: list[dict] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)
    differing: list[dict] = field(default_factory=list)
    dangling: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # generic edges: ends the target does not hold (etl.results.record_edge_ends)
    dangling_edges: list[dict] = field(default_factory=list)
    unknown_end_collections: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reject_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0

    @property
    def balanced(self) -> bool:
        return self.checked == self.loaded + self.rejected + self.unmapped

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.differing)

    def asdict(self) -> dict:
        return {
            "collection": self.collection,
            "kind": self.kind,
            "status": self.status,
            "source_count": self.source_count,
            "checked": self.checked,
            "counts": {"loaded": self.loaded, "rejected": self.rejected, "unmapped": self.unmapped},
            "balanced": self.balanced,
            "differences": self.differences,
            "by_type": {k: v.asdict() for k, v in self.by_type.items()},
            "missing": self.missing,
            "extra": self.extra,
            "differing": self.differing,
            "dangling_references": dict(self.dangling),
            "dangling_edges": self.dangling_edges,
            "unknown_end_collections": dict(self.unknown_end_collections),
            "rejects_by_reason": dict(sorted(self.reject_reasons.items(), key=lambda kv: -kv[1])),
            "seconds": round(self.seconds, 3),
        }


@dataclass(kw_only=True)
class ReconcileSummary(Summary):
    """A reconcile run's summary: the common header and, per collection, what it found."""

    command: str = "reconcile"
    schema_version: str | None = None
    server_version: str | None = None
    mapping_version: str | None = None
    sample_percent: float | None = None
    sample_seed: int | None = None
    buckets_total: int = 0
    buckets_checked: int = 0
    collections: list[CollectionReconcile] = field(default_factory=list)

    @property
    def has_differences(self) -> bool:
        return any(c.differences or not c.balanced for c in self.collections)

    @property
    def not_read(self) -> list[str]:
        """Collections the source did not have (--allow-missing): never a match."""
        return [c.collection for c in self.collections if c.status == NOT_IN_SOURCE]

    def body(self) -> dict:
        return {
            "dry_run": False,
            "schema_version": self.schema_version,
            "server_version": self.server_version,
            "mapping_version": self.mapping_version,
            "sample": (
                {
                    "percent": self.sample_percent,
                    "seed": self.sample_seed,
                    "buckets_checked": self.buckets_checked,
                    "buckets_total": self.buckets_total,
                }
                if self.sample_percent is not None
                else None
            ),
            "has_differences": self.has_differences,
            "not_in_source": self.not_read,
            "verdict": verdict_of(
                self.state, self.has_differences, self.not_read, self.sample_percent
            ),
            "collections": [c.asdict() for c in self.collections],
        }

    def row(self) -> dict:
        from etl.reconcile.audit import run_summary  # audit reads this module

        return run_summary(self)


def verdict_of(
    state: str, has_differences: bool, not_read: list[str], sample_percent: float | None
) -> str:
    """The one-phrase result of a reconcile: never a match for what was not compared (a run that
    did not finish, a collection the source lacks, the keys a sample left out)."""
    if state != "finished":
        return f"{state}, no verdict (not every collection was compared)"
    if has_differences:
        return "differences found"
    what = "everything matches"
    if sample_percent is not None:
        what = f"the sampled {sample_percent:g}% of the keys match (sampled, not every key)"
    if not_read:
        what += f"; NOT CHECKED, not in the source: {', '.join(not_read)}"
    return what
