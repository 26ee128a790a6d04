"""One batch of `etl fallback`: read captured changes of ended transactions, write each changed
row's document to ArangoDB, then, in one PostgreSQL transaction, record the new provenance of
the rows (metadata.arango._rev ...), delete the applied changes and count them.

ArangoDB's writes cannot share that transaction, so each write is idempotent: the document is
always the row's state as of now (not the change's), and a document that already holds it is
left alone. After a crash between the two steps the changes are read again, the documents are
found holding what they should, and only the PostgreSQL step is done. A document whose `_rev`
is not the one the row's provenance names (and which does not already hold the row) was changed
in ArangoDB after the cutover: a conflict, recorded and not overwritten unless
on_conflict = "overwrite"."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from etl.fallback import capture, decoding
from etl.fallback.inverse import (
    KEY_PREFIX,
    DocPlan,
    Inverter,
    Keys,
    NotInvertible,
    edge_spec_for,
    key_for,
    provenance,
    reference_types,
    target_of,
)
from etl.fallback.writes import ArangoWriter, BatchResult, Ops
from etl.mapping import Mapping
from etl.target import ident, qualified
from etl.transform import Row

log = logging.getLogger("etl.fallback")

INFLIGHT = "etl_fallback_inflight"
# The provenance write-back gives up on a row the application holds before PostgreSQL looks for
# a deadlock (deadlock_timeout): so a deadlock between the two is never found, and the
# application's transaction is never the one aborted; the batch is simply done again.
LOCK_TIMEOUT_SQL = (
    "select set_config('lock_timeout', least(10000, greatest(10,"
    " extract(epoch from current_setting('deadlock_timeout')::interval) * 500))::int || 'ms',"
    " true)"
)


class Applier:
    def __init__(
        self,
        mapping: Mapping,
        conn: psycopg.Connection,
        db: Any,  # python-arango StandardDatabase
        *,
        run_id: str,
        specs: dict,
        on_conflict: str = "report",
        retry=lambda what, fn: fn(),
    ):
        self.mapping = mapping
        self.conn = conn
        self.writer = ArangoWriter(db, retry=retry, on_conflict=on_conflict)
        self.run_id = run_id
        self.inverter = Inverter(mapping, specs, run_id)
        self.types = {qualified(dt): dt for dt in mapping.document_types()}
        self.logical = False  # the capture is a replication slot (set per batch)

    # PostgreSQL reads -------------------------------------------------------------------
    def _lookup(self, document_type: str, rid: str) -> str | None:
        t = qualified(document_type)
        expr = self._key_sql(document_type)
        row = self.conn.execute(
            sql.SQL("select {} from {} where id = %s").format(expr, ident(t)), (rid,)
        ).fetchone()
        return row[0] if row else None

    def _key_sql(self, document_type: str) -> sql.Composable:
        """A row's ArangoDB key (inverse.key_for's for a row the application created)."""
        _, tg, _ = target_of(self.mapping, document_type)
        return sql.SQL("coalesce({}, {} || id::text)").format(
            sql.SQL(tg.key_sql), sql.Literal(KEY_PREFIX)
        )

    def _preload(self, keys: Keys, rows: dict[tuple[str, str], dict]) -> None:
        """The keys of the rows the batch's rows reference, one query per table."""
        wanted: dict[str, set[str]] = {}
        for (t, _), row in rows.items():
            dt = self.types.get(t)
            for col, rt in (reference_types(self.mapping, dt) if dt else {}).items():
                if row.get(col) is not None and row[col] not in keys.known:
                    wanted.setdefault(rt, set()).add(row[col])
        for rt, ids in wanted.items():
            t = qualified(rt)
            expr = self._key_sql(rt)
            found: dict[str, str] = dict(
                self.conn.execute(
                    sql.SQL("select id::text, {} from {} where id = any(%s::uuid[])").format(
                        expr, ident(t)
                    ),
                    (list(ids),),
                ).fetchall()
            )
            for rid in ids:
                keys.known[rid] = found.get(rid)

    def _rows(self, table: str, ids: list[str]) -> dict[str, dict]:
        return {
            str(r[0]["id"]): r[0]
            for r in self.conn.execute(
                sql.SQL("select to_jsonb(t) from {} t where id = any(%s::uuid[])").format(
                    ident(table)
                ),
                (ids,),
            )
        }

    # ArangoDB: reads and writes in bulk, one request per collection and kind -------------
    def _record_inflight(self, ops: Ops) -> None:
        """Commit the keys about to be written, before writing them."""
        keys = [
            (c, d["_key"]) for by in (ops.insert, ops.replace) for c, ds in by.items() for d in ds
        ]
        keys += [(c, k) for c, ks in ops.remove.items() for k in ks]
        self.conn.rollback()  # the reads' transaction
        if keys:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(
                    f"insert into {INFLIGHT} (collection, key) values (%s, %s)"
                    " on conflict do nothing",
                    keys,
                )

    # one batch -------------------------------------------------------------------------
    def batch(self, limit: int) -> BatchResult:
        out = BatchResult()
        conn = self.conn
        changes, out.more = capture.read_committed(conn, limit)
        st = capture.state(conn)
        self.logical = st is not None and st["mechanism"] == "logical"
        if not changes and self.logical and st is not None:
            # the slot keeps the backlog: a next part of it only when the table is empty
            _, out.problems = decoding.pump(conn, st, limit)
            changes, out.more = capture.read_committed(conn, limit)
        if not changes:
            conn.commit()
            return out
        self.writer.inflight = {
            tuple(r) for r in conn.execute(f"select collection, key from {INFLIGHT}")
        }
        # the last change of each row counts: its document is the row's state now
        last: dict[tuple[str, str], capture.Change] = {}
        old: dict[tuple[str, str], dict] = {}
        for c in changes:
            last.pop((c.table, c.row_id), None)
            last[(c.table, c.row_id)] = c
            if c.old_row is not None:
                old[(c.table, c.row_id)] = c.old_row
        by_table: dict[str, list[str]] = {}
        for t, rid in last:
            by_table.setdefault(t, []).append(rid)
        rows: dict[tuple[str, str], dict] = {}
        for t, ids in by_table.items():
            rows.update({(t, rid): r for rid, r in self._rows(t, ids).items()})
        keys = Keys(self._lookup)
        self._preload(keys, rows)
        writeback: list[tuple[str, str, dict]] = []  # (table, row id, metadata)
        work = []  # (table, row id, document type, row or None)
        reads: dict[str, set[str]] = {}
        for t, rid in last:
            dt = self.types.get(t)
            if dt is None:
                out.problems.append(f"{t}: captured but not in the mapping; skipped")
                continue
            row = rows.get((t, rid))
            if row is None:
                for collection, key, _ in self._delete_targets(dt, rid, old.get((t, rid)) or {}):
                    reads.setdefault(collection, set()).add(key)
            else:
                collection, key, _ = self.inverter.identity(dt, row)
                reads.setdefault(collection, set()).add(key)
            work.append((t, rid, dt, row))
        found: dict[tuple[str, str], dict | None] = {}  # ArangoDB's documents
        self.writer.get_many(reads, found)
        ops = Ops()
        plans: list[tuple[str, str, dict, DocPlan]] = []
        for t, rid, dt, row in work:
            if row is None:
                for collection, key, rev in self._delete_targets(dt, rid, old.get((t, rid)) or {}):
                    self.writer.decide(
                        ops, collection, key, None, rev, found[(collection, key)], out
                    )
                continue
            try:
                collection, key, expected = self.inverter.identity(dt, row)
                doc = found[(collection, key)]
                plans.append((t, rid, row, self._plan(dt, row, keys, doc, expected)))
            except NotInvertible as exc:
                out.problems.append(str(exc))
                out.applied[(t, "not_invertible")] += 1
        edge_reads: dict[str, set[str]] = {}
        for *_, plan in plans:
            for e in plan.edges:
                edge_reads.setdefault(e.collection, set()).add(e.key)
        self.writer.get_many(edge_reads, found)
        for *_, plan in plans:
            self.writer.decide(
                ops, plan.collection, plan.key, plan.doc, plan.expected_rev,
                found[(plan.collection, plan.key)], out,
            )  # fmt: skip
            for e in plan.edges:
                self.writer.decide(
                    ops,
                    e.collection,
                    e.key,
                    e.doc,
                    e.expected_rev,
                    found[(e.collection, e.key)],
                    out,
                )
        self._record_inflight(ops)
        self.writer.run(ops)
        for t, rid, row, plan in plans:
            md = self._provenance(plan, row, ops)
            if md is not None:
                writeback.append((t, rid, md))
        conn.rollback()  # the reads' transaction
        with conn.transaction():
            conn.execute("select set_config('etl.run_id', %s, true)", (self.run_id,))
            if self.logical:  # the slot decodes this transaction too: marked as etl's own
                conn.execute(
                    "select pg_logical_emit_message(true, %s, %s)",
                    (decoding.MESSAGE_PREFIX, self.run_id),
                )
            conn.execute(LOCK_TIMEOUT_SQL)
            updates: dict[str, list[tuple[Jsonb, str]]] = {}
            for t, rid, md in writeback:
                updates.setdefault(t, []).append((Jsonb(md), rid))
            for t, params in updates.items():
                with conn.cursor() as cur:  # executemany: one round trip (pipeline)
                    cur.executemany(
                        sql.SQL("update {} set metadata = %s where id = %s").format(ident(t)),
                        params,
                    )
            conn.execute(f"delete from {INFLIGHT}")
            seqs = [c.seq for c in changes]
            conn.execute("delete from etl_fallback_changes where seq = any(%s)", (seqs,))
            if out.conflicts:
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into etl_fallback_conflicts (collection, key, operation,"
                        " expected_rev, found_rev, overwritten, run_id) values"
                        " (%s, %s, %s, %s, %s, %s, %s)",
                        [
                            (
                                x["collection"], x["key"], x["operation"], x["expected_rev"],
                                x["found_rev"], x["overwritten"], self.run_id,
                            )
                            for x in out.conflicts
                        ],
                    )  # fmt: skip
            counts = [(c, op, n) for (c, op), n in out.applied.items() if n]
            if counts:
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into etl_fallback_applied (collection, operation, changes)"
                        " values (%s, %s, %s) on conflict (collection, operation) do update"
                        " set changes = etl_fallback_applied.changes + excluded.changes",
                        counts,
                    )
            conn.execute(
                "update etl_fallback_state set applied_seq = greatest(applied_seq, %s),"
                " applied_at = now(), last_change_at = %s,"
                " caught_up_at = case when %s then now() else caught_up_at end,"
                " updated_at = now() where id = 1",
                (max(seqs), max(c.changed_at for c in changes), not out.more),
            )
        now = time.time()
        out.lag_seconds = [now - c.changed_at.timestamp() for c in changes]
        out.changes = len(changes)
        return out

    def _plan(self, dt: str, row: dict, keys: Keys, cur: dict | None, expected: str | None):
        """The row's document: ArangoDB's patched where the row changed, when its _rev is the
        expected one or etl wrote it itself (a try of this batch that died before PostgreSQL's
        commit); else rebuilt from the row's provenance (and a conflict if the document
        exists)."""
        collection, key, _ = self.inverter.identity(dt, row)
        if cur is not None and (
            (expected is not None and cur["_rev"] == expected)
            or (collection, key) in self.writer.inflight
        ):
            return self.inverter.plan(dt, row, keys, current=cur)
        return self.inverter.plan(dt, row, keys)

    def _delete_targets(
        self, dt: str, rid: str, old_row: dict
    ) -> list[tuple[str, str, str | None]]:
        """(collection, key, expected _rev) of what a deleted row's removal removes: its
        document and, for a research row, its edges."""
        cm, tg, _ = target_of(self.mapping, dt)
        md = old_row.get("metadata") or {}
        arango = provenance(md)
        key = tg.key_of(old_row)
        out = [(cm.name, key or key_for(rid), arango.get("_rev"))]
        spec = edge_spec_for(self.mapping, dt)
        edges = md["edges"] if isinstance(md.get("edges"), dict) else {}
        if spec is not None:
            out += [(spec.collection, k, e.get("_rev")) for k, e in edges.items()]
        return out

    def _provenance(self, plan: DocPlan, row: dict, ops: Ops) -> dict | None:
        """The row's metadata after the write (None: keep it, e.g. after a conflict): what the
        transform of the stored document says, its 'etl' entry kept, edges as stored."""
        stored = ops.stored.get((plan.collection, plan.key))
        if stored is None:
            return None
        tr = self.inverter.transformer.transform(plan.collection, stored)
        if not isinstance(tr, Row):  # checked by the plan already
            return None
        md = dict(tr.values["metadata"])
        old = row.get("metadata") or {}
        md["etl"] = old.get("etl") or {
            "run_id": self.run_id,
            "mapping_version": self.mapping.version,
        }
        if plan.edge_spec is not None:
            edges = dict(plan.kept_edges)
            for e in plan.edges:
                if e.doc is not None and (e.collection, e.key) in ops.stored:
                    edges[e.key] = ops.stored[(e.collection, e.key)]
                elif (
                    e.doc is not None
                    and isinstance(old.get("edges"), dict)
                    and e.key in old["edges"]
                ):
                    edges[e.key] = old["edges"][e.key]  # a conflict: as it was
            if edges or old.get("edges") is not None:
                md["edges"] = edges
        return None if md == old else md
