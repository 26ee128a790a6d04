"""The test server's write-ahead log and the WAL tailing API (docs: arangodb-wal.md).

The log is modelled on RocksDB as ArangoDB 3.8-3.12 uses it, because the follower depends on
the details (spec §2.3, §3, §8):

- One global sequence counter for all databases. Every commit appends one write batch of
  consecutive sequence numbers. A batch holds *log data* entries (no sequence number: begin and
  commit of a transaction, "single put", "collection drop", ...) and *records* (one sequence
  number each: a document put, a primary-index put or delete, a secondary-index entry, a range
  delete, a definition put). The numbers a write consumes (the spec's §7 counts):
  insert = 1 document put + 1 per index entry (primary 1, edge index 2, each secondary 1);
  update/replace = 1 delete of the old revision + 1 put + primary 1 + 2 per other index entry;
  remove = 1 document delete + primary delete + 1 per other index entry; collection create,
  rename, change and index create = 1; drop = 1, then a second batch of range deletes;
  truncate fast path = 1 range delete per index entry and one for the documents.
- Markers are produced when the log is *read*, by a state machine that follows the 3.8 dumper
  (RocksDBWalAccess.cpp): so a marker's `_id` and a rename's `data.name` show the current
  collection name, markers of a collection that no longer exists are left out (except its
  2001), `_`-collections are filtered unless includeSystem, other databases unless global.
- Ticks: a 2300 carries its document put's number, a 2302 its primary-index delete, a 2200 the
  batch start, a 2201 the last record of the batch (the batch end); 2001/2100/2101 the next
  record's number, 2004 the batch start.
- `tail()` implements the spec's §2.3 pseudo-code literally (since, whole-batch skip, tick >
  from, `to` at batch granularity, chunk check after each batch, a cut inside a transaction only
  when lastScanned > 0: once the body exceeds chunkSize the dumper processes one more record and
  stops; never between a remove's log entry and its primary delete).
- Retention (§4.4): batches before `tick_min` are gone. `prune_wal()` advances it as RocksDB
  does (a batch goes when the next one starts below minTickToKeep = the lowest lastServedTick of
  the live registrations), `force=True` ignores registrations (the archive-size-limit overflow).
  The last batch always stays. Registrations live in memory: `restart()` forgets them.

Python-side API (also documented in server.py): last_tick(), wal_range(), wal_batches(db),
wal_markers(db, ...), prune_wal(upto, force), wal_clients(), expire_wal_clients(),
wal_client_ttl (attribute, seconds), set_coordinator(on), background_write(db).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from etl import jsonutil

# log data entries (RocksDB LogData: no sequence number)
L_BEGIN = "begin"
L_COMMIT = "commit"
L_ABORT = "abort"  # never written by RocksDB; tests use it to check that clients accept 2202
L_SINGLE_PUT = "single_put"
L_SINGLE_REMOVE = "single_remove"
L_DOC_REMOVE = "doc_remove"
L_COLL_CREATE = "coll_create"
L_COLL_RENAME = "coll_rename"
L_COLL_CHANGE = "coll_change"
L_COLL_DROP = "coll_drop"
L_COLL_TRUNCATE = "coll_truncate"
L_INDEX_CREATE = "index_create"
L_INDEX_DROP = "index_drop"
L_DB_CREATE = "db_create"
L_DB_DROP = "db_drop"
# records (one sequence number each)
R_DOC_PUT = "doc_put"
R_DOC_DELETE = "doc_delete"
R_PRIMARY_PUT = "primary_put"
R_PRIMARY_DELETE = "primary_delete"
R_INDEX_PUT = "index_put"
R_INDEX_DELETE = "index_delete"
R_RANGE_DELETE = "range_delete"
R_DEF_PUT = "def_put"
R_DEF_DELETE = "def_delete"

CHUNK_DEFAULT = 1024 * 1024
CHUNK_MIN = 16 * 1024
CHUNK_MAX = 128 * 1024 * 1024
TO_MAX = 2**64 - 1
CLIENT_TTL = 7200.0  # replutils::BatchInfo::DefaultTimeout and the tailing registration TTL


class Entry(NamedTuple):
    kind: str
    seq: int  # 0 for log data
    db: int = 0
    cid: int = 0
    data: Any = None
    extra: Any = None


@dataclass(slots=True)
class Batch:
    start: int
    end: int
    db: int  # the database the batch belongs to (0: none)
    label: str
    tid: int
    entries: list[Entry]


class WalBatch(NamedTuple):
    """What wal_batches() reports about one write batch."""

    start: int
    end: int
    db: str | None  # database name (None once the database is gone)
    label: str  # insert, update, replace, remove, transaction, abort, create, drop, ...
    tid: int  # 0 for single operations and DDL


class BatchWriter:
    """Collects the entries of one write batch; WriteAheadLog.append() numbers the records."""

    def __init__(self, label: str, db: int = 0, tid: int = 0):
        self.label, self.db, self.tid = label, db, tid
        self.entries: list[Entry] = []

    def log(self, kind: str, db: int = 0, cid: int = 0, data: Any = None, extra: Any = None):
        self.entries.append(Entry(kind, 0, db, cid, data, extra))

    def rec(self, kind: str, db: int = 0, cid: int = 0, data: Any = None, extra: Any = None):
        self.entries.append(Entry(kind, -1, db, cid, data, extra))

    @property
    def records(self) -> int:
        return sum(1 for e in self.entries if e.seq)

    # documents ------------------------------------------------------------
    def doc_put(self, db: int, cid: int, doc: dict, *, had_old: bool, others: int, single: bool):
        """An insert (had_old False) or an update/replace/overwrite (True); `others` = index
        entries besides the primary one."""
        if single:
            self.log(L_SINGLE_PUT, db, cid)
        if had_old:
            self.rec(R_DOC_DELETE, db, cid)
        self.rec(R_DOC_PUT, db, cid, doc)
        self.rec(R_PRIMARY_PUT, db, cid, doc["_key"])
        for _ in range(others):
            if had_old:
                self.rec(R_INDEX_DELETE, db, cid)
            self.rec(R_INDEX_PUT, db, cid)

    def doc_remove(self, db: int, cid: int, key: str, rev: str, *, others: int, single: bool):
        self.log(L_SINGLE_REMOVE if single else L_DOC_REMOVE, db, cid, rev)
        self.rec(R_DOC_DELETE, db, cid)
        self.rec(R_PRIMARY_DELETE, db, cid, key)
        for _ in range(others):
            self.rec(R_INDEX_DELETE, db, cid)


@dataclass
class Client:
    """A replication client registration (ReplicationClients.cpp)."""

    syncer_id: str
    server_id: str
    client_info: str
    last_served_tick: int
    time: float  # wall clock of the last call
    expires: float  # wall clock

    def as_json(self) -> dict:
        return {
            "syncerId": self.syncer_id,
            "serverId": self.server_id,
            "clientInfo": self.client_info,
            "time": utc(self.time),
            "expires": utc(self.expires),
            "lastServedTick": str(self.last_served_tick),
        }


@dataclass
class DumpBatch:
    id: str
    last_tick: int
    expires: float  # monotonic


class WriteAheadLog:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._starts: list[int] = []
        self.latest = 0
        self.clients: dict[str, Client] = {}
        self.client_ttl = CLIENT_TTL

    def append(self, w: BatchWriter) -> Batch | None:
        """Number the records and keep the batch; a batch without records is not written."""
        if not w.records:
            return None
        seq = self.latest
        entries = []
        for e in w.entries:
            if e.seq:
                seq += 1
                e = e._replace(seq=seq)
            entries.append(e)
        batch = Batch(self.latest + 1, seq, w.db, w.label, w.tid, entries)
        self.latest = seq
        self.batches.append(batch)
        self._starts.append(batch.start)
        return batch

    def first_index(self, since: int) -> int:
        """The batch containing `since` (GetUpdatesSince), or the oldest one kept."""
        return max(bisect.bisect_right(self._starts, since) - 1, 0)

    @property
    def tick_min(self) -> int:
        return self.batches[0].start if self.batches else 0

    # retention --------------------------------------------------------------
    def live_clients(self, now: float | None = None) -> list[Client]:
        now = time.time() if now is None else now
        for key in [k for k, c in self.clients.items() if c.expires <= now]:
            del self.clients[key]  # garbage-collected, as the server does periodically
        return list(self.clients.values())

    def register(
        self, syncer_id: int, server_id: int, client_info: str, tick: int, ttl: float
    ) -> None:
        """Record a client under syncerId (else serverId); nothing when both are 0."""
        key = str(syncer_id) if syncer_id else (f"s{server_id}" if server_id else None)
        if key is None:
            return
        now = time.time()
        self.clients[key] = Client(
            str(syncer_id), str(server_id), client_info, tick, now, now + ttl
        )

    def prune(self, upto: int | None = None, *, force: bool = False) -> int:
        """Drop the batches RocksDB would delete: batch i goes when batch i+1 starts below
        min_keep (`upto`, and the live registrations' lowest lastServedTick unless forced).
        The last batch always stays. Returns the number of batches dropped."""
        keep = self.latest + 1 if upto is None else upto
        if not force:
            for c in self.live_clients():
                keep = min(keep, c.last_served_tick)
        n = 0
        while n + 1 < len(self.batches) and self.batches[n + 1].start < keep:
            n += 1
        if n:
            del self.batches[:n]
            del self._starts[:n]
        return n


# ------------------------------------------------------------------ reading: the dumper


@dataclass
class TailFilter:
    from_: int = 0
    to: int = TO_MAX
    last_scanned: int = 0
    chunk: int = CHUNK_DEFAULT
    db_id: int | None = None  # None: global
    collection_id: int | None = None
    include_system: bool = False
    include_foxx_queues: bool = False


@dataclass
class TailResult:
    lines: list[bytes]
    last_included: int
    last_scanned: int
    latest: int
    from_present: bool

    @property
    def body(self) -> bytes:
        return b"".join(self.lines)

    @property
    def markers(self) -> list[dict]:
        return [jsonutil.loads(line) for line in self.lines]


def excluded_from_replication(name: str, include_system: bool, include_foxx_queues: bool) -> bool:
    """TRI_ExcludeCollectionReplication."""
    if not name:
        return True
    if name[0] != "_":
        return False
    if not include_system:
        return True
    if name.startswith("_statistics") or name == "_routing":
        return True
    return not include_foxx_queues and name in ("_jobs", "_queues")


# dumper states
_INVALID, _TRX, _SINGLE_PUT, _SINGLE_REMOVE = "invalid", "trx", "single_put", "single_remove"
_DB_CREATE, _DB_DROP = "db_create", "db_drop"
_COLL_CREATE, _COLL_RENAME, _COLL_CHANGE = "coll_create", "coll_rename", "coll_change"


@dataclass
class _Dumper:
    """MyWALDumper (RocksDBWalAccess.cpp, 3.8) over this module's entries."""

    f: TailFilter
    dbs: dict[int, Any]  # database id -> Database (current)
    cols: dict[tuple[int, int], Any]  # (database id, collection id) -> Collection (current)
    max_trx_chunk: float
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    last_written: int = 0
    # per batch
    seq: int = 0
    start_of_batch: bool = True
    state: str = _INVALID
    tid: int = 0
    trx_db: int = 0
    removed_rev: str | None = None

    def handle_db(self, dbid: int) -> bool:
        return self.f.db_id is None or self.f.db_id == dbid

    def handle_coll(self, dbid: int, cid: int) -> bool:
        if not dbid or not cid or not self.handle_db(dbid):
            return False
        if self.f.collection_id is not None and not (
            self.f.db_id == dbid and self.f.collection_id == cid
        ):
            return False
        col = self.cols.get((dbid, cid))
        if col is None:
            return False
        return not excluded_from_replication(
            col.name, self.f.include_system, self.f.include_foxx_queues
        )

    def reset(self) -> None:
        self.state, self.tid, self.trx_db, self.removed_rev = _INVALID, 0, 0, None

    def emit(self, tick: int, marker: dict) -> None:
        if tick > self.f.from_:
            line = jsonutil.dumps(marker) + b"\n"
            self.lines.append(line)
            self.size += len(line)
            self.last_written = tick

    def next_tick(self) -> int:
        return self.seq + (0 if self.start_of_batch else 1)

    def run(self, batch: Batch) -> None:
        self.seq, self.start_of_batch = batch.start, True
        self.reset()
        stop_on_next = False
        for e in batch.entries:
            # rocksdb::WriteBatch::Handler::Continue(), asked before every entry
            if stop_on_next:
                break
            if self.size > self.max_trx_chunk and self.state == _TRX and self.removed_rev is None:
                stop_on_next = True  # one more entry, then stop inside the transaction
            if e.seq:
                self.seq, self.start_of_batch = e.seq, False
                self.record(e)
            else:
                self.log_data(e)
        self.reset()  # endBatch

    def _db_name(self, dbid: int) -> str | None:
        db = self.dbs.get(dbid)
        return None if db is None else db.name

    def log_data(self, e: Entry) -> None:
        k = e.kind
        if k == L_BEGIN:
            self.reset()
            name = self._db_name(e.db)
            if self.handle_db(e.db) and name is not None:
                self.state, self.tid, self.trx_db = _TRX, e.data, e.db
                self.emit(
                    self.seq, {"tick": str(self.seq), "type": 2200, "tid": str(e.data), "db": name}
                )
        elif k in (L_COMMIT, L_ABORT):
            if self.state == _TRX and self.handle_db(e.db) and self.tid == e.data:
                name = self._db_name(e.db)
                if name is not None:
                    t = 2201 if k == L_COMMIT else 2202
                    self.emit(
                        self.seq, {"tick": str(self.seq), "type": t, "tid": str(e.data), "db": name}
                    )
            self.reset()
        elif k == L_SINGLE_PUT:
            self.reset()
            if self.handle_coll(e.db, e.cid):
                self.state = _SINGLE_PUT
        elif k == L_SINGLE_REMOVE:
            self.reset()
            if self.handle_coll(e.db, e.cid):
                self.state, self.removed_rev = _SINGLE_REMOVE, e.data
        elif k == L_DOC_REMOVE:
            if self.state == _TRX:
                self.removed_rev = e.data
            else:
                self.reset()
        elif k in (L_COLL_CREATE, L_COLL_RENAME, L_COLL_CHANGE):
            self.reset()
            if self.handle_coll(e.db, e.cid):
                self.state = {
                    L_COLL_CREATE: _COLL_CREATE,
                    L_COLL_RENAME: _COLL_RENAME,
                    L_COLL_CHANGE: _COLL_CHANGE,
                }[k]
        elif k == L_COLL_DROP:
            self.reset()
            name = self._db_name(e.db)
            if self.handle_db(e.db) and name is not None:  # printed for dropped collections too
                tick = self.next_tick()
                self.emit(tick, {"tick": str(tick), "type": 2001, "db": name, "cuid": e.data})
        elif k == L_COLL_TRUNCATE:
            self.reset()
            if self.handle_coll(e.db, e.cid):
                col = self.cols[(e.db, e.cid)]
                self.emit(
                    self.seq,
                    {
                        "tick": str(self.seq),
                        "type": 2004,
                        "db": self._db_name(e.db),
                        "cuid": col.guid,
                    },
                )
        elif k in (L_INDEX_CREATE, L_INDEX_DROP):
            self.reset()
            if self.handle_coll(e.db, e.cid):
                col = self.cols[(e.db, e.cid)]
                tick = self.next_tick()
                data = e.data if k == L_INDEX_CREATE else {"id": e.data}
                self.emit(
                    tick,
                    {
                        "tick": str(tick),
                        "type": 2100 if k == L_INDEX_CREATE else 2101,
                        "db": self._db_name(e.db),
                        "cuid": col.guid,
                        "data": data,
                    },
                )
        elif k in (L_DB_CREATE, L_DB_DROP):
            self.reset()
            if self.handle_db(e.db):
                self.state = _DB_CREATE if k == L_DB_CREATE else _DB_DROP

    def record(self, e: Entry) -> None:
        k = e.kind
        if k == R_DEF_PUT:
            if e.cid == 0:  # a database definition
                if self.state == _DB_CREATE and e.db in self.dbs:
                    self.emit(
                        self.seq,
                        {"tick": str(self.seq), "type": 1100, "db": e.data["name"], "data": e.data},
                    )
                elif self.state == _DB_DROP:
                    self.emit(self.seq, {"tick": str(self.seq), "type": 1101, "db": e.data["name"]})
            elif self.state in (_COLL_CREATE, _COLL_RENAME, _COLL_CHANGE) and self.handle_coll(
                e.db, e.cid
            ):
                col = self.cols[(e.db, e.cid)]
                marker: dict[str, Any] = {
                    "tick": str(self.seq),
                    "db": self._db_name(e.db),
                    "cuid": col.guid,
                }
                if self.state == _COLL_RENAME:
                    marker["type"] = 2002
                    marker["data"] = {"name": col.name}  # the name it has now
                else:
                    marker["type"] = 2000 if self.state == _COLL_CREATE else 2003
                    marker["data"] = e.data  # the definition as written then
                self.emit(self.seq, marker)
            self.reset()  # reset everything immediately after DDL operations
        elif k == R_DOC_PUT:
            if self.state not in (_TRX, _SINGLE_PUT):
                self.reset()
                return
            if not self.handle_coll(e.db, e.cid):
                return  # no reset here
            col = self.cols[(e.db, e.cid)]
            doc = e.data
            want_id = f"{col.name}/{doc['_key']}"
            if doc.get("_id") != want_id:  # _id is resolved with the current name
                doc = {k2: (want_id if k2 == "_id" else v) for k2, v in doc.items()}
            self.emit(
                self.seq,
                {
                    "tick": str(self.seq),
                    "type": 2300,
                    "db": self._db_name(e.db),
                    "cuid": col.guid,
                    "tid": str(self.tid),
                    "data": doc,
                },
            )
            if self.state == _SINGLE_PUT:
                self.reset()
        elif k == R_PRIMARY_DELETE:
            if self.state not in (_TRX, _SINGLE_REMOVE):
                self.reset()
                return
            if not self.handle_coll(e.db, e.cid):
                self.removed_rev = None
                return
            col = self.cols[(e.db, e.cid)]
            self.emit(
                self.seq,
                {
                    "tick": str(self.seq),
                    "type": 2302,
                    "db": self._db_name(e.db),
                    "cuid": col.guid,
                    "tid": str(self.tid),
                    "data": {"_key": e.data, "_rev": self.removed_rev or ""},
                },
            )
            self.removed_rev = None
            if self.state == _SINGLE_REMOVE:
                self.reset()
        # other records (document deletes, index entries, range deletes, definition deletes)
        # take a sequence number and print nothing


def scan(
    wal: WriteAheadLog,
    f: TailFilter,
    dbs: dict[int, Any],
    cols: dict[tuple[int, int], Any],
) -> TailResult:
    """One /_api/wal/tail response: the spec's §2.3 pseudo-code."""
    since = f.last_scanned if 0 < f.last_scanned < f.from_ else f.from_
    chunk = min(max(f.chunk, CHUNK_MIN), CHUNK_MAX)
    dumper = _Dumper(f, dbs, cols, chunk if f.last_scanned > 0 else float("inf"))
    if since > wal.latest:  # "not yet written": RocksDB's NotFound becomes an empty success
        return TailResult([], 0, 0, wal.latest, False)
    first_tick: int | None = None
    scanned = since
    for batch in wal.batches[wal.first_index(since) :]:
        if first_tick is None:
            first_tick = batch.start
        if batch.start > f.to:
            break
        scanned = batch.start
        if batch.start < since:
            continue  # the whole batch is skipped
        dumper.run(batch)
        if dumper.size >= chunk:
            break  # checked only at batch boundaries
        scanned = batch.end
    present = first_tick is not None and first_tick <= f.from_
    return TailResult(dumper.lines, dumper.last_written, scanned, wal.latest, present)


def utc(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def parse_uint(value: str | None, default: int = 0) -> int:
    """StringUtils::uint64: leading decimal digits, anything else is 0."""
    if value is None:
        return default
    digits = ""
    for ch in value.strip():
        if not ch.isdigit():
            break
        digits += ch
    return min(int(digits), 2**64 - 1) if digits else 0


def truthy(value: str | None) -> bool:
    """StringUtils::boolean."""
    return value is not None and value.strip().lower() in ("true", "yes", "on", "y", "1")


def valid_syncer_id(value: str) -> bool:
    return value.isdigit() and value.isascii() and value[0] != "0"
