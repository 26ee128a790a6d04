"""Document writes, stream transactions and collection/index DDL of the test server.

Mixed into server.FakeArango. Every write goes through a `Txn` and reaches the write-ahead log
(wal.py) when it commits:

- a single-document HTTP call (or the Python-side insert/update/replace/remove) is a single
  operation: one batch, markers with tid "0", no 2200/2201;
- an array call (POST/PATCH/PUT/DELETE /_api/document/{collection} with a JSON array), a truncate
  below `truncate_threshold` documents and the Python-side `transaction()` are transactions:
  2200 ... 2201 under a tid from the server's id counter (not the sequence counter), split into
  several groups with the same tid every `intermediate_commit_count` operations;
- a stream transaction (POST /_api/transaction/begin, then calls with `x-arango-trx-id`) keeps its
  writes to itself until PUT /_api/transaction/{id} commits them as one group (stream
  transactions make no intermediate commits); DELETE aborts and writes nothing, as RocksDB
  writes a transaction only when it commits. Keys written by an open transaction are locked:
  another writer gets 409/1200. An idle transaction expires after `trx_idle_timeout` seconds.
  `restart()` forgets open transactions.

Error numbers follow arangod (GeneralResponse::responseCode): 1202 document not found (404),
1210 unique constraint violated (409), 1200 _rev mismatch (412 with the current `_id`, `_key`,
`_rev`), 1200 write-write conflict (409), 1221 illegal key (400), 1227 invalid document type
(400), 1233 invalid edge attribute (400), 1203 unknown collection (404), 1655 transaction not
found (404), 1652 collection not declared for writing (400), 1653 commit of an aborted or abort
of a committed transaction (400; the docs say 409), 1654 expired transaction (410), 1212 index
not found (404).

Not modelled: AQL cursors and collection counts do not see a transaction's uncommitted writes;
the document API does not see the documents of a generated collection.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from etl import jsonutil

from .common import KEY_RE, ApiError, Reply, error, parse_bool
from .wal import (
    L_ABORT,
    L_BEGIN,
    L_COLL_CHANGE,
    L_COLL_DROP,
    L_COLL_RENAME,
    L_COLL_TRUNCATE,
    L_COMMIT,
    L_INDEX_CREATE,
    L_INDEX_DROP,
    R_DEF_DELETE,
    R_DEF_PUT,
    R_RANGE_DELETE,
    BatchWriter,
)

SYSTEM_ATTRS = frozenset(("_key", "_id", "_rev", "_from", "_to"))
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}$")
HANDLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}/[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$")
TRUNCATE_RANGE_DELETE_MIN = 32 * 1024  # RocksDBCollection::truncate's fast-path threshold
INTERMEDIATE_COMMIT_COUNT = 1_000_000  # --rocksdb.intermediate-commit-count
STREAM_IDLE_TIMEOUT = 60.0  # --transaction.streaming-idle-timeout


@dataclass
class Op:
    col: Any  # server.Collection
    key: str
    new: dict | None  # None: removed
    old: dict | None  # the document this write replaced (None: an insert)


class Txn:
    """The writes of one transaction; others see them only once they are committed."""

    def __init__(
        self,
        server: Any,
        db: Any,
        tid: int,
        *,
        single: bool = False,
        stream: bool = False,
        write: set[int] | None = None,
        intermediate_commit_count: int | None = None,
        label: str = "transaction",
    ):
        self.server, self.db, self.tid = server, db, tid
        self.single, self.stream, self.write_ids, self.label = single, stream, write, label
        self.icc = None if (single or stream) else intermediate_commit_count
        self.overlay: dict[tuple[int, str], dict | None] = {}
        self.pending: list[Op] = []
        self.status = "running"
        self.used = time.monotonic()

    # reads ------------------------------------------------------------------
    def lookup(self, col: Any, key: str) -> dict | None:
        ck = (col.id, key)
        if ck in self.overlay:
            return self.overlay[ck]
        return col.docs.get(key)

    def visible(self, col: Any) -> dict[str, dict]:
        mine = {k: v for (cid, k), v in self.overlay.items() if cid == col.id}
        if not mine:
            return col.docs
        out = dict(col.docs)
        for k, v in mine.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return out

    # writes -----------------------------------------------------------------
    def check_write(self, col: Any) -> None:
        if self.write_ids is not None and col.id not in self.write_ids:
            raise ApiError(
                400,
                1652,
                f"Transaction: collection '{col.name}' not declared for write access",
            )

    def write(self, col: Any, key: str, new: dict | None, old: dict | None) -> None:
        self.check_write(col)
        self.server._check_locks(col, key, self)
        self.overlay[(col.id, key)] = new
        self.pending.append(Op(col, key, new, old))
        if self.icc and len(self.pending) >= self.icc:
            self.flush()  # an intermediate commit: its own 2200...2201 group, the same tid

    def flush(self, marker: str = L_COMMIT) -> None:
        """Write the pending operations as one batch and apply them (not for L_ABORT)."""
        ops = [op for op in self.pending if self.db.collections.get(op.col.name) is op.col]
        self.pending = []
        self.overlay.clear()
        if not ops:
            return  # RocksDB writes nothing for a transaction without operations
        label = "abort" if marker == L_ABORT else self.label
        w = BatchWriter(label, self.db.id, 0 if self.single else self.tid)
        if not self.single:
            w.log(L_BEGIN, self.db.id, 0, self.tid)
        for op in ops:
            others = op.col.other_index_entries()
            if op.new is None:
                w.doc_remove(
                    self.db.id,
                    op.col.id,
                    op.key,
                    op.old["_rev"] if op.old else "",
                    others=others,
                    single=self.single,
                )
            else:
                w.doc_put(
                    self.db.id,
                    op.col.id,
                    op.new,
                    had_old=op.old is not None,
                    others=others,
                    single=self.single,
                )
        if not self.single:
            w.log(marker, self.db.id, 0, self.tid)
        self.server.wal.append(w)
        if marker == L_ABORT:
            return
        for op in ops:
            if op.new is None:
                op.col.docs.pop(op.key, None)
            else:
                op.col.docs[op.key] = op.new
        for col in {id(op.col): op.col for op in ops}.values():
            col.invalidate()

    def commit(self) -> None:
        self.flush()
        self.status = "committed"

    def abort(self, *, write_abort_marker: bool = False) -> None:
        if write_abort_marker:
            self.flush(L_ABORT)
        self.pending = []
        self.overlay.clear()
        self.status = "aborted"

    def expired(self) -> bool:
        return (
            self.stream
            and self.status == "running"
            and time.monotonic() - self.used > self.server.trx_idle_timeout
        )


class PyTransaction:
    """`with server.transaction(db) as t:` writes one committed group when the block ends
    (nothing if it raises). `t.abort(write_abort_marker=True)` writes the group with a 2202
    instead of 2201 and applies nothing, which real RocksDB never does: for client tests."""

    def __init__(self, server: Any, txn: Txn):
        self._server, self._txn = server, txn

    @property
    def tid(self) -> str:
        return str(self._txn.tid)

    def __enter__(self) -> PyTransaction:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        with self._server.lock:
            if self._txn.status == "running":
                if exc_type is None:
                    self._txn.commit()
                else:
                    self._txn.abort()
            self._server._open_txns.discard(self._txn)

    def _col(self, name: str) -> Any:
        return self._server._col(self._txn.db, name)

    def insert(self, collection: str, doc: dict, *, overwrite_mode: str | None = None) -> dict:
        with self._server.lock:
            new, _ = self._server._op_insert(
                self._txn, self._col(collection), doc, overwrite_mode=overwrite_mode
            )
            return dict(new)

    def update(
        self,
        collection: str,
        key: str,
        patch: dict,
        *,
        keep_null: bool = True,
        merge_objects: bool = True,
    ) -> dict:
        with self._server.lock:
            new, _ = self._server._op_update(
                self._txn,
                self._col(collection),
                key,
                patch,
                keep_null=keep_null,
                merge_objects=merge_objects,
            )
            return dict(new)

    def replace(self, collection: str, key: str, doc: dict) -> dict:
        with self._server.lock:
            new, _ = self._server._op_update(
                self._txn, self._col(collection), key, doc, replace=True
            )
            return dict(new)

    def remove(self, collection: str, key: str) -> dict:
        with self._server.lock:
            return dict(self._server._op_remove(self._txn, self._col(collection), key))

    def truncate(self, collection: str) -> None:
        with self._server.lock:
            col = self._col(collection)
            for key, doc in list(self._txn.visible(col).items()):
                self._txn.write(col, key, None, doc)

    def commit(self) -> None:
        with self._server.lock:
            self._txn.commit()

    def abort(self, *, write_abort_marker: bool = False) -> None:
        with self._server.lock:
            self._txn.abort(write_abort_marker=write_abort_marker)


class _Opts:
    """Query parameters of the document API."""

    def __init__(self, query: dict[str, str]):
        q = query
        self.wait_for_sync = parse_bool(q.get("waitForSync"), False)
        self.return_new = parse_bool(q.get("returnNew"), False)
        self.return_old = parse_bool(q.get("returnOld"), False)
        self.silent = parse_bool(q.get("silent"), False)
        self.keep_null = parse_bool(q.get("keepNull"), True)
        self.merge_objects = parse_bool(q.get("mergeObjects"), True)
        self.ignore_revs = parse_bool(q.get("ignoreRevs"), True)
        mode = q.get("overwriteMode")
        if mode not in ("ignore", "replace", "update", "conflict"):
            mode = "replace" if parse_bool(q.get("overwrite"), False) else None
        self.overwrite_mode = mode


def _json_body(body: bytes) -> Any:
    try:
        return jsonutil.loads(body) if body else None
    except ValueError:
        raise ApiError(400, 600, "VPackError error: Expecting a valid JSON value") from None


def _merge_objects(old: dict, patch: dict, keep_null: bool) -> dict:
    out = dict(old)
    for k, v in patch.items():
        if v is None and not keep_null:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_objects(out[k], v, keep_null)
        elif isinstance(v, dict) and not keep_null:
            out[k] = _merge_objects({}, v, keep_null)
        else:
            out[k] = v
    return out


def _if_match(headers: Any) -> str | None:
    value = headers.get("if-match") if headers is not None else None
    return value.strip().strip('"') if value else None


class DocumentApi:
    """Document, transaction, collection-DDL and index routes plus their Python-side API."""

    # state set up by FakeArango.__init__: transactions, _open_txns, trx_idle_timeout,
    # intermediate_commit_count, truncate_threshold

    # ------------------------------------------------------------ Python-side API
    def insert(
        self, db: str, collection: str, doc: dict, *, overwrite_mode: str | None = None
    ) -> dict:
        """Insert one document as a single operation (a tid "0" 2300); returns it as stored."""
        with self.lock:
            d = self.databases[db]
            txn = self._implicit(d, single=True, label="insert")
            new, _ = self._op_insert(
                txn, self._col(d, collection), doc, overwrite_mode=overwrite_mode
            )
            txn.commit()
            return dict(new)

    def insert_many(self, db: str, collection: str, docs: list[dict]) -> list[dict]:
        """Insert documents as one multi-document call: a 2200 ... 2201 group."""
        with self.lock:
            d = self.databases[db]
            txn = self._implicit(d, single=False, label="insert")
            col = self._col(d, collection)
            out = [dict(self._op_insert(txn, col, doc)[0]) for doc in docs]
            txn.commit()
            return out

    def update(
        self,
        db: str,
        collection: str,
        key: str,
        patch: dict,
        *,
        keep_null: bool = True,
        merge_objects: bool = True,
    ) -> dict:
        """PATCH semantics as a single operation; returns the whole new document."""
        with self.lock:
            d = self.databases[db]
            txn = self._implicit(d, single=True, label="update")
            new, _ = self._op_update(
                txn,
                self._col(d, collection),
                key,
                patch,
                keep_null=keep_null,
                merge_objects=merge_objects,
            )
            txn.commit()
            return dict(new)

    def replace(self, db: str, collection: str, key: str, doc: dict) -> dict:
        with self.lock:
            d = self.databases[db]
            txn = self._implicit(d, single=True, label="replace")
            new, _ = self._op_update(txn, self._col(d, collection), key, doc, replace=True)
            txn.commit()
            return dict(new)

    def remove(self, db: str, collection: str, key: str) -> dict:
        """Remove one document as a single operation (a tid "0" 2302); returns the old one."""
        with self.lock:
            d = self.databases[db]
            txn = self._implicit(d, single=True, label="remove")
            old = self._op_remove(txn, self._col(d, collection), key)
            txn.commit()
            return dict(old)

    def transaction(
        self, db: str, *, intermediate_commit_count: int | None = None
    ) -> PyTransaction:
        """A transaction on any collection of `db`; see PyTransaction."""
        with self.lock:
            d = self.databases[db]
            txn = Txn(
                self,
                d,
                next(self._ids),
                intermediate_commit_count=intermediate_commit_count,
            )
            self._open_txns.add(txn)
            return PyTransaction(self, txn)

    def rename_collection(self, db: str, name: str, new_name: str) -> None:
        with self.lock:
            d = self.databases[db]
            self._rename(d, self._col(d, name), new_name)

    def truncate_collection(self, db: str, name: str) -> None:
        with self.lock:
            d = self.databases[db]
            self._truncate(d, self._col(d, name))

    def configure_collection(self, db: str, name: str, *, wait_for_sync: bool) -> None:
        """A properties change: a 2003 with the full definition."""
        with self.lock:
            d = self.databases[db]
            col = self._col(d, name)
            col.wait_for_sync = wait_for_sync
            self._log_collection(L_COLL_CHANGE, "change", d, col)

    def create_index(
        self,
        db: str,
        collection: str,
        fields: list[str],
        *,
        unique: bool = False,
        sparse: bool = False,
        name: str | None = None,
    ) -> dict:
        """A persistent index (2100); from then on every write also takes its sequence numbers."""
        with self.lock:
            d = self.databases[db]
            spec = {"type": "persistent", "fields": fields, "unique": unique, "sparse": sparse}
            if name:
                spec["name"] = name
            return dict(self._index_create(d, self._col(d, collection), spec)[0])

    def drop_index(self, db: str, collection: str, index_id: str) -> None:
        with self.lock:
            d = self.databases[db]
            self._index_drop(d, self._col(d, collection), index_id)

    # ------------------------------------------------------------ transactions
    def _implicit(self, db: Any, *, single: bool, label: str) -> Txn:
        return Txn(
            self,
            db,
            0 if single else next(self._ids),
            single=single,
            intermediate_commit_count=self.intermediate_commit_count,
            label=label,
        )

    def _stream_txn(self, db: Any) -> Txn | None:
        """The transaction named by x-arango-trx-id, or None without the header."""
        value = self._request_headers().get("x-arango-trx-id")
        if value is None:
            return None
        txn = self.transactions.get(value.strip())
        if txn is None or txn.db is not db or txn.status != "running" or txn.expired():
            raise ApiError(404, 1655, f"transaction '{value.strip()}' not found")
        txn.used = time.monotonic()
        return txn

    def _txn_for(self, db: Any, *, single: bool, label: str) -> tuple[Txn, bool]:
        txn = self._stream_txn(db)
        if txn is not None:
            return txn, False
        return self._implicit(db, single=single, label=label), True

    def _check_locks(self, col: Any, key: str, me: Txn) -> None:
        for other in list(self.transactions.values()) + list(self._open_txns):
            if other is me or other.status != "running":
                continue
            if other.expired():
                other.abort()
                continue
            if (col.id, key) in other.overlay:
                raise ApiError(409, 1200, "write-write conflict")

    # ------------------------------------------------------------ document operations
    def _next_key(self, col: Any) -> str:
        col.last_value = max(col.last_value, int(time.time() * 1000) * 1000) + 1
        return str(col.last_value)

    def _build(self, col: Any, key: str, body: dict) -> dict:
        doc: dict[str, Any] = {"_key": key, "_id": f"{col.name}/{key}"}
        if col.type == 3:
            for attr in ("_from", "_to"):
                v = body.get(attr)
                if not isinstance(v, str) or not HANDLE_RE.match(v):
                    raise ApiError(400, 1233, "edge attribute missing or invalid")
                doc[attr] = v
        doc["_rev"] = self._rev()
        for k, v in body.items():
            if k not in SYSTEM_ATTRS:
                doc[k] = v
        return doc

    def _merged(
        self, col: Any, old: dict, patch: dict, keep_null: bool, merge_objects: bool
    ) -> dict:
        body = {k: v for k, v in old.items() if k not in SYSTEM_ATTRS}
        for k, v in patch.items():
            if k in SYSTEM_ATTRS:
                continue
            if v is None and not keep_null:
                body.pop(k, None)
            elif merge_objects and isinstance(v, dict) and isinstance(body.get(k), dict):
                body[k] = _merge_objects(body[k], v, keep_null)
            elif isinstance(v, dict) and not keep_null:
                body[k] = _merge_objects({}, v, keep_null)
            else:
                body[k] = v
        if col.type == 3:
            for attr in ("_from", "_to"):
                body[attr] = patch.get(attr, old.get(attr))
        return self._build(col, old["_key"], body)

    def _check_unique(self, txn: Txn, col: Any, doc: dict) -> None:
        unique = [i for i in col.indexes if i.get("unique")]
        if not unique:
            return
        docs = txn.visible(col)
        for idx in unique:
            values = tuple(doc.get(f) for f in idx["fields"])
            if idx.get("sparse") and any(v is None for v in values):
                continue
            for k, other in docs.items():
                if k != doc["_key"] and tuple(other.get(f) for f in idx["fields"]) == values:
                    raise ApiError(
                        409,
                        1210,
                        f"unique constraint violated - in index {idx['name']} of type "
                        f"persistent over '{', '.join(idx['fields'])}'; conflicting key: {k}",
                    )

    def _op_insert(
        self,
        txn: Txn,
        col: Any,
        body: Any,
        *,
        overwrite_mode: str | None = None,
        keep_null: bool = True,
        merge_objects: bool = True,
    ) -> tuple[dict, dict | None]:
        """Returns (the stored document, the one it replaced); no write for overwrite "ignore"
        on an existing key (then both are the existing document)."""
        if not isinstance(body, dict):
            raise ApiError(400, 1227, "invalid document type")
        txn.check_write(col)
        key = body.get("_key")
        if key is None:
            key = self._next_key(col)
        elif not isinstance(key, str) or not KEY_RE.match(key) or len(key.encode()) > 254:
            raise ApiError(400, 1221, "illegal document key")
        old = txn.lookup(col, key)
        if old is None:
            new = self._build(col, key, body)
        else:
            mode = overwrite_mode or "conflict"
            if mode == "ignore":
                return old, old
            if mode == "conflict":
                raise ApiError(
                    409,
                    1210,
                    "unique constraint violated - in index primary of type primary over "
                    f"'_key'; conflicting key: {key}",
                )
            if mode == "update":
                new = self._merged(col, old, body, keep_null, merge_objects)
            else:
                new = self._build(col, key, body)
        self._check_unique(txn, col, new)
        txn.write(col, key, new, old)
        return new, old

    def _op_update(
        self,
        txn: Txn,
        col: Any,
        key: str,
        patch: Any,
        *,
        replace: bool = False,
        keep_null: bool = True,
        merge_objects: bool = True,
        if_match: str | None = None,
        ignore_revs: bool = True,
    ) -> tuple[dict, dict]:
        if not isinstance(patch, dict):
            raise ApiError(400, 1227, "invalid document type")
        txn.check_write(col)
        old = txn.lookup(col, key)
        if old is None:
            raise ApiError(404, 1202, "document not found")
        expected = if_match or (None if ignore_revs else patch.get("_rev"))
        if expected is not None and expected != old["_rev"]:
            raise self._precondition(old)
        if replace:
            new = self._build(col, key, patch)
        else:
            new = self._merged(col, old, patch, keep_null, merge_objects)
        self._check_unique(txn, col, new)
        txn.write(col, key, new, old)
        return new, old

    def _op_remove(
        self,
        txn: Txn,
        col: Any,
        key: str,
        *,
        if_match: str | None = None,
    ) -> dict:
        txn.check_write(col)
        old = txn.lookup(col, key)
        if old is None:
            raise ApiError(404, 1202, "document not found")
        if if_match is not None and if_match != old["_rev"]:
            raise self._precondition(old)
        txn.write(col, key, None, old)
        return old

    @staticmethod
    def _precondition(doc: dict) -> ApiError:
        return ApiError(
            412,
            1200,
            "conflict, _rev values do not match",
            {"_id": doc["_id"], "_key": doc["_key"], "_rev": doc["_rev"]},
        )

    @staticmethod
    def _result(new: dict | None, old: dict | None, opts: _Opts, *, removed: bool = False):
        doc = old if removed else new
        assert doc is not None
        out: dict[str, Any] = {"_id": doc["_id"], "_key": doc["_key"], "_rev": doc["_rev"]}
        if not removed and old is not None and old is not new:
            out["_oldRev"] = old["_rev"]
        if opts.return_new and not removed and new is not None:
            out["new"] = new
        if opts.return_old and old is not None and (removed or old is not new):
            out["old"] = old
        return out

    # ------------------------------------------------------------ document routes
    def _write_status(self, col: Any, opts: _Opts, ok: int = 201) -> int:
        return ok if (opts.wait_for_sync or col.wait_for_sync) else 202

    def _many(
        self, db: Any, col: Any, items: list, opts: _Opts, label: str, one: Any, ok: int = 201
    ) -> Reply:
        txn, owned = self._txn_for(db, single=False, label=label)
        results: list[dict] = []
        codes: dict[str, int] = {}
        for item in items:
            try:
                results.append(one(txn, item))
            except ApiError as exc:
                err = {"error": True, "errorNum": exc.num, "errorMessage": str(exc)}
                if exc.extra:
                    err.update(exc.extra)
                results.append(err)
                codes[str(exc.num)] = codes.get(str(exc.num), 0) + 1
        if owned:
            txn.commit()
        headers = {"x-arango-error-codes": jsonutil.dumps_str(codes)} if codes else {}
        if opts.silent:
            out: Any = [r for r in results if r.get("error")] or {}
        else:
            out = results
        return Reply(self._write_status(col, opts, ok), out, headers)

    def _single(self, db: Any, col: Any, opts: _Opts, label: str, one: Any, ok: int = 201):
        txn, owned = self._txn_for(db, single=True, label=label)
        out = one(txn)
        if owned:
            txn.commit()
        headers = {"etag": f'"{out["_rev"]}"'}
        if label == "insert":
            headers["location"] = f"/_db/{db.name}/_api/document/{out['_id']}"
        return Reply(self._write_status(col, opts, ok), {} if opts.silent else out, headers)

    def _r_document_insert(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        opts = _Opts(query)
        data = _json_body(body)

        def one(txn: Txn, item: Any) -> dict:
            new, old = self._op_insert(
                txn,
                col,
                item,
                overwrite_mode=opts.overwrite_mode,
                keep_null=opts.keep_null,
                merge_objects=opts.merge_objects,
            )
            return self._result(new, old, opts)

        if isinstance(data, list):
            return self._many(db, col, data, opts, "insert", one)
        if not isinstance(data, dict):
            return error(400, 1227, "invalid document type")
        return self._single(db, col, opts, "insert", lambda txn: one(txn, data))

    def _modify(self, db: Any, args: list[str], query: dict, body: bytes, replace: bool) -> Reply:
        col = self._col(db, args[0])
        opts = _Opts(query)
        data = _json_body(body)
        label = "replace" if replace else "update"
        if_match = _if_match(self._request_headers())

        def one(txn: Txn, item: Any, key: str | None = None, match: str | None = None) -> dict:
            if not isinstance(item, dict):
                raise ApiError(400, 1227, "invalid document type")
            if key is None:
                key = item.get("_key")
                if not isinstance(key, str):
                    raise ApiError(400, 1205, "illegal document handle")
            new, old = self._op_update(
                txn,
                col,
                key,
                item,
                replace=replace,
                keep_null=opts.keep_null,
                merge_objects=opts.merge_objects,
                if_match=match,
                ignore_revs=opts.ignore_revs,
            )
            return self._result(new, old, opts)

        if len(args) == 1:
            if not isinstance(data, list):
                return error(400, 400, "expecting an array of documents")
            return self._many(db, col, data, opts, label, one)
        if not isinstance(data, dict):
            return error(400, 1227, "invalid document type")
        return self._single(db, col, opts, label, lambda txn: one(txn, data, args[1], if_match))

    def _r_document_update(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        return self._modify(db, args, query, body, replace=False)

    def _r_document_update_many(self, db: Any, args: list[str], query: dict, body: bytes):
        return self._modify(db, args, query, body, replace=False)

    def _r_document_replace(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        return self._modify(db, args, query, body, replace=True)

    def _r_document_replace_many(self, db: Any, args: list[str], query: dict, body: bytes):
        if parse_bool(query.get("onlyget"), False):
            return self._read_many(db, args, body)
        return self._modify(db, args, query, body, replace=True)

    def _r_document_delete(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        opts = _Opts(query)

        def one(txn: Txn, item: Any, match: str | None = None) -> dict:
            if isinstance(item, dict):
                key, rev = item.get("_key"), item.get("_rev")
                if match is None and not opts.ignore_revs and isinstance(rev, str):
                    match = rev
            else:
                key = item
            if isinstance(key, str) and "/" in key:
                key = key.split("/", 1)[1]
            if not isinstance(key, str):
                raise ApiError(400, 1205, "illegal document handle")
            old = self._op_remove(txn, col, key, if_match=match)
            return self._result(None, old, opts, removed=True)

        if len(args) == 1:
            data = _json_body(body)
            if not isinstance(data, list):
                return error(400, 400, "expecting an array of document keys")
            return self._many(db, col, data, opts, "remove", one, ok=200)
        match = _if_match(self._request_headers())
        return self._single(db, col, opts, "remove", lambda txn: one(txn, args[1], match), ok=200)

    def _r_document_delete_many(self, db: Any, args: list[str], query: dict, body: bytes):
        return self._r_document_delete(db, args, query, body)

    def _read_one(self, db: Any, args: list[str], head: bool) -> Reply:
        col = self._col(db, args[0])
        txn = self._stream_txn(db)
        doc = txn.lookup(col, args[1]) if txn else col.docs.get(args[1])
        if doc is None:
            return error(404, 1202, "document not found")
        headers = self._request_headers()
        etag = {"etag": f'"{doc["_rev"]}"'}
        none_match = headers.get("if-none-match")
        if none_match and none_match.strip().strip('"') == doc["_rev"]:
            return Reply(304, b"", etag)
        match = _if_match(headers)
        if match is not None and match != doc["_rev"]:
            return self._precondition(doc).reply
        return Reply(200, b"" if head else doc, etag)

    def _r_document_get(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        return self._read_one(db, args, head=False)

    def _r_document_head(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        return self._read_one(db, args, head=True)

    def _read_many(self, db: Any, args: list[str], body: bytes) -> Reply:
        col = self._col(db, args[0])
        data = _json_body(body)
        if not isinstance(data, list):
            return error(400, 400, "expecting an array of document keys")
        txn = self._stream_txn(db)
        out = []
        for item in data:
            key = item.get("_key") if isinstance(item, dict) else item
            if isinstance(item, dict) and key is None and isinstance(item.get("_id"), str):
                key = item["_id"]
            if isinstance(key, str) and "/" in key:
                key = key.split("/", 1)[1]
            doc = (
                (txn.lookup(col, key) if txn else col.docs.get(key))
                if isinstance(key, str)
                else None
            )
            if doc is None:
                out.append({"error": True, "errorNum": 1202, "errorMessage": "document not found"})
            else:
                out.append(doc)
        return Reply(200, out)

    # ------------------------------------------------------------ stream transactions
    def _r_transaction_begin(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        try:
            data = jsonutil.loads(body) if body else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("collections"), dict):
            return error(400, 10, "missing 'collections'")
        spec = data["collections"]
        names: dict[str, list[str]] = {}
        for mode in ("read", "write", "exclusive"):
            v = spec.get(mode)
            if v is None:
                names[mode] = []
            elif isinstance(v, str):
                names[mode] = [v]
            elif isinstance(v, list) and all(isinstance(n, str) and n for n in v):
                names[mode] = list(v)
            else:
                return error(400, 10, "invalid 'collections' attribute")
        write: set[int] = set()
        for mode in ("exclusive", "write", "read"):
            for name in names[mode]:
                col = db.collections.get(name)
                if col is None:
                    return error(404, 1203, f"collection or view not found:{name}")
                if mode != "read":
                    write.add(col.id)
        tid = next(self._ids)
        self.transactions[str(tid)] = Txn(self, db, tid, stream=True, write=write)
        return Reply(
            201, {"code": 201, "error": False, "result": {"id": str(tid), "status": "running"}}
        )

    def _managed(self, db: Any, tid: str) -> Txn:
        txn = self.transactions.get(tid)
        if txn is None or txn.db is not db:
            raise ApiError(404, 1655, "transaction not found")
        return txn

    @staticmethod
    def _trx_reply(tid: str, status: str) -> Reply:
        return Reply(200, {"code": 200, "error": False, "result": {"id": tid, "status": status}})

    def _r_transaction_status(self, db: Any, args: list[str], query: dict, body: bytes):
        txn = self._managed(db, args[0])
        return self._trx_reply(args[0], "aborted" if txn.expired() else txn.status)

    def _finish(self, db: Any, tid: str, commit: bool) -> Reply:
        txn = self._managed(db, tid)
        wanted = "committed" if commit else "aborted"
        if txn.status != "running":
            if txn.status == wanted:
                return self._trx_reply(tid, wanted)
            return error(400, 1653, f"transaction was already {txn.status}")
        if txn.expired():
            txn.abort()
            return error(410, 1654, "transaction aborted")
        if commit:
            txn.commit()
        else:
            txn.abort()
        return self._trx_reply(tid, wanted)

    def _r_transaction_commit(self, db: Any, args: list[str], query: dict, body: bytes):
        return self._finish(db, args[0], commit=True)

    def _r_transaction_abort(self, db: Any, args: list[str], query: dict, body: bytes):
        return self._finish(db, args[0], commit=False)

    def _r_transaction_list(self, db: Any, args: list[str], query: dict, body: bytes):
        running = [
            {"id": tid, "state": "running"}
            for tid, t in self.transactions.items()
            if t.db is db and t.status == "running" and not t.expired()
        ]
        return Reply(200, {"transactions": running})

    def _r_transaction_js(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        return error(501, 9, "JavaScript transactions are not implemented by the test server")

    # ------------------------------------------------------------ collection DDL
    def _log_collection(self, kind: str, label: str, db: Any, col: Any) -> None:
        w = BatchWriter(label, db.id)
        w.log(kind, db.id, col.id)
        w.rec(R_DEF_PUT, db.id, col.id, col.definition())
        self.wal.append(w)

    def _log_collection_drop(self, db: Any, col: Any) -> None:
        w = BatchWriter("drop", db.id)
        w.log(L_COLL_DROP, db.id, col.id, col.guid)
        w.rec(R_DEF_DELETE, db.id, col.id)
        self.wal.append(w)
        data = BatchWriter("drop-data", db.id)  # documents and indexes go in range deletes later
        for _ in range(2 + col.other_index_entries()):
            data.rec(R_RANGE_DELETE, db.id, col.id)
        self.wal.append(data)

    def _rename(self, db: Any, col: Any, new_name: str) -> None:
        if not isinstance(new_name, str) or not NAME_RE.match(new_name):
            raise ApiError(400, 1208, "illegal name")
        if new_name == col.name:
            return
        if new_name in db.collections:
            raise ApiError(409, 1207, "duplicate name")
        del db.collections[col.name]
        col.name = new_name
        db.collections[new_name] = col
        col.docs = {
            k: {a: (f"{new_name}/{k}" if a == "_id" else v) for a, v in doc.items()}
            for k, doc in col.docs.items()
        }
        col.invalidate()
        self._log_collection(L_COLL_RENAME, "rename", db, col)

    def _truncate(self, db: Any, col: Any) -> None:
        for other in list(self.transactions.values()) + list(self._open_txns):
            if other.status == "running" and any(cid == col.id for cid, _ in other.overlay):
                raise ApiError(409, 1200, "write-write conflict")
        if col.count() >= self.truncate_threshold:
            w = BatchWriter("truncate", db.id)
            w.log(L_COLL_TRUNCATE, db.id, col.id)
            for _ in range(2 + col.other_index_entries()):  # documents, primary, the others
                w.rec(R_RANGE_DELETE, db.id, col.id)
            self.wal.append(w)
            col.docs = {}
            col.generated = None
            col.invalidate()
            return
        txn = self._implicit(db, single=False, label="truncate")
        for key, doc in list(col.docs.items()):
            txn.write(col, key, None, doc)
        txn.commit()

    def _collection_reply(self, col: Any, props: bool = False) -> Reply:
        out = col.properties() if props else col.info()
        out.update({"error": False, "code": 200})
        return Reply(200, out)

    def _r_collection_drop(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        self.drop_collection(db.name, col.name)
        return Reply(200, {"id": str(col.id), "error": False, "code": 200})

    def _r_collection_rename(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        data = _json_body(body)
        name = data.get("name") if isinstance(data, dict) else None
        self._rename(db, col, name)
        return self._collection_reply(col)

    def _r_collection_truncate(self, db: Any, args: list[str], query: dict, body: bytes):
        col = self._col(db, args[0])
        txn = self._stream_txn(db)
        if txn is not None:
            for key, doc in list(txn.visible(col).items()):
                txn.write(col, key, None, doc)
        else:
            self._truncate(db, col)
        return self._collection_reply(col, props=True)

    def _r_collection_configure(self, db: Any, args: list[str], query: dict, body: bytes):
        col = self._col(db, args[0])
        data = _json_body(body)
        if not isinstance(data, dict):
            return error(400, 10, "expecting an object with collection properties")
        if isinstance(data.get("waitForSync"), bool):
            col.wait_for_sync = data["waitForSync"]
        self._log_collection(L_COLL_CHANGE, "change", db, col)
        return self._collection_reply(col, props=True)

    # ------------------------------------------------------------ indexes
    def _index_create(self, db: Any, col: Any, spec: Any) -> tuple[dict, bool]:
        if not isinstance(spec, dict):
            raise ApiError(400, 10, "expecting an object with the index definition")
        itype = spec.get("type")
        if itype not in ("persistent", "hash", "skiplist"):
            raise ApiError(400, 10, f"index type {itype!r} is not implemented by the test server")
        fields = spec.get("fields")
        if (
            not isinstance(fields, list)
            or not fields
            or not all(isinstance(f, str) and f for f in fields)
        ):
            raise ApiError(400, 10, "invalid index description: 'fields'")
        unique, sparse = bool(spec.get("unique", False)), bool(spec.get("sparse", False))
        for idx in col.indexes:
            if (idx["fields"], idx["unique"], idx["sparse"]) == (fields, unique, sparse):
                return idx, False
        iid = next(self._ids)
        idx = {
            "id": str(iid),
            "type": "persistent",
            "name": spec.get("name") or f"idx_{iid}",
            "fields": list(fields),
            "unique": unique,
            "sparse": sparse,
            "deduplicate": True,
            "estimates": True,
            "cacheEnabled": False,
        }
        if unique:
            seen: dict[tuple, str] = {}
            for key, doc in col.docs.items():
                values = tuple(doc.get(f) for f in fields)
                if sparse and any(v is None for v in values):
                    continue
                if values in seen:
                    raise ApiError(409, 1210, f"unique constraint violated; conflicting key: {key}")
                seen[values] = key
        col.indexes.append(idx)
        w = BatchWriter("index-create", db.id)
        w.log(L_INDEX_CREATE, db.id, col.id, dict(idx))
        w.rec(R_DEF_PUT, db.id, col.id, col.definition())
        self.wal.append(w)
        return idx, True

    def _index_drop(self, db: Any, col: Any, index_id: str) -> None:
        iid = index_id.split("/", 1)[-1]
        if iid in ("0", "1", "2") or iid in ("primary", "edge"):
            raise ApiError(403, 11, "cannot drop a system index")
        idx = next((i for i in col.indexes if i["id"] == iid), None)
        if idx is None:
            raise ApiError(404, 1212, "index not found")
        col.indexes.remove(idx)
        w = BatchWriter("index-drop", db.id)
        w.log(L_INDEX_DROP, db.id, col.id, iid)
        w.rec(R_DEF_PUT, db.id, col.id, col.definition())
        self.wal.append(w)
        data = BatchWriter("index-drop-data", db.id)
        data.rec(R_RANGE_DELETE, db.id, col.id)
        self.wal.append(data)

    @staticmethod
    def _index_json(col: Any, idx: dict) -> dict:
        out = dict(idx)
        out["id"] = f"{col.name}/{idx['id']}"
        return out

    def _index_collection(self, db: Any, query: dict) -> Any:
        name = query.get("collection")
        if not name:
            raise ApiError(400, 1204, "collection parameter missing")
        return self._col(db, name)

    def _r_index_list(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._index_collection(db, query)
        indexes = [self._index_json(col, i) for i in col.index_definitions()]
        return Reply(
            200,
            {
                "error": False,
                "code": 200,
                "indexes": indexes,
                "identifiers": {i["id"]: i for i in indexes},
            },
        )

    def _r_index_create(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._index_collection(db, query)
        idx, created = self._index_create(db, col, _json_body(body))
        out = self._index_json(col, idx)
        code = 201 if created else 200
        out.update({"isNewlyCreated": created, "error": False, "code": code})
        return Reply(code, out)

    def _r_index_get(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        idx = next((i for i in col.index_definitions() if i["id"] == args[1]), None)
        if idx is None:
            return error(404, 1212, "index not found")
        out = self._index_json(col, idx)
        out.update({"error": False, "code": 200})
        return Reply(200, out)

    def _r_index_drop(self, db: Any, args: list[str], query: dict, body: bytes) -> Reply:
        col = self._col(db, args[0])
        self._index_drop(db, col, args[1])
        return Reply(200, {"id": f"{col.name}/{args[1]}", "error": False, "code": 200})
