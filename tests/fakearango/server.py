"""An ArangoDB-compatible HTTP server for tests (docs: arangodb-http.md, arangodb-wal.md).

Real sockets on 127.0.0.1, one thread per connection, HTTP/1.1 keep-alive, so python-arango
talks to it exactly as to arangod. State lives in Python objects; documents are stored as
parsed JSON values (big integers exact, "\\u0000" kept) and serialised with etl.jsonutil.

Python-side API (tests):

- setup: create_database(name), drop_database(name), create_collection(db, name, edge=False,
  wait_for_sync=False), drop_collection(db, name), add_user(name, password, databases="*",
  admin=None), add_generated_collection(...), documents(db, c), keys_in_order(db, c);
- writes that reach the write-ahead log (documents.py): insert(db, c, doc, overwrite_mode=None),
  insert_many(db, c, docs), update(db, c, key, patch, keep_null=True, merge_objects=True),
  replace(db, c, key, doc), remove(db, c, key), transaction(db, intermediate_commit_count=None)
  (a context manager: t.insert/update/replace/remove/truncate, t.abort(write_abort_marker=...)),
  rename_collection(db, name, new), truncate_collection(db, name), configure_collection(db,
  name, wait_for_sync=...), create_index(db, c, fields, unique=, sparse=, name=),
  drop_index(db, c, id); settings: truncate_threshold, intermediate_commit_count,
  trx_idle_timeout, wal_imports;
- the WAL (replication.py, wal.py): last_tick(), wal_range(), wal_batches(db), wal_markers(db,
  from_tick=, include_system=, collection=), prune_wal(upto=None, force=False), wal_clients(),
  expire_wal_clients(), wal_client_ttl, set_coordinator(on), background_write();
- faults (fail, fail_unavailable, drop_connection, slow, expire_cursors, expire_cursor_on,
  proxy_429, hold, clear_faults; keyed by route names, see _route and WAL_ROUTES,
  REPLICATION_ROUTES, DOCUMENT_ROUTES, TRANSACTION_ROUTES), restart (a new listener on the same port: data and WAL
  kept; cursors, stream transactions, dump batches and WAL registrations lost, as after an
  arangod restart), `requests` (a log of served requests).

What does *not* reach the WAL: documents put into collections "before the bulk copy" by the
fixture helpers, i.e. generated collections, POST /_api/import (seed(), import_bulk) unless
`wal_imports = True`, and direct changes to `documents(db, c)`. Creating databases and
collections does log (1100, 2000), which tails of user collections never show.

Fidelity. The server follows ../shared/spec/arangodb-http.md, arangodb-wal.md and, for what it
serves, the 3.8 RocksDB handler code those specs quote: error bodies `{"error","errorNum",
"errorMessage","code"}` everywhere; 401/11 for bad credentials, 403/11 for a non-admin on
/_api/wal/*; document paths percent-decoded per segment (a `_key` holding '%' must be sent
encoded); /_api/wal/tail built as the spec's §2.3 pseudo-code (exclusive `from`, `to` and
`chunkSize` at write-batch granularity, cuts inside a transaction only with lastScanned > 0,
all five replication headers on 200 and 204, no `x-arango-replication-active`, ticks as
strings); bulk document calls answer per entry with `x-arango-error-codes`. Known differences
from a real arangod: no VelocyPack, no cluster (coordinator mode only answers 501); AQL is the
handful of queries etl sends (aql.py), and the collation an approximation of ICU; `_rev`
values are opaque but not real hybrid-logical-clock strings; the server version is a fixed
3.12.4; where the docs and the 3.8 code disagree it answers as the code (400 rather than 405
for a wrong method on /_api/wal, 404/1600 rather than 400 for an unknown dump batch); a
database's own 1100 marker shows in a non-global tail of that database while its creation is
still in the log (the code's shouldHandleDB; the spec says 1100 needs global=true); nothing is
persisted across `restart()` except data and the WAL.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import os
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from etl import jsonutil

from . import aql, jwtutil
from .collation import COLLATIONS, type_rank
from .common import KEY_RE, ApiError, Reply, error
from .common import parse_bool as _bool
from .documents import (
    INTERMEDIATE_COMMIT_COUNT,
    STREAM_IDLE_TIMEOUT,
    TRUNCATE_RANGE_DELETE_MIN,
    DocumentApi,
)
from .replication import ReplicationApi
from .wal import L_COLL_CREATE, L_DB_CREATE, L_DB_DROP, R_DEF_PUT, BatchWriter, WriteAheadLog

SYSTEM_COLLECTIONS = (
    "_analyzers",
    "_appbundles",
    "_apps",
    "_aqlfunctions",
    "_frontend",
    "_graphs",
    "_jobs",
    "_queues",
)
SYSTEM_DB_ONLY = ("_users", "_statistics", "_statistics15", "_statisticsRaw")
CURSOR_ROUTES = frozenset({"cursor_create", "cursor_next", "cursor_batch"})
WAL_ROUTES = frozenset(
    {"wal_tail", "wal_last_tick", "wal_range", "wal_open_transactions", "wal_invalid"}
)
DOCUMENT_ROUTES = frozenset(
    {
        "document_insert",
        "document_get",
        "document_head",
        "document_update",
        "document_replace",
        "document_delete",
        "document_update_many",
        "document_replace_many",
        "document_delete_many",
    }
)
TRANSACTION_ROUTES = frozenset(
    {
        "transaction_begin",
        "transaction_status",
        "transaction_commit",
        "transaction_abort",
        "transaction_list",
    }
)
REPLICATION_ROUTES = frozenset(
    {
        "logger_state",
        "replication_batch_create",
        "replication_batch_extend",
        "replication_batch_delete",
        "replication_inventory",
    }
)
ALL_ROUTES = None


# --------------------------------------------------------------------------- state


@dataclass
class Generated:
    """A collection whose documents are made on demand (flat-memory tests)."""

    count: int
    make_doc: Callable[[int, str], dict]
    key_width: int = 12

    def key(self, i: int) -> str:
        return f"{i:0{self.key_width}d}"


class Collection:
    def __init__(
        self, db: Database, name: str, cid: int, ctype: int, is_system: bool, server_id: int = 0
    ):
        self.db, self.name, self.id, self.type, self.is_system = db, name, cid, ctype, is_system
        self.guid = f"h{server_id:X}/{cid}"  # globallyUniqueId: "h" + hex server id + "/" + cid
        self.docs: dict[str, dict] = {}
        self.generated: Generated | None = None
        self._order: dict[str, tuple[list[str], list[Any]]] = {}  # collation -> (keys, sort keys)
        self.last_value = 0
        self.wait_for_sync = False
        self.indexes: list[dict] = []  # secondary (persistent) indexes; ids without the prefix

    def other_index_entries(self) -> int:
        """Index entries a document write makes besides the primary one (RocksDB keeps the edge
        index as two indexes, _from and _to)."""
        return (2 if self.type == 3 else 0) + len(self.indexes)

    def index_definitions(self) -> list[dict]:
        out = [
            {
                "id": "0",
                "type": "primary",
                "name": "primary",
                "fields": ["_key"],
                "unique": True,
                "sparse": False,
            }
        ]
        if self.type == 3:
            out.append(
                {
                    "id": "1",
                    "type": "edge",
                    "name": "edge",
                    "fields": ["_from", "_to"],
                    "unique": False,
                    "sparse": False,
                }
            )
        return out + [dict(i) for i in self.indexes]

    def definition(self) -> dict:
        """The stored definition, as a 2000/2003 marker carries it (objectIds left out)."""
        return {
            "cid": str(self.id),
            "id": str(self.id),
            "name": self.name,
            "type": self.type,
            "status": 3,
            "deleted": False,
            "isSystem": self.is_system,
            "waitForSync": self.wait_for_sync,
            "keyOptions": {
                "type": "traditional",
                "allowUserKeys": True,
                "lastValue": self.last_value,
            },
            "globallyUniqueId": self.guid,
            "indexes": self.index_definitions(),
            "cacheEnabled": False,
            "schema": None,
            "computedValues": None,
            "syncByRevision": True,
        }

    # order ------------------------------------------------------------------
    def invalidate(self) -> None:
        self._order.clear()

    def count(self) -> int:
        return self.generated.count if self.generated else len(self.docs)

    def _sorted(self, collation: str) -> tuple[Any, Any]:
        skey = COLLATIONS[collation]
        if self.generated:
            gen = self.generated

            class _Keys:
                def __len__(self) -> int:
                    return gen.count

                def __getitem__(self, i: int) -> Any:
                    return skey(gen.key(i))

            return None, _Keys()
        cached = self._order.get(collation)
        if cached is None or len(cached[0]) != len(
            self.docs
        ):  # also catches tests adding to .docs directly
            keys = sorted(self.docs, key=skey)
            cached = self._order[collation] = (keys, [skey(k) for k in keys])
        return cached

    def start_index(self, last: Any, collation: str) -> int:
        """Index of the first key > last in this collation (AQL type order for non-strings)."""
        rank = type_rank(last)
        if rank < 3:
            return 0
        if rank > 3:
            return self.count()
        _, sks = self._sorted(collation)
        return bisect.bisect_right(sks, COLLATIONS[collation](last))

    def end_index(self, until: Any, collation: str) -> int:
        """Index just past the last key <= until (the same comparator as start_index)."""
        rank = type_rank(until)
        if rank < 3:
            return 0
        if rank > 3:
            return self.count()
        _, sks = self._sorted(collation)
        return bisect.bisect_right(sks, COLLATIONS[collation](until))

    def doc_at(self, i: int, collation: str) -> dict:
        if self.generated:
            key = self.generated.key(i)
            doc = self.generated.make_doc(i, key)
            doc.setdefault("_key", key)
            doc.setdefault("_id", f"{self.name}/{key}")
            doc.setdefault("_rev", f"_gen{i:x}")
            return doc
        keys, _ = self._sorted(collation)
        return self.docs[keys[i]]

    def info(self) -> dict:
        return {
            "id": str(self.id),
            "name": self.name,
            "status": 3,
            "type": self.type,
            "isSystem": self.is_system,
            "globallyUniqueId": self.guid,
        }

    def properties(self) -> dict:
        body = self.info()
        body.update(
            {
                "statusString": "loaded",
                "waitForSync": self.wait_for_sync,
                "keyOptions": {
                    "type": "traditional",
                    "allowUserKeys": True,
                    "lastValue": self.last_value,
                },
                "schema": None,
                "computedValues": None,
                "cacheEnabled": False,
                "syncByRevision": True,
            }
        )
        return body


class Database:
    def __init__(self, name: str, did: int):
        self.name, self.id = name, did
        self.collections: dict[str, Collection] = {}


@dataclass
class User:
    name: str
    password: str
    databases: set[str] | str  # "*" = every database (root)
    admin: bool | None = None  # None: read-write on _system iff it may access _system

    def may_access(self, db: str) -> bool:
        return self.databases == "*" or db in self.databases

    def is_admin(self) -> bool:
        """isAdminUser(): the configured access level on _system is read-write."""
        return self.may_access("_system") if self.admin is None else self.admin


class ResultSet:
    """Query results, materialised as a list or produced on demand by index."""

    def __init__(self, length: int, getter: Callable[[int], Any]):
        self.length, self.getter = length, getter

    @classmethod
    def of(cls, items: list) -> ResultSet:
        return cls(len(items), items.__getitem__)

    def slice(self, start: int, stop: int) -> list:
        return [self.getter(i) for i in range(start, min(stop, self.length))]


@dataclass
class Cursor:
    id: str
    db: str
    results: ResultSet
    batch_size: int
    ttl: float
    allow_retry: bool
    count: int | None
    stream: bool
    extra: dict
    pos: int = 0
    batch_id: int = 0  # the batch last delivered
    last_body: dict | None = None
    expires: float = 0.0
    busy: bool = False
    exhausted: bool = False

    def touch(self) -> None:
        self.expires = time.monotonic() + self.ttl


@dataclass
class Fault:
    kind: str  # error | proxy429 | drop | truncate | delay | expire | hold | call
    routes: frozenset[str] | None
    count: int
    skip: int = 0
    status: int = 503
    error_num: int = 21003
    message: str = "queue is full"
    seconds: float = 0.0
    before: bool = False  # delay: before executing (True) or after (False)
    retry_after: str | None = None
    fired: int = 0
    # hold: the request waits (before it is executed) until release(); `body` is what it sent
    arrived: threading.Event | None = None
    released: threading.Event | None = None
    body: bytes | None = None
    then: Any = None  # call: run after the request is executed, before the answer is sent

    def release(self) -> None:
        if self.released is not None:
            self.released.set()


@dataclass
class RequestLog:
    method: str
    path: str
    route: str
    status: int | None  # None: connection dropped
    fault: str | None = None
    last_batch: bool = False  # a cursor answer with hasMore false (a query's results all sent)


# --------------------------------------------------------------------------- the server


class FakeArango(DocumentApi, ReplicationApi):
    """The test server. `start()` binds a random port on 127.0.0.1; `url` is its base URL."""

    def __init__(
        self,
        root_password: str = "",
        *,
        collation: str = "icu",
        auth: bool = True,
        session_timeout: float = 3600.0,
        version: str = "3.12.4",
        host: str = "127.0.0.1",
        ssl_context: Any = None,
        server_id: int | None = None,
    ):
        if collation not in COLLATIONS:
            raise ValueError(f"collation must be one of {sorted(COLLATIONS)}")
        self.collation = collation
        self.auth_enabled = auth
        self.session_timeout = session_timeout
        self.version = version
        self.queue_time = 0.0  # what x-arango-queue-time-seconds reports
        self.query_warnings: list[
            dict
        ] = []  # extra.warnings of every query, e.g. [{"code": 1562, "message": ...}]
        self.jwt_secret = os.urandom(32)
        self.lock = threading.RLock()
        self.users: dict[str, User] = {"root": User("root", root_password, "*")}
        self.databases: dict[str, Database] = {}
        self.cursors: dict[tuple[str, str], Cursor] = {}
        self.faults: list[Fault] = []
        self.requests: deque[RequestLog] = deque(maxlen=20000)
        self._ids = itertools.count(9001)
        self._ticks = itertools.count(1)
        self._last_rev = 0  # the revisions' hybrid logical clock
        # called by /_api/wal/tail between its scan and its lasttick read (a write committed
        # meanwhile: lasttick is past what the answer covers)
        self.during_tail: Any = None
        self._host = host
        self._ssl = ssl_context
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._tls = threading.local()  # the request being handled (method, headers, user)
        # the write-ahead log and what hangs on it (wal.py, replication.py, documents.py)
        self.server_id = server_id if server_id is not None else random.randrange(2**40, 2**47)
        self.wal = WriteAheadLog()
        self.coordinator = False
        self.dump_batches: dict[str, Any] = {}
        self._batch_clients: dict[str, tuple[int, int]] = {}
        self.transactions: dict[str, Any] = {}  # stream transactions (and their tombstones)
        self._open_txns: set[Any] = set()  # Python-side transaction() blocks
        self.trx_idle_timeout = STREAM_IDLE_TIMEOUT
        self.intermediate_commit_count = INTERMEDIATE_COMMIT_COUNT
        self.truncate_threshold = TRUNCATE_RANGE_DELETE_MIN
        self.wal_imports = False  # True: each /_api/import request is logged as a transaction
        self.create_database("_system")

    # lifecycle -------------------------------------------------------------
    def start(self, port: int = 0) -> FakeArango:
        """Listen on `port` (0 = a free one)."""
        httpd = _HTTPServer((self._host, port), _Handler)
        if self._ssl is not None:
            httpd.socket = self._ssl.wrap_socket(httpd.socket, server_side=True)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakearango",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self.lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(5)
        self._httpd = None

    def restart(self, downtime: float = 0.0) -> None:
        """Stop listening (open connections are cut), wait `downtime` seconds, listen again on the
        same port. Databases, documents, users, the JWT secret and the WAL (it is on disk) stay;
        cursors, stream transactions, dump batches and WAL client registrations (all in memory)
        are lost, as after an arangod restart. Requests in the downtime are refused."""
        port = self.port
        self.stop()
        with self.lock:
            self.cursors.clear()
            self.transactions.clear()
            self._open_txns.clear()
            self.dump_batches.clear()
            self._batch_clients.clear()
            self.wal.clients.clear()
        if downtime > 0:
            time.sleep(downtime)
        for attempt in range(50):  # the port can stay busy for a moment after the close
            try:
                self.start(port)
                return
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> FakeArango:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self._host}:{self.port}"

    # python-side administration ---------------------------------------------
    def create_database(self, name: str) -> Database:
        """Create a database and its system collections; the WAL gets a 1100 and a 2000 per
        system collection (seen only with global=true and includeSystem=true)."""
        with self.lock:
            if name in self.databases:
                return self.databases[name]
            db = Database(name, next(self._ids))
            self.databases[name] = db
            w = BatchWriter("create-database", db.id)
            w.log(L_DB_CREATE, db.id)
            definition = {
                "database": db.id,
                "id": str(db.id),
                "name": name,
                "deleted": False,
                "isSystem": name == "_system",
            }
            w.rec(R_DEF_PUT, db.id, 0, definition)
            self.wal.append(w)
            for c in SYSTEM_COLLECTIONS + (SYSTEM_DB_ONLY if name == "_system" else ()):
                col = Collection(db, c, next(self._ids), 2, True, self.server_id)
                db.collections[c] = col
                self._log_collection(L_COLL_CREATE, "create", db, col)
            return db

    def drop_database(self, name: str) -> None:
        with self.lock:
            db = self.databases.pop(name, None)
            if db is not None:
                w = BatchWriter("drop-database", db.id)
                w.log(L_DB_DROP, db.id)
                w.rec(R_DEF_PUT, db.id, 0, {"id": str(db.id), "name": name, "deleted": True})
                self.wal.append(w)

    def create_collection(
        self,
        db: str,
        name: str,
        *,
        edge: bool = False,
        wait_for_sync: bool = False,
        indexes: list[dict] | None = None,
    ) -> Collection:
        """Create a collection (a 2000 in the WAL); an existing one is returned as it is.
        indexes: persistent indexes to give it at once (as GET /_api/index shows them)."""
        with self.lock:
            d = self.databases[db]
            if name not in d.collections:
                col = Collection(
                    d, name, next(self._ids), 3 if edge else 2, name.startswith("_"), self.server_id
                )
                col.wait_for_sync = wait_for_sync
                d.collections[name] = col
                self._log_collection(L_COLL_CREATE, "create", d, col)
            col = d.collections[name]
            for ix in indexes or ():
                n = len(col.indexes) + 2
                col.indexes.append({"id": str(n), "name": f"idx_{n}", **ix})
            return col

    def drop_collection(self, db: str, name: str) -> None:
        """Drop a collection (a 2001 in the WAL; its earlier markers are no longer delivered)."""
        with self.lock:
            d = self.databases[db]
            col = d.collections.pop(name, None)
            if col is not None:
                self._log_collection_drop(d, col)

    def add_generated_collection(
        self,
        db: str,
        name: str,
        count: int,
        make_doc: Callable[[int, str], dict] | None = None,
        *,
        edge: bool = False,
        key_width: int = 12,
    ) -> Collection:
        """A collection of `count` documents with keys 000000000000.. made on demand, never stored."""
        col = self.create_collection(db, name, edge=edge)
        col.generated = Generated(count, make_doc or (lambda i, key: {"n": i}), key_width)
        return col

    def add_user(
        self,
        name: str,
        password: str,
        databases: Iterable[str] | str = "*",
        *,
        admin: bool | None = None,
    ) -> None:
        """`databases`: the ones the user may use ("*" = all). `admin` (the WAL API's "admin
        user", read-write on _system) defaults to whether `_system` is among them."""
        with self.lock:
            self.users[name] = User(
                name, password, databases if databases == "*" else set(databases), admin
            )

    def documents(self, db: str, collection: str) -> dict[str, dict]:
        return self.databases[db].collections[collection].docs

    def keys_in_order(self, db: str, collection: str) -> list[str]:
        """The collection's keys in the server's key order (its collation), as SORT d._key gives them."""
        with self.lock:
            col = self.databases[db].collections[collection]
            if col.generated:
                return [col.generated.key(i) for i in range(col.generated.count)]
            return list(col._sorted(self.collation)[0])

    def key_order(self, key: str) -> Any:
        """A sort key for `key` in the server's collation (compare keys as the server does)."""
        return COLLATIONS[self.collation](key)

    def superuser_token(self, lifetime: float = 3600) -> str:
        now = int(time.time())
        return jwtutil.encode(
            {"iss": "arangodb", "server_id": "fake", "iat": now, "exp": now + int(lifetime)},
            self.jwt_secret,
        )

    # fault injection -------------------------------------------------------
    def inject(
        self,
        kind: str,
        *,
        routes: Iterable[str] | None = CURSOR_ROUTES,
        count: int = 1,
        skip: int = 0,
        **kw: Any,
    ) -> Fault:
        fault = Fault(kind, None if routes is None else frozenset(routes), count, skip, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def fail(
        self,
        count: int = 1,
        *,
        status: int = 503,
        error_num: int = 21003,
        message: str = "queue is full",
        routes: Iterable[str] | None = CURSOR_ROUTES,
        skip: int = 0,
    ) -> Fault:
        """The next `count` matching requests get an error without being executed."""
        return self.inject(
            "error",
            routes=routes,
            count=count,
            skip=skip,
            status=status,
            error_num=error_num,
            message=message,
        )

    def fail_unavailable(self, count: int = 1, **kw: Any) -> Fault:
        """503 with errorNum 503 (startup/maintenance); python-arango treats it as a lost connection."""
        return self.fail(
            count, status=503, error_num=503, message="service unavailable due to startup", **kw
        )

    def drop_connection(
        self,
        count: int = 1,
        *,
        routes: Iterable[str] | None = ("cursor_next", "cursor_batch"),
        skip: int = 0,
        mid_body: bool = False,
    ) -> Fault:
        """Execute the request (a cursor advances), then close the socket: before any response byte,
        or with mid_body=True after the headers and half of the body."""
        return self.inject(
            "truncate" if mid_body else "drop", routes=routes, count=count, skip=skip
        )

    def slow(
        self,
        seconds: float,
        count: int = 1,
        *,
        routes: Iterable[str] | None = CURSOR_ROUTES,
        skip: int = 0,
        before: bool = False,
    ) -> Fault:
        """Sleep `seconds` after executing (or before, with before=True), then answer."""
        return self.inject(
            "delay", routes=routes, count=count, skip=skip, seconds=seconds, before=before
        )

    def expire_cursor_on(
        self,
        count: int = 1,
        *,
        routes: Iterable[str] | None = ("cursor_next", "cursor_batch"),
        skip: int = 0,
    ) -> Fault:
        """Expire every cursor just before the matching request is executed (as after a ttl)."""
        return self.inject("expire", routes=routes, count=count, skip=skip)

    def proxy_429(
        self,
        count: int = 1,
        *,
        retry_after: str | None = "0",
        routes: Iterable[str] | None = CURSOR_ROUTES,
        skip: int = 0,
    ) -> Fault:
        """A 429 with an HTML body, as a proxy or load balancer in front of arangod sends it."""
        return self.inject(
            "proxy429", routes=routes, count=count, skip=skip, status=429, retry_after=retry_after
        )

    def hold(
        self,
        count: int = 1,
        *,
        routes: Iterable[str] | None = ("cursor_create",),
        skip: int = 0,
        timeout: float = 60.0,
    ) -> Fault:
        """The next matching request waits, before it is executed, until `fault.release()` (or
        `timeout` seconds). `fault.arrived` is set when it is waiting; `fault.body` is its body
        (e.g. an AQL query's bind variables: where a keyset reader stands)."""
        return self.inject(
            "hold",
            routes=routes,
            count=count,
            skip=skip,
            seconds=timeout,
            arrived=threading.Event(),
            released=threading.Event(),
        )

    def after(
        self,
        then: Any,
        count: int = 1,
        *,
        routes: Iterable[str] | None = ("wal_tail",),
        skip: int = 0,
    ) -> Fault:
        """Run `then()` (e.g. an application's write) right after the matching request is
        executed and before its answer is sent: the answer does not show it."""
        return self.inject("call", routes=routes, count=count, skip=skip, then=then)

    def clear_faults(self) -> None:
        with self.lock:
            for f in self.faults:
                f.release()
            self.faults.clear()

    def expire_cursors(self) -> int:
        with self.lock:
            n = len(self.cursors)
            for c in self.cursors.values():
                c.expires = 0.0
            return n

    def _take_fault(self, route: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.count <= 0 or (f.routes is not None and route not in f.routes):
                    continue
                if f.skip > 0:
                    f.skip -= 1
                    continue
                f.count -= 1
                f.fired += 1
                return f
        return None

    # request handling ------------------------------------------------------
    def handle(
        self, method: str, raw_path: str, headers: Any, body: bytes
    ) -> tuple[Reply | None, Fault | None, str]:
        split = urlsplit(raw_path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        db_name = "_system"
        if path.startswith("/_db/"):
            rest = path[len("/_db/") :]
            seg, _, tail = rest.partition("/")
            db_name = unquote(seg)
            path = "/" + tail
        route, args = _route(method, path)
        fault = self._take_fault(route)
        if fault and fault.kind == "error":
            return error(fault.status, fault.error_num, fault.message), fault, route
        if fault and fault.kind == "proxy429":
            hdrs = {"content-type": "text/html", "x-proxy": "1"}
            if fault.retry_after is not None:
                hdrs["retry-after"] = fault.retry_after
            return (
                Reply(429, b"<html><body><h1>429 Too Many Requests</h1></body></html>", hdrs),
                fault,
                route,
            )
        if fault and fault.kind == "expire":
            self.expire_cursors()
        if fault and fault.kind == "hold":
            fault.body = body
            fault.arrived.set()
            fault.released.wait(fault.seconds)
        if fault and fault.kind == "delay" and fault.before:
            # a request that waits on a cursor holds it: concurrent use answers 409/1601
            cur = (
                self.cursors.get((db_name, args[0]))
                if route in ("cursor_next", "cursor_batch")
                else None
            )
            if cur is not None:
                cur.busy = True
            try:
                time.sleep(fault.seconds)
            finally:
                if cur is not None:
                    cur.busy = False
        limit = headers.get("x-arango-queue-time-seconds")
        if limit is not None:
            try:
                lim = float(limit)
            except ValueError:
                lim = 0.0
            if lim > 0 and self.queue_time > lim:
                return error(412, 21004, "queue time violated"), fault, route
        try:
            reply = self._dispatch(method, route, args, db_name, headers, query, body)
        except ApiError as exc:
            reply = exc.reply
        except aql.AqlError as exc:
            reply = error(exc.status, exc.error_num, exc.message)
        if fault and fault.kind == "call":
            fault.then()
        return reply, fault, route

    def _authenticate(self, headers: Any) -> User | None:
        if not self.auth_enabled:
            return self.users["root"]
        value = headers.get("authorization") or ""
        scheme, _, cred = value.strip().partition(" ")
        scheme = scheme.lower()
        cred = cred.strip()
        if scheme == "basic":
            try:
                user, _, pw = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeError):
                return None
            u = self.users.get(user)
            return u if u is not None and u.password == pw else None
        if scheme == "bearer":
            claims = jwtutil.decode(cred, self.jwt_secret)
            if claims is None:
                return None
            name = claims.get("preferred_username")
            if name is None and "server_id" in claims:
                return User("(superuser)", "", "*")
            return self.users.get(name) if isinstance(name, str) else None
        return None

    def _dispatch(
        self,
        method: str,
        route: str,
        args: list[str],
        db_name: str,
        headers: Any,
        query: dict[str, str],
        body: bytes,
    ) -> Reply:
        if route == "open_auth":
            return self._open_auth(body)
        user = self._authenticate(headers)
        db = self.databases.get(db_name)
        if (
            user is None
            or (db is None and user.databases != "*")
            or (db is not None and not user.may_access(db_name))
        ):
            hdrs = (
                {}
                if headers.get("x-omit-www-authenticate")
                else {"www-authenticate": 'Basic, realm="ArangoDB"'}
            )
            return error(401, 11, "not authorized to execute this request", hdrs)
        if db is None:
            return error(404, 1228, "database not found")
        with self.lock:
            handler = getattr(self, "_r_" + route, None)
            if handler is None:
                if route == "method_not_allowed":
                    return error(405, 405, "method not supported")
                return error(404, 404, f"unknown path '{urlsplit(args[0]).path if args else ''}'")
            self._tls.method, self._tls.headers, self._tls.user = method, headers, user
            try:
                return handler(db, args, query, body)
            finally:
                self._tls.method = self._tls.headers = self._tls.user = None

    # the request being handled (routes that need more than db, args, query and body)
    def _request_method(self) -> str | None:
        return getattr(self._tls, "method", None)

    def _request_headers(self) -> Any:
        return getattr(self._tls, "headers", None) or {}

    def _request_user(self) -> User | None:
        return getattr(self._tls, "user", None)

    # /_open/auth
    def _open_auth(self, body: bytes) -> Reply:
        try:
            data = jsonutil.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("username"), str):
            return error(400, 400, "invalid JSON")
        u = self.users.get(data["username"])
        if u is None or u.password != data.get("password", ""):
            return error(401, 401, "Wrong credentials")
        return Reply(200, {"jwt": jwtutil.issue(u.name, self.jwt_secret, self.session_timeout)})

    # version, database
    def _r_version(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        out: dict[str, Any] = {"server": "arango", "version": self.version, "license": "community"}
        if _bool(query.get("details"), False):
            out["details"] = {
                "architecture": "64bit",
                "mode": "cluster" if self.coordinator else "single",
                "role": "COORDINATOR" if self.coordinator else "SINGLE",
                "host": "fakearango",
                "icu-version": "64.2",
                "server-version": self.version,
                "asan": "false",
            }
        return Reply(200, out)

    def _r_database_current(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        return Reply(
            200,
            {
                "error": False,
                "code": 200,
                "result": {
                    "id": str(db.id),
                    "name": db.name,
                    "isSystem": db.name == "_system",
                    "path": f"/var/lib/arangodb3/databases/database-{db.id}",
                },
            },
        )

    # collections
    def _col(self, db: Database, name: str) -> Collection:
        col = db.collections.get(name)
        if col is None:
            raise ApiError(404, 1203, "collection or view not found")
        return col

    def _r_collection_list(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        exclude = _bool(query.get("excludeSystem"), False)
        result = [c.info() for c in db.collections.values() if not (exclude and c.is_system)]
        return Reply(200, {"error": False, "code": 200, "result": result})

    def _r_collection_create(
        self, db: Database, args: list[str], query: dict, body: bytes
    ) -> Reply:
        data = _json_object(body)
        name = data.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,255}", name):
            return error(400, 1208, "illegal name")
        if name in db.collections:
            return error(409, 1207, "duplicate name")
        col = self.create_collection(
            db.name, name, edge=data.get("type") == 3, wait_for_sync=data.get("waitForSync") is True
        )
        body_out = col.properties()
        body_out.update({"error": False, "code": 200})
        return Reply(200, body_out)

    def _r_collection_info(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        out = self._col(db, args[0]).info()
        out.update({"error": False, "code": 200})
        return Reply(200, out)

    def _r_collection_properties(
        self, db: Database, args: list[str], query: dict, body: bytes
    ) -> Reply:
        out = self._col(db, args[0]).properties()
        out.update({"error": False, "code": 200})
        return Reply(200, out)

    def _r_collection_count(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        out = col.properties()
        out.update({"count": col.count(), "error": False, "code": 200})
        return Reply(200, out)

    # cursors
    def _r_cursor_create(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        try:
            data = jsonutil.loads(body) if body else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not data:
            return error(400, 600, "expecting non-empty JSON object body")
        q = data.get("query")
        if not isinstance(q, str) or not q.strip():
            return error(400, 1502, "query is empty")
        bind = data.get("bindVars", {})
        if bind is None:
            bind = {}
        if not isinstance(bind, dict):
            return error(400, 17, "expecting object for <bindVars>")
        batch_size = data.get("batchSize", 1000)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, float))
            or batch_size <= 0
        ):
            return error(400, 17, "expecting non-zero value for <batchSize>")
        ttl = data.get("ttl", 30)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            ttl = 30
        options = data.get("options") if isinstance(data.get("options"), dict) else {}
        allow_retry = bool(options.get("allowRetry", data.get("allowRetry", False)))
        stream = bool(options.get("stream", data.get("stream", False)))
        full_count = bool(options.get("fullCount", False))
        want_count = bool(data.get("count", False)) and not stream

        parsed = aql.parse(q)
        missing = [p for p in sorted(parsed.declared) if p not in bind]
        if missing:
            name = missing[0]
            return error(
                400,
                1551,
                f"no value specified for declared bind parameter '{name}' (while parsing)",
            )
        unused = [p for p in bind if p not in parsed.declared]
        if unused:
            return error(
                400,
                1552,
                f"bind parameter '{unused[0]}' was not declared in the query (while parsing)",
            )
        if parsed.collection_param is not None:
            cname = bind["@" + parsed.collection_param]
            if not isinstance(cname, str):
                return error(
                    400,
                    1553,
                    f"bind parameter '@{parsed.collection_param}' has an invalid value or type "
                    "(while parsing)",
                )
        else:
            cname = parsed.collection_name
        col = db.collections.get(cname)
        if col is None:
            return error(404, 1203, f"AQL: collection or view not found: {cname} (while parsing)")
        limit: int | None = None
        if parsed.limit_param is not None:
            limit = bind[parsed.limit_param]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                return error(
                    400,
                    1553,
                    f"bind parameter '{parsed.limit_param}' has an invalid value or type "
                    "(while parsing)",
                )
        elif parsed.limit_literal is not None:
            limit = parsed.limit_literal

        t0 = time.perf_counter()
        total = col.count()
        stats: dict[str, Any] = {
            "writesExecuted": 0,
            "writesIgnored": 0,
            "scannedFull": 0,
            "scannedIndex": 0,
            "filtered": 0,
            "httpRequests": 0,
            "executionTime": 0.0,
            "peakMemoryUsage": 0,
            "cursorsCreated": 0,
            "cursorsRearmed": 0,
            "cacheHits": 0,
            "cacheMisses": 0,
            "intermediateCommits": 0,
            "documentLookups": 0,
            "seeks": 0,
        }
        if parsed.kind == "key_at":
            offset = bind[parsed.offset_param]
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                return error(
                    400,
                    1553,
                    f"bind parameter '{parsed.offset_param}' has an invalid value or type "
                    "(while parsing)",
                )
            key = col.doc_at(offset, self.collation)["_key"] if offset < total else None
            results = ResultSet.of([] if key is None else [key])
            stats["scannedIndex"] = min(offset + 1, total)
        elif parsed.kind in ("keyset", "keyset_range", "scan"):
            start = (
                col.start_index(bind[parsed.last_param], self.collation)
                if parsed.kind != "scan"
                else 0
            )
            end = (
                col.end_index(bind[parsed.until_param], self.collation)
                if parsed.kind == "keyset_range"
                else total
            )
            end = max(start, end)
            stop = end if limit is None else min(end, start + limit)
            coll_name = self.collation
            if col.generated:
                results = ResultSet(
                    max(0, stop - start), lambda i, s=start: col.doc_at(s + i, coll_name)
                )
            else:
                results = ResultSet.of([col.doc_at(i, coll_name) for i in range(start, stop)])
            stats["scannedIndex"] = results.length
            if parsed.kind != "scan":
                stats["seeks"] = 1
            if full_count and limit is not None:
                stats["fullCount"] = end - start
        else:  # count_after / count_range / count_all
            start = (
                col.start_index(bind[parsed.last_param], self.collation)
                if parsed.kind != "count_all"
                else 0
            )
            end = (
                col.end_index(bind[parsed.until_param], self.collation)
                if parsed.kind == "count_range"
                else total
            )
            results = ResultSet.of([max(0, end - start)])
            stats["scannedIndex"] = max(0, end - start)
        stats["executionTime"] = time.perf_counter() - t0
        extra = {"warnings": [dict(w) for w in self.query_warnings], "stats": stats}
        cursor = Cursor(
            str(next(self._ticks) * 1000 + 7),
            db.name,
            results,
            int(batch_size),
            float(ttl),
            allow_retry,
            results.length if want_count else None,
            stream,
            extra,
        )
        body_out = self._next_batch(cursor, first=True)
        if body_out["hasMore"]:
            stats["cursorsCreated"] = 1
            cursor.touch()
            self.cursors[(db.name, cursor.id)] = cursor
        return Reply(201, body_out)

    def _next_batch(self, cursor: Cursor, first: bool = False) -> dict:
        items = cursor.results.slice(cursor.pos, cursor.pos + cursor.batch_size)
        cursor.pos += len(items)
        cursor.batch_id += 1
        has_more = cursor.pos < cursor.results.length
        out: dict[str, Any] = {"result": items, "hasMore": has_more}
        if has_more:
            out["id"] = cursor.id
            out["nextBatchId"] = str(cursor.batch_id + 1)
        if cursor.count is not None:
            out["count"] = cursor.count
        out["cached"] = False
        if (first and not cursor.stream) or (cursor.stream and not has_more):
            out["extra"] = cursor.extra
        out["error"] = False
        out["code"] = 201 if first else 200
        cursor.last_body = out
        cursor.exhausted = not has_more
        return out

    def _live_cursor(self, db: Database, cid: str) -> Cursor:
        cur = self.cursors.get((db.name, cid))
        if cur is not None and cur.expires < time.monotonic():
            del self.cursors[(db.name, cid)]
            cur = None
        if cur is None:
            raise ApiError(404, 1600, "cursor not found")
        if cur.busy:
            raise ApiError(409, 1601, "cursor is busy")
        return cur

    def _advance(self, db: Database, cur: Cursor) -> Reply:
        if cur.exhausted:
            raise ApiError(404, 1600, "batch id not found")
        out = self._next_batch(cur)
        cur.touch()
        if not out["hasMore"] and not cur.allow_retry:
            self.cursors.pop((db.name, cur.id), None)
        return Reply(200, out)

    def _r_cursor_next(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        return self._advance(db, self._live_cursor(db, args[0]))

    def _r_cursor_batch(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        cur = self._live_cursor(db, args[0])
        try:
            x = int(args[1])
        except ValueError:
            raise ApiError(404, 1600, "batch id not found") from None
        if x == cur.batch_id + 1:
            return self._advance(db, cur)
        if x == cur.batch_id:
            if not cur.allow_retry:
                return error(400, 400, "expecting allowRetry option to be true")
            cur.touch()
            out = dict(cur.last_body or {})
            out["code"] = 200
            return Reply(200, out)
        raise ApiError(404, 1600, "batch id not found")

    def _r_cursor_delete(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        self._live_cursor(db, args[0])
        del self.cursors[(db.name, args[0])]
        return Reply(202, {"id": args[0], "error": False, "code": 202})

    # import
    def _r_import(self, db: Database, args: list[str], query: dict, body: bytes) -> Reply:
        cname = query.get("collection")
        if not cname:
            return error(
                400, 1204, "'collection' is missing, expecting /_api/import?collection=<identifier>"
            )
        col = self._col(db, cname)
        itype = query.get("type", "")
        complete = _bool(query.get("complete"), False)
        details = _bool(query.get("details"), False)
        on_dup = query.get("onDuplicate", "error")
        overwrite = _bool(query.get("overwrite"), False)
        from_prefix, to_prefix = query.get("fromPrefix"), query.get("toPrefix")
        if on_dup not in ("error", "update", "replace", "ignore"):
            on_dup = "error"
        text = body.decode("utf-8", errors="replace")
        if itype == "auto":
            itype = "array" if text.lstrip().startswith("[") else "documents"
        items: list[Any] = []
        empty = 0
        if itype in ("array", "list"):
            try:
                parsed = jsonutil.loads(body)
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                return error(400, 400, "expecting a JSON array in the request")
            items = parsed
        elif itype == "documents":
            for line in body.split(b"\n"):
                if not line.strip():
                    empty += 1
                    continue
                try:
                    items.append(jsonutil.loads(line))
                except ValueError:
                    items.append(_Unparsable(line))
            if body.endswith(b"\n"):
                empty -= 1  # the final newline does not make an empty line
        else:  # tabular: first line = JSON array of attribute names, then one JSON array of values per line
            lines = [ln for ln in body.split(b"\n")]
            try:
                names = jsonutil.loads(lines[0]) if lines and lines[0].strip() else None
            except ValueError:
                names = None
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(n, str) for n in names)
            ):
                return error(400, 400, "no JSON array found in second line")
            for line in lines[1:]:
                if not line.strip():
                    empty += 1
                    continue
                try:
                    values = jsonutil.loads(line)
                except ValueError:
                    values = None
                if not isinstance(values, list) or len(values) != len(names):
                    items.append(_Unparsable(line))
                else:
                    items.append(dict(zip(names, values)))

        staged = {} if overwrite else dict(col.docs)
        created = errors = updated = ignored = 0
        msgs: list[str] = []
        last_value = col.last_value
        for pos, item in enumerate(items):
            problem: tuple[int, int, str] | None = None
            if not isinstance(item, dict):
                problem = (400, 1227, "invalid document type")
            else:
                doc = dict(item)
                if "_key" in doc:
                    key = doc["_key"]
                    if not isinstance(key, str) or not KEY_RE.match(key) or len(key.encode()) > 254:
                        problem = (400, 1221, "illegal document key")
                else:
                    last_value = max(last_value, int(time.time() * 1000) * 1000) + 1
                    key = str(last_value)
                if problem is None and col.type == 3:
                    for attr, prefix in (("_from", from_prefix), ("_to", to_prefix)):
                        v = doc.get(attr)
                        if isinstance(v, str) and prefix and "/" not in v:
                            v = f"{prefix}/{v}"
                            doc[attr] = v
                        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][\w\-]*/[^/]+", v):
                            problem = (400, 1233, "edge attribute missing or invalid")
                            break
                if problem is None:
                    doc["_key"] = key
                    doc["_id"] = f"{col.name}/{key}"
                    doc["_rev"] = self._rev()
                    if key in staged:
                        if on_dup == "error":
                            problem = (409, 1210, "unique constraint violated")
                        elif on_dup == "ignore":
                            ignored += 1
                        elif on_dup == "update":
                            merged = dict(staged[key])
                            merged.update(doc)
                            staged[key] = merged
                            updated += 1
                        else:
                            staged[key] = doc
                            updated += 1
                    else:
                        staged[key] = doc
                        created += 1
            if problem is not None:
                status, num, msg = problem
                offending = item.text if isinstance(item, _Unparsable) else jsonutil.dumps_str(item)
                if complete:
                    return error(status, num, msg)
                errors += 1
                if details:
                    msgs.append(
                        f"at position {pos}: creating document failed with error '{msg}', "
                        f"offending document: {offending}"
                    )
        if self.wal_imports:  # one transaction: removals (overwrite) first, then the writes
            txn = self._implicit(db, single=False, label="import")
            for key, doc in col.docs.items():
                if key not in staged:
                    txn.write(col, key, None, doc)
            for key, doc in staged.items():
                if col.docs.get(key) is not doc:
                    txn.write(col, key, doc, col.docs.get(key))
            txn.commit()
        else:
            col.docs = staged
        col.last_value = last_value
        col.invalidate()
        out: dict[str, Any] = {
            "error": False,
            "created": created,
            "errors": errors,
            "empty": max(empty, 0),
            "updated": updated,
            "ignored": ignored,
        }
        if details:
            out["details"] = msgs
        return Reply(201, out)

    def _rev(self) -> str:
        """A revision as arangod makes it: a hybrid logical clock (milliseconds since the epoch
        << 20, plus a counter while the clock stands still) in ArangoDB's base64 alphabet."""
        n = self._last_rev = max(int(time.time() * 1000) << 20, self._last_rev + 1)
        alphabet = "-_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        chars = []
        while n:
            chars.append(alphabet[n % 64])
            n //= 64
        return "".join(reversed(chars))


class _Unparsable:
    def __init__(self, line: bytes):
        self.text = line.decode("utf-8", errors="replace")


def _json_object(body: bytes) -> dict:
    try:
        data = jsonutil.loads(body) if body else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, 600, "expecting JSON object body")
    return data


def _route(method: str, path: str) -> tuple[str, list[str]]:
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    m = method.upper()
    if parts == ["_open", "auth"]:
        return ("open_auth" if m == "POST" else "method_not_allowed"), []
    if len(parts) < 2 or parts[0] != "_api":
        return "unknown", [path]
    api, rest = parts[1], parts[2:]
    if api == "wal":  # RestWalAccessHandler: any other suffix or method is a 400
        wal = {
            "tail": ("wal_tail", ("GET", "PUT")),
            "lastTick": ("wal_last_tick", ("GET",)),
            "range": ("wal_range", ("GET",)),
            "open-transactions": ("wal_open_transactions", ("GET",)),
        }.get(rest[0] if len(rest) == 1 else "")
        return (wal[0] if wal and m in wal[1] else "wal_invalid"), []
    if api == "replication":
        if rest == ["logger-state"]:
            return ("logger_state" if m == "GET" else "method_not_allowed"), []
        if rest == ["batch"]:
            return ("replication_batch_create" if m == "POST" else "method_not_allowed"), []
        if rest == ["inventory"]:
            return ("replication_inventory" if m == "GET" else "method_not_allowed"), []
        if len(rest) == 2 and rest[0] == "batch":
            route = {"PUT": "replication_batch_extend", "DELETE": "replication_batch_delete"}
            return route.get(m, "method_not_allowed"), rest[1:]
        return "replication_unsupported", rest
    if api == "transaction" and rest == ["begin"]:
        return ("transaction_begin" if m == "POST" else "method_not_allowed"), []
    if api == "collection" and len(rest) == 2 and rest[1] in ("rename", "truncate"):
        return ("collection_" + rest[1]) if m == "PUT" else "method_not_allowed", rest[:1]
    if api == "collection" and len(rest) == 2 and rest[1] == "properties" and m == "PUT":
        return "collection_configure", rest[:1]
    table: dict[tuple[str, int], dict[str, str]] = {
        ("version", 0): {"GET": "version"},
        ("database", 1): {"GET": "database_current"} if rest[:1] == ["current"] else {},
        ("collection", 0): {"GET": "collection_list", "POST": "collection_create"},
        ("collection", 1): {"GET": "collection_info", "DELETE": "collection_drop"},
        ("cursor", 0): {"POST": "cursor_create"},
        ("cursor", 1): {"POST": "cursor_next", "PUT": "cursor_next", "DELETE": "cursor_delete"},
        ("cursor", 2): {"POST": "cursor_batch"},
        ("import", 0): {"POST": "import"},
        ("document", 1): {
            "POST": "document_insert",
            "PATCH": "document_update_many",
            "PUT": "document_replace_many",  # also PUT ?onlyget=true: read many
            "DELETE": "document_delete_many",
        },
        ("document", 2): {
            "GET": "document_get",
            "HEAD": "document_head",
            "PATCH": "document_update",
            "PUT": "document_replace",
            "DELETE": "document_delete",
        },
        ("transaction", 0): {"GET": "transaction_list", "POST": "transaction_js"},
        ("transaction", 1): {
            "GET": "transaction_status",
            "PUT": "transaction_commit",
            "DELETE": "transaction_abort",
        },
        ("index", 0): {"GET": "index_list", "POST": "index_create"},
        ("index", 2): {"GET": "index_get", "DELETE": "index_drop"},
    }
    if api == "collection" and len(rest) == 2 and rest[1] in ("properties", "count"):
        return ("collection_" + rest[1]) if m == "GET" else "method_not_allowed", rest[:1]
    methods = table.get((api, len(rest)))
    if methods is None or not methods:
        return "unknown", [path]
    route = methods.get(m)
    return (route or "method_not_allowed"), rest


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True
    app: FakeArango

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a client killed or gone mid-request (the soak SIGKILLs them): not a server error
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 120

    def setup(self) -> None:
        super().setup()
        try:  # answers go out at once (no Nagle/delayed-ACK stalls of ~40 ms per request)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.app.lock:
            self.server.app._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        with self.server.app.lock:
            self.server.app._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        app = self.server.app
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("content-encoding", "").lower() == "deflate":
            import zlib

            body = zlib.decompress(body)
        reply, fault, route = app.handle(method, self.path, self.headers, body)
        kind = fault.kind if fault else None
        if kind == "delay" and not fault.before:
            time.sleep(fault.seconds)
        if kind == "drop":
            app.requests.append(RequestLog(method, self.path, route, None, kind))
            self._abort()
            return
        payload = reply.body if isinstance(reply.body, bytes) else jsonutil.dumps(reply.body)
        app.requests.append(
            RequestLog(
                method,
                self.path,
                route,
                reply.status,
                kind,
                isinstance(reply.body, dict) and reply.body.get("hasMore") is False,
            )
        )
        try:
            self.send_response(reply.status)
            headers = {"content-type": "application/json; charset=utf-8", "server": "ArangoDB"}
            if kind != "proxy429":
                headers["x-arango-queue-time-seconds"] = f"{app.queue_time:.6f}"
            headers.update(reply.headers)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(payload)))
            # headers and body in one write
            self._headers_buffer.append(b"\r\n")
            head = b"".join(self._headers_buffer)
            self._headers_buffer = []
            if kind == "truncate":
                self.wfile.write(head + payload[: max(1, len(payload) // 2)])
                self.wfile.flush()
                self._abort()
                return
            self.wfile.write(head if method == "HEAD" else head + payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl_errors()):
            self.close_connection = True

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def ssl_errors() -> type[BaseException]:
    try:
        import ssl

        return ssl.SSLError
    except ImportError:  # pragma: no cover
        return OSError
