"""WAL markers in, committed changes out, in commit order (arangodb-wal.md §3.4): single
operations (tid "0") at once, a transaction's operations at its commit marker, nothing of an
aborted one. Markers of other databases are dropped; collections are named by their cuid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from etl.errors import PermanentError
from etl.sources import wal


@dataclass(frozen=True)
class Change:
    tick: int  # when it became visible: its marker's, or its transaction's commit marker's
    collection: str
    key: str
    doc: dict[str, Any] | None  # the whole new document; None: removed


@dataclass(frozen=True)
class CollectionEvent:
    """A collection drop, truncate or rename (DDL the follower must not pass silently)."""

    tick: int
    type: int
    collection: str
    new_name: str | None = None

    @property
    def what(self) -> str:
        return {
            wal.COLLECTION_DROP: "dropped",
            wal.COLLECTION_TRUNCATE: "truncated",
            wal.COLLECTION_RENAME: f"renamed to {self.new_name!r}",
        }[self.type]


class ChangeStream:
    def __init__(self, database: str, names: dict[str, str], refresh: Callable[[], dict[str, str]]):
        self.database = database
        self.names = dict(names)  # cuid -> collection name
        self._refresh = refresh
        self._open: dict[str, list[Change]] = {}  # tid -> its operations so far
        self.aborted = 0
        self.ignored = 0  # markers of other kinds (index, view, collection change)

    @property
    def buffered(self) -> bool:
        """A transaction is open: the position must not be saved here (spec §4.5)."""
        return bool(self._open)

    def reset(self) -> None:
        """Forget open transactions (a new tail from a saved, quiescent position)."""
        self._open.clear()

    def name_of(self, cuid: str | None, doc: dict[str, Any] | None = None) -> str | None:
        if not cuid:
            return None
        name = self.names.get(cuid)
        if name is None:  # a collection created since: known names are kept (renames)
            for known, current in self._refresh().items():
                self.names.setdefault(known, current)
            name = self.names.get(cuid)
        if name is None and doc is not None and isinstance(doc.get("_id"), str):
            name = doc["_id"].partition("/")[0]  # a 2300's _id has the current name
        return name

    def feed(self, markers: list[dict[str, Any]]) -> list[Change | CollectionEvent]:
        out: list[Change | CollectionEvent] = []
        for m in markers:
            if not isinstance(m, dict) or m.get("db", self.database) != self.database:
                continue
            t = m.get("type")
            tid = str(m.get("tid", "0"))
            tick = int(m.get("tick", 0))
            if t == wal.TRX_START:
                self._open.setdefault(tid, [])
            elif t == wal.TRX_COMMIT:  # its operations become visible at the commit's tick
                out.extend(replace(c, tick=tick) for c in self._open.pop(tid, []))
            elif t == wal.TRX_ABORT:
                if self._open.pop(tid, None) is not None:
                    self.aborted += 1
            elif t in (wal.DOCUMENT, wal.EDGE_OLD, wal.REMOVE):
                change = self._change(m, t, tick)
                if change is None:
                    continue
                if tid == "0":
                    out.append(change)
                elif tid in self._open:
                    self._open[tid].append(change)
                else:
                    raise PermanentError(
                        f"WAL marker at tick {tick} belongs to transaction {tid}, whose start "
                        "was not read (a position saved inside a transaction?)",
                        hint="restart `etl sync`: it resumes from the last position saved "
                        "between transactions",
                    )
            elif t == wal.COLLECTION_CREATE:
                data = m.get("data") or {}
                if data.get("globallyUniqueId") and data.get("name"):
                    self.names[str(data["globallyUniqueId"])] = data["name"]
            elif t in (wal.COLLECTION_DROP, wal.COLLECTION_TRUNCATE, wal.COLLECTION_RENAME):
                cuid = str(m.get("cuid") or "")
                name = self.name_of(cuid)
                new = (m.get("data") or {}).get("name") if t == wal.COLLECTION_RENAME else None
                if name is not None:
                    out.append(CollectionEvent(tick, t, name, new))
                if t == wal.COLLECTION_RENAME and new and cuid:
                    self.names[cuid] = new
            else:
                self.ignored += 1
        return out

    def _change(self, m: dict[str, Any], t: int, tick: int) -> Change | None:
        data = m.get("data") or {}
        key = data.get("_key")
        if not isinstance(key, str):
            return None
        name = self.name_of(m.get("cuid"), data if t != wal.REMOVE else None)
        if name is None:  # never drop a change because its collection has no name here
            raise PermanentError(
                f"WAL marker at tick {tick} belongs to collection {m.get('cuid')!r}, which "
                "ArangoDB does not list (no collection has that globallyUniqueId)",
                hint="check that the ArangoDB user may read every collection of the database",
            )
        if name.startswith("_"):
            return None
        return Change(tick, name, key, None if t == wal.REMOVE else data)
