"""The one interface the pipeline reads every kind of source through.

A source lists its collections (name, document/edge, count) and streams one collection in
batches in a stable order. Each batch carries `position`: an opaque resume token. After the
loader has committed a batch it stores that token in the checkpoint; passing it back as
`after=` yields exactly the documents that follow. For ArangoDB the token is the batch's last
`_key` (the server decides what follows it; keys are never compared in Python). For files it is
the count of records consumed, in file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

CollectionType = Literal["document", "edge"]


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    type: CollectionType
    count: int


@dataclass(frozen=True, slots=True)
class Batch:
    collection: str
    docs: list[dict]
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

    def batches(
        self, collection: str, batch_size: int, after: str | None = None
    ) -> Iterator[Batch]:
        """Documents after `after` (None = from the start) in batches of at most batch_size."""

    def remaining(self, collection: str, after: str | None = None) -> int:
        """How many documents follow `after`."""

    # Sources that can be read in key ranges (ArangoDB) also have
    #   split_points(collection, parts) -> list[str]   boundaries in the server's own key order
    #   batches(..., until=KEY) and remaining(..., until=KEY)   the range (after, until]
    # Parallel workers split a collection only when the source has split_points.

    def close(self) -> None: ...
