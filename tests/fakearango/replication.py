"""The WAL and replication routes of the test server and their Python-side API.

Mixed into server.FakeArango; the log itself is wal.py. Routes (their names key faults):

    wal_tail               GET  /_api/wal/tail  (PUT with a JSON array body is the same)
    wal_last_tick          GET  /_api/wal/lastTick
    wal_range              GET  /_api/wal/range
    wal_open_transactions  GET  /_api/wal/open-transactions (RocksDB: always none)
    wal_invalid            any other /_api/wal path or method: 400/400 as the 3.8 handler
    logger_state           GET  /_api/replication/logger-state
    replication_batch_create / replication_batch_extend / replication_batch_delete
                           POST /_api/replication/batch, PUT and DELETE .../batch/{id}
    replication_inventory  GET  /_api/replication/inventory?batchId= (collections, cuids)
    replication_unsupported  other /_api/replication commands: 501/9 (not implemented here)

Permissions (spec §1.1): /_api/wal/* needs an admin user, i.e. one whose configured access to
`_system` is read-write: root, a superuser JWT, every user when authentication is off, and users
added with `_system` among their databases unless `add_user(..., admin=False)`. Others get
403/11. logger-state and batch only need access to the database. In coordinator mode
(`set_coordinator(True)`) /_api/wal/* answers 501/1470 and logger-state 501/9; batch calls
without a DBserver parameter 400/400 (with one they are answered locally, as if forwarded).
"""

from __future__ import annotations

import time
from typing import Any

from etl import jsonutil

from .common import Reply, error
from .wal import (
    CHUNK_DEFAULT,
    CHUNK_MAX,
    CLIENT_TTL,
    DumpBatch,
    TailFilter,
    WalBatch,
    excluded_from_replication,
    parse_uint,
    scan,
    truthy,
    utc,
    valid_syncer_id,
)

WAL_USAGE = "expected GET /_api/wal/[tail|range|lastTick|open-transactions]>"


