"""What the checks of one reconcile run share: the mapping, the connection, the source reader,
the type specs, the sampled buckets, and what earlier checks learnt (ids of the rows that exist
per document type, masked columns per table)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from etl.mapping import Mapping
from etl.reconcile.buckets import N_BUCKETS
from etl.reconcile.compare import TypeSpec
from etl.reconcile.results import utc_now
from etl.reconcile.workers import CollectionReader
from etl.transform import Transformer


@dataclass
class CheckContext:
    mapping: Mapping
    run_id: str
    conn: psycopg.Connection  # the run's connection (a worker process never uses it)
    reader: CollectionReader
    specs: dict[str, TypeSpec]
    sampled: set[int] | None  # the buckets checked; None: all
    # ids (16 bytes) of the source documents that are rows in the target, per document type
    exists: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    exists_done: set[str] = field(default_factory=set)  # collections whose ids are in exists
    # table -> columns compared as DEFAULT_MARK for some rows
    masked: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # (row id, column) pairs behind `masked`, loaded by compare.load_masks() into each
    # transaction that needs them
    masks: set[tuple[str, str]] = field(default_factory=set)

    @property
    def checked_buckets(self) -> Iterable[int]:
        return self.sampled if self.sampled is not None else range(N_BUCKETS)

    @property
    def n_checked_buckets(self) -> int:
        return len(self.sampled) if self.sampled is not None else N_BUCKETS

    def transformer(self) -> Transformer:
        return Transformer(self.mapping, self.run_id, utc_now())

    def add_exists(self, ids: dict[str, bytearray]) -> None:
        """Add 16-byte ids per document type (a pass-1 part's ids) to exists; clears `ids`."""
        for dt, packed in ids.items():
            self.exists[dt].update(bytes(packed[i : i + 16]) for i in range(0, len(packed), 16))
        ids.clear()
