"""The Source protocol every kind of source is read through: its collections, then one collection
in batches in a stable order. A batch's `position` is an opaque resume token (ArangoDB: the last
`_key`; files: records consumed): `after=` it yields what follows, and `split_points` gives the
bounds of ranges (after, until] that read the collection exactly once, for parallel workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

CollectionType = Literal["document", "edge"]


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    type: CollectionType
    count: int


@dataclass(frozen=True, slots=True)
class Batch:
    collection: str
    docs: list[dict[str, Any]]
    position: str  # resume token after this batch
    nbytes: int = 0  # bytes read for this batch (throughput in MB/s)
    warnings: tuple[str, ...] = field(default=())


@runtime_checkable
class Source(Protocol):
    description: str  # for logs and reports; never contains a secret

    def collections(self) -> list[CollectionInfo]:
        """Every non-system collection."""

    def collection(self, name: str) -> CollectionInfo:
        """One collection; PermanentError naming the existing ones when it does not exist."""

    def split_points(self, collection: str, parts: int) -> list[str]:
        """At most parts - 1 positions cutting the collection into ranges of about equal size:
        range i is (points[i-1], points[i]]. [] = one range (a source that cannot seek)."""

    def batches(
        self,
        collection: str,
        batch_size: int,
        after: str | None = None,
        until: str | None = None,
        max_bytes: int | None = None,
    ) -> Iterator[Batch]:
        """Documents after `after` (None: from the start) up to and including `until` (None: to
        the end), in batches of at most batch_size; with max_bytes, a batch also ends once it
        has read that many bytes of source (at least one document per batch)."""

    def remaining(self, collection: str, after: str | None = None, until: str | None = None) -> int:
        """How many documents batches(collection, n, after, until) yields."""

    def close(self) -> None: ...