class ReplicationApi:
    # state set up by FakeArango.__init__: wal, dump_batches, coordinator, server_id

    # ------------------------------------------------------------ Python-side API
    def last_tick(self) -> int:
        """The latest sequence number (what /_api/wal/lastTick answers)."""
        with self.lock:
            return self.wal.latest

    def wal_range(self) -> tuple[int, int]:
        """(tickMin, tickMax) as /_api/wal/range reports them."""
        with self.lock:
            return self.wal.tick_min, self.wal.latest

    def wal_batches(self, db: str | None = None) -> list[WalBatch]:
        """The retained write batches (of database `db`, or all)."""
        with self.lock:
            names = {d.id: d.name for d in self.databases.values()}
            return [
                WalBatch(b.start, b.end, names.get(b.db), b.label, b.tid)
                for b in self.wal.batches
                if db is None or names.get(b.db) == db
            ]

    def wal_markers(
        self,
        db: str | None = None,
        *,
        from_tick: int = 0,
        include_system: bool = False,
        collection: str | None = None,
    ) -> list[dict]:
        """The markers a tail from `from_tick` would deliver, in one piece (db None: global)."""
        with self.lock:
            f = TailFilter(from_=from_tick, chunk=CHUNK_MAX, include_system=include_system)
            if db is not None:
                d = self.databases[db]
                f.db_id = d.id
                if collection is not None:
                    f.collection_id = d.collections[collection].id
            return scan(self.wal, f, *self._wal_lookup()).markers

    def prune_wal(self, upto: int | None = None, *, force: bool = False) -> int:
        """Advance tickMin as RocksDB's pruning would: drop every batch whose successor starts
        below min(upto, lowest lastServedTick of the live registrations); force=True ignores
        the registrations (the archive-size-limit overflow). Returns the new tickMin."""
        with self.lock:
            self.wal.prune(upto, force=force)
            return self.wal.tick_min

    def wal_clients(self) -> list[dict]:
        """The live registrations, as logger-state lists them."""
        with self.lock:
            return [c.as_json() for c in self.wal.live_clients()]

    def expire_wal_clients(self) -> int:
        """Let every registration lapse now (as after 2 h without a tail call)."""
        with self.lock:
            n = len(self.wal.clients)
            self.wal.clients.clear()
            return n

    @property
    def wal_client_ttl(self) -> float:
        """Seconds a tail call's registration lasts (7200 as in arangod)."""
        return self.wal.client_ttl

    @wal_client_ttl.setter
    def wal_client_ttl(self, seconds: float) -> None:
        self.wal.client_ttl = seconds

    def set_coordinator(self, on: bool = True) -> None:
        self.coordinator = on

    def background_write(self) -> int:
        """A write to `_system._statistics`, as arangod makes every few seconds: it moves the
        last tick but is never delivered (always filtered). Returns the new last tick."""
        with self.lock:
            self.insert("_system", "_statistics", {"time": time.time()})
            return self.wal.latest

    # ------------------------------------------------------------ helpers
    def _wal_lookup(self) -> tuple[dict[int, Any], dict[tuple[int, int], Any]]:
        dbs = {d.id: d for d in self.databases.values()}
        cols = {(d.id, c.id): c for d in self.databases.values() for c in d.collections.values()}
        return dbs, cols

    def _server_json(self) -> dict:
        return {"version": self.version, "serverId": str(self.server_id)}

    def _wal_guard(self) -> Reply | None:
        """RestWalAccessHandler::execute: coordinator first, then the admin check."""
        if self.coordinator:
            return error(501, 1470, "'/_api/wal' is not yet supported in a cluster")
        user = self._request_user()
        if user is None or not user.is_admin():
            return error(403, 11, "forbidden")
        return None

    def _logger_state_json(self) -> dict:
        latest = self.wal.latest
        return {
            "running": True,
            "lastLogTick": str(latest),
            "lastUncommittedLogTick": str(latest),
            "totalEvents": latest,
            "time": utc(),
        }

    # ------------------------------------------------------------ /_api/wal
    def _r_wal_invalid(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        return self._wal_guard() or error(400, 400, WAL_USAGE)

    def _r_wal_last_tick(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        guard = self._wal_guard()
        if guard:
            return guard
        return Reply(
            200, {"time": utc(), "tick": str(self.wal.latest), "server": self._server_json()}
        )

    def _r_wal_range(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        guard = self._wal_guard()
        if guard:
            return guard
        return Reply(
            200,
            {
                "time": utc(),
                "tickMin": str(self.wal.tick_min),
                "tickMax": str(self.wal.latest),
                "server": self._server_json(),
            },
        )

    def _r_wal_open_transactions(self, db: Any, args: list[str], query: dict, body: bytes):
        guard = self._wal_guard()
        if guard:
            return guard
        headers = {
            "x-arango-replication-frompresent": "true",
            "x-arango-replication-lastincluded": "0",
        }
        return Reply(200, [], headers)

    def _r_wal_tail(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        guard = self._wal_guard()
        if guard:
            return guard
        syncer_raw = query.get("syncerId")
        syncer_id = 0
        if syncer_raw is not None:
            if not valid_syncer_id(syncer_raw):
                return error(
                    400, 10, "syncerId must be a positive decimal number without leading zeros"
                )
            syncer_id = int(syncer_raw)
        server_id = parse_uint(query.get("serverId"))
        client_info = query.get("clientInfo", "")
        f = TailFilter()
        if truthy(query.get("global")):
            if db.name != "_system":
                return error(
                    403, 11, "global tailing is only possible from within _system database"
                )
        else:
            f.db_id = db.id
            cname = query.get("collection")
            if cname is not None:
                col = db.collections.get(cname) or next(
                    (c for c in db.collections.values() if str(c.id) == cname), None
                )
                if col is None:
                    return error(404, 1203, "collection or view not found")
                f.collection_id = col.id
        f.include_system = truthy(query.get("includeSystem"))
        f.include_foxx_queues = truthy(query.get("includeFoxxQueues"))
        if self._request_method() == "PUT":
            try:
                ids = jsonutil.loads(body) if body else None
            except ValueError:
                ids = None
            if not isinstance(ids, list):
                return error(400, 400, "invalid body value. expecting array")
        f.chunk = min(parse_uint(query.get("chunkSize"), CHUNK_DEFAULT), CHUNK_MAX)
        f.from_ = parse_uint(query.get("from"), 0)
        if "to" in query:
            f.to = parse_uint(query["to"])
            if f.from_ > f.to or f.to == 0:
                return error(400, 400, "invalid from/to values")
        f.last_scanned = parse_uint(query.get("lastScanned"), 0)
        res = scan(self.wal, f, *self._wal_lookup())
        if self.during_tail is not None:  # a commit between the scan and the lasttick read
            self.during_tail()
        latest = self.wal.latest  # read again after the scan, as arangod does (spec 2.2)
        self.wal.register(syncer_id, server_id, client_info, f.from_, self.wal.client_ttl)
        check_more = 0 < res.last_included < latest
        headers = {
            "content-type": "application/x-arango-dump",
            "x-arango-replication-checkmore": "true" if check_more else "false",
            "x-arango-replication-frompresent": "true" if res.from_present else "false",
            "x-arango-replication-lastincluded": str(res.last_included),
            "x-arango-replication-lastscanned": str(res.last_scanned),
            "x-arango-replication-lasttick": str(latest),
        }
        return Reply(200 if res.lines else 204, res.body, headers)

    # ------------------------------------------------------------ /_api/replication
    def _r_logger_state(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        if self.coordinator:
            return error(501, 9, "not implemented")
        return Reply(
            200,
            {
                "state": self._logger_state_json(),
                "server": {**self._server_json(), "engine": "rocksdb"},
                "clients": [c.as_json() for c in self.wal.live_clients()],
            },
        )

    def _dump_batch(self, batch_id: str) -> DumpBatch | None:
        b = self.dump_batches.get(batch_id)
        if b is not None and b.expires < time.monotonic():
            del self.dump_batches[batch_id]
            return None
        return b

    @staticmethod
    def _ttl(data: dict) -> float:
        ttl = data.get("ttl")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            return CLIENT_TTL
        return float(ttl)

    def _batch_body(self, query: dict, body: bytes) -> dict | Reply:
        if self.coordinator and "DBserver" not in query:
            return error(400, 400, 'need "DBserver" parameter')
        try:
            data = jsonutil.loads(body) if body else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return error(400, 400, "invalid JSON: expecting an object")
        return data

    def _r_replication_batch_create(self, db: Any, args: list[str], query: dict, body: bytes):
        data = self._batch_body(query, body)
        if isinstance(data, Reply):
            return data
        syncer_raw = query.get("syncerId")
        syncer_id = 0
        if syncer_raw is not None:
            if not valid_syncer_id(syncer_raw):
                return error(
                    400, 10, "syncerId must be a positive decimal number without leading zeros"
                )
            syncer_id = int(syncer_raw)
        server_id = parse_uint(query.get("serverId"))
        ttl = self._ttl(data)
        batch_id = str(next(self._ids))
        last = self.wal.latest
        self.dump_batches[batch_id] = DumpBatch(batch_id, last, time.monotonic() + ttl)
        self.wal.register(syncer_id, server_id, query.get("clientInfo", ""), last, ttl)
        self._batch_clients[batch_id] = (syncer_id, server_id)
        out: dict[str, Any] = {"id": batch_id, "lastTick": str(last)}
        if truthy(query.get("state")):
            out["state"] = self._logger_state_json()
        return Reply(200, out)

    def _r_replication_batch_extend(self, db: Any, args: list[str], query: dict, body: bytes):
        data = self._batch_body(query, body)
        if isinstance(data, Reply):
            return data
        b = self._dump_batch(args[0])
        if b is None:
            return error(404, 1600, "cursor not found")
        ttl = self._ttl(data)
        b.expires = time.monotonic() + ttl
        syncer_id, server_id = self._batch_clients.get(args[0], (0, 0))
        key = str(syncer_id) if syncer_id else (f"s{server_id}" if server_id else None)
        client = self.wal.clients.get(key) if key else None
        if client is not None:  # only the expiry moves, not the tick
            client.expires = time.time() + ttl
        return Reply(204, b"")

    def _r_replication_batch_delete(self, db: Any, args: list[str], query: dict, body: bytes):
        if self.coordinator and "DBserver" not in query:
            return error(400, 400, 'need "DBserver" parameter')
        if self._dump_batch(args[0]) is None:
            return error(404, 1600, "cursor not found")
        del self.dump_batches[args[0]]
        self._batch_clients.pop(args[0], None)  # the registration lapses on its own
        return Reply(204, b"")

    def _inventory_collections(self, db: Any, include_system: bool) -> list[dict]:
        out = []
        for col in db.collections.values():
            if excluded_from_replication(col.name, include_system, False):
                continue
            parameters = col.definition()
            del parameters["indexes"]
            out.append({"indexes": [dict(i) for i in col.indexes], "parameters": parameters})
        return out

    def _r_replication_inventory(self, db: Any, args: list[str], query: dict, body: bytes):
        """The collections with their globallyUniqueId (cuid -> name); `tick` is the server's
        id counter, not a WAL sequence number, as in arangod (spec §4.1)."""
        if self.coordinator and "DBserver" not in query:
            return error(400, 400, 'need "DBserver" parameter')
        batch_id = query.get("batchId")
        if batch_id is None:
            return error(404, 1600, "batchId not specified")
        if self._dump_batch(batch_id) is None:
            return error(404, 1600, "context is busy or nullptr")
        include_system = query.get("includeSystem") is None or truthy(query["includeSystem"])
        out: dict[str, Any] = {}
        if truthy(query.get("global")):
            if db.name != "_system":
                return error(
                    403, 11, "global inventory can only be created from within _system database"
                )
            out["databases"] = {
                str(d.id): {
                    "id": str(d.id),
                    "name": d.name,
                    "collections": self._inventory_collections(d, include_system),
                    "views": [],
                }
                for d in self.databases.values()
            }
        else:
            out["collections"] = self._inventory_collections(db, include_system)
            out["views"] = []
        out["state"] = self._logger_state_json()
        out["tick"] = str(next(self._ids))
        return Reply(200, out)

    def _r_replication_unsupported(self, db: Any, args: list[str], query: dict, body: bytes):
        return error(501, 9, f"replication command not implemented by the test server: {args}")
