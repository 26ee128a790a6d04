"""ArangoDB's side of an `etl fallback` batch: the reads by key, the decision per document (write,
leave, or conflict) and the writes, one request per collection and kind."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from etl.errors import TransientError
from etl.sources.arango import read_documents

log = logging.getLogger("etl.fallback")

_SKIP = ("_id", "_rev")


@dataclass
class Ops:
    """Writes queued for one batch, by collection; stored: (collection, key) -> document."""

    insert: dict[str, list[dict]] = field(default_factory=dict)
    replace: dict[str, list[dict]] = field(default_factory=dict)
    remove: dict[str, list[str]] = field(default_factory=dict)
    stored: dict[tuple[str, str], dict] = field(default_factory=dict)


@dataclass
class BatchResult:
    changes: int = 0  # captured changes consumed
    more: bool = False  # committed or running changes left after this batch
    applied: Counter = field(default_factory=Counter)  # (collection, operation) -> n
    conflicts: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lag_seconds: list[float] = field(default_factory=list)  # changed_at -> applied, per change


def _body(doc: dict | None) -> dict | None:
    return None if doc is None else {k: v for k, v in doc.items() if k not in _SKIP}


class ArangoWriter:
    def __init__(self, db: Any, *, retry: Any, on_conflict: str):
        self.db = db  # python-arango StandardDatabase
        self.retry = retry
        self.on_conflict = on_conflict
        # keys a batch committed as about to write before a crash: etl's own writes
        self.inflight: set[tuple[str, str]] = set()

    def get_many(self, keys: dict[str, set[str]], into: dict) -> None:
        for collection, ks in keys.items():
            ks = {k for k in ks if (collection, k) not in into}
            if not ks:
                continue
            for k in ks:
                into[(collection, k)] = None
            for k, d in read_documents(self.db, collection, sorted(ks), self.retry).items():
                into[(collection, k)] = d

    def decide(
        self, ops: Ops, collection: str, key: str, doc: dict | None, expected: str | None,
        cur: dict | None, out: BatchResult,
    ) -> None:  # fmt: skip
        """Queue what makes collection/key hold doc (None: not exist). The current document
        already holding it: nothing to write; its _rev not the expected one: a conflict."""
        if doc is None:
            if cur is None:
                out.applied[(collection, "unchanged")] += 1
                return
            if (
                expected is not None
                and cur["_rev"] != expected
                and (collection, key) not in self.inflight
            ):
                self.conflict(out, collection, key, "remove", expected, cur)
                if self.on_conflict != "overwrite":
                    return
            ops.remove.setdefault(collection, []).append(key)
            out.applied[(collection, "remove")] += 1
            return
        if cur is not None and _body(cur) == doc:
            ops.stored[(collection, key)] = cur
            out.applied[(collection, "unchanged")] += 1
            return
        ok = (
            (cur is None and expected is None)
            or (cur is not None and cur["_rev"] == expected)
            or (collection, key) in self.inflight  # etl's own write, before a crash
        )
        if not ok:
            self.conflict(out, collection, key, "write", expected, cur)
            if self.on_conflict != "overwrite":
                return
        kind = "insert" if cur is None else "update"
        (ops.insert if cur is None else ops.replace).setdefault(collection, []).append(doc)
        out.applied[(collection, kind)] += 1

    def run(self, ops: Ops) -> None:
        """The queued writes; ops.stored gets each written document with its _id and _rev."""
        for kind, by in (("insert", ops.insert), ("replace", ops.replace)):
            for collection, docs in by.items():
                col = self.db.collection(collection)
                if kind == "insert":
                    res = self.retry(
                        f"insert into {collection}",
                        lambda col=col, docs=docs: col.insert_many(docs),
                    )
                else:
                    res = self.retry(
                        f"replace in {collection}",
                        lambda col=col, docs=docs: col.replace_many(docs, check_rev=False),
                    )
                for d, r in zip(docs, res):
                    if isinstance(r, Exception):
                        raise TransientError(f"{kind} {collection}/{d['_key']} failed: {r}")
                    ops.stored[(collection, d["_key"])] = {**d, "_id": r["_id"], "_rev": r["_rev"]}
        for collection, keys in ops.remove.items():
            col = self.db.collection(collection)
            res = self.retry(
                f"remove from {collection}",
                lambda col=col, keys=keys: col.delete_many(keys, check_rev=False),
            )
            for k, r in zip(keys, res):
                if isinstance(r, Exception) and getattr(r, "error_code", None) != 1202:
                    raise TransientError(f"remove {collection}/{k} failed: {r}")

    def conflict(self, out, collection, key, operation, expected, cur) -> None:
        out.conflicts.append(
            {
                "collection": collection,
                "key": key,
                "operation": operation,
                "expected_rev": expected,
                "found_rev": None if cur is None else cur.get("_rev"),
                "overwritten": self.on_conflict == "overwrite",
            }
        )
        out.applied[(collection, "conflict")] += 1
