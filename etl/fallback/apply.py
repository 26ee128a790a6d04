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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from etl.fallback import capture
from etl.fallback.inverse import DocPlan, EdgeOp, Inverter, Keys, NotInvertible, target_of
from etl.mapping import Mapping
from etl.target import ident, qualified
from etl.transform import Row

log = logging.getLogger("etl.fallback")

_SKIP = ("_id", "_rev")


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
        self.db = db
        self.run_id = run_id
        self.on_conflict = on_conflict
        self.retry = retry
        self.inverter = Inverter(mapping, specs, run_id)
        self.types = {qualified(dt): dt for dt in mapping.document_types()}

    # PostgreSQL reads -------------------------------------------------------------------
    def _lookup(self, document_type: str, rid: str) -> str | None:
        t = qualified(document_type)
        key = sql.SQL("key") if "." in t and not t.startswith("public.") else None
        expr = key or sql.SQL("coalesce(metadata -> 'arango' ->> '_key', 'pg-' || id::text)")
        row = self.conn.execute(
            sql.SQL("select {} from {} where id = %s").format(expr, ident(t)), (rid,)
        ).fetchone()
        return row[0] if row else None

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

    # ArangoDB writes --------------------------------------------------------------------
    def _get(self, collection: str, key: str) -> dict | None:
        return self.retry(
            f"read {collection}/{key}", lambda: self.db.collection(collection).get(key)
        )

    def _write(
        self,
        collection: str,
        key: str,
        doc: dict,
        expected: str | None,
        out: BatchResult,
        cur: dict | None | bool = False,
    ) -> dict | None:
        """Make collection/key hold doc (cur: the document read already, False: read it).
        The stored document (with _id, _rev), or None after a conflict left alone."""
        col = self.db.collection(collection)
        if cur is False:
            cur = self._get(collection, key)
        if cur is not None and _body(cur) == doc:
            out.applied[(collection, "unchanged")] += 1
            return cur
        if (cur is None and expected is None) or (cur is not None and cur["_rev"] == expected):
            op = "insert" if cur is None else "update"
        else:
            self._conflict(out, collection, key, "write", expected, cur)
            if self.on_conflict != "overwrite":
                return None
            op = "insert" if cur is None else "update"
        if op == "insert":
            meta = self.retry(f"insert {collection}/{key}", lambda: col.insert(doc))
        else:
            meta = self.retry(
                f"replace {collection}/{key}", lambda: col.replace(doc, check_rev=False)
            )
        out.applied[(collection, op)] += 1
        return {**doc, "_id": meta["_id"], "_rev": meta["_rev"]}

    def _remove(self, collection: str, key: str, expected: str | None, out: BatchResult) -> None:
        cur = self._get(collection, key)
        if cur is None:
            out.applied[(collection, "unchanged")] += 1
            return
        if expected is not None and cur["_rev"] != expected:
            self._conflict(out, collection, key, "remove", expected, cur)
            if self.on_conflict != "overwrite":
                return
        self.retry(
            f"remove {collection}/{key}",
            lambda: self.db.collection(collection).delete(key, ignore_missing=True),
        )
        out.applied[(collection, "remove")] += 1

    def _conflict(self, out, collection, key, operation, expected, cur) -> None:
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

    # one batch -------------------------------------------------------------------------
    def batch(self, limit: int) -> BatchResult:
        out = BatchResult()
        conn = self.conn
        changes, out.more = capture.read_committed(conn, limit)
        if not changes:
            conn.commit()
            return out
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
        writeback: list[tuple[str, str, dict]] = []  # (table, row id, metadata)
        for t, rid in last:
            dt = self.types.get(t)
            if dt is None:
                out.problems.append(f"{t}: captured but not in the mapping; skipped")
                continue
            row = rows.get((t, rid))
            try:
                if row is None:
                    self._apply_delete(dt, rid, old.get((t, rid)) or {}, out)
                else:
                    md = self._apply_row(dt, row, keys, out)
                    if md is not None:
                        writeback.append((t, rid, md))
            except NotInvertible as exc:
                out.problems.append(str(exc))
                out.applied[(t, "not_invertible")] += 1
        conn.rollback()  # the reads' transaction
        with conn.transaction():
            conn.execute("select set_config('etl.run_id', %s, true)", (self.run_id,))
            for t, rid, md in writeback:
                conn.execute(
                    sql.SQL("update {} set metadata = %s where id = %s").format(ident(t)),
                    (Jsonb(md), rid),
                )
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

    def _apply_delete(self, dt: str, rid: str, old_row: dict, out: BatchResult) -> None:
        cm, target, _ = target_of(self.mapping, dt)
        md = old_row.get("metadata") or {}
        arango = md.get("arango") if isinstance(md.get("arango"), dict) else {}
        key = old_row.get("key") if cm.generic is not None else arango.get("_key")
        self._remove(cm.name, key or f"pg-{rid}", arango.get("_rev"), out)
        edges = md.get("edges") if isinstance(md.get("edges"), dict) else {}
        spec = self.inverter_edge(dt)
        if spec is not None:
            for k, e in edges.items():
                self._remove(spec.collection, k, e.get("_rev"), out)

    def inverter_edge(self, dt: str):
        from etl.fallback.inverse import edge_spec_for

        return edge_spec_for(self.mapping, dt)

    def _apply_row(self, dt: str, row: dict, keys: Keys, out: BatchResult) -> dict | None:
        """Write the row's document (and edges); the row's new metadata, or None to keep it."""
        collection, key, expected = self.inverter.identity(dt, row)
        cur = self._get(collection, key)
        base = cur if cur is not None and expected is not None and cur["_rev"] == expected else None
        plan: DocPlan = self.inverter.plan(dt, row, keys, current=base)
        stored = self._write(plan.collection, plan.key, plan.doc, plan.expected_rev, out, cur)
        if stored is None:
            return None
        edges = dict(plan.kept_edges)
        for op in plan.edges:
            self._edge(op, edges, out)
        tr = self.inverter.transformer.transform(plan.collection, stored)
        if not isinstance(tr, Row):  # checked by the plan already
            raise NotInvertible(f"{dt} row {row['id']}: {getattr(tr, 'reason', tr)}")
        md = dict(tr.values["metadata"])
        old = row.get("metadata") or {}
        md["etl"] = old.get("etl") or {
            "run_id": self.run_id,
            "mapping_version": self.mapping.version,
        }
        if plan.edge_spec is not None and (edges or old.get("edges") is not None):
            md["edges"] = edges
        if md == old:
            return None
        return md

    def _edge(self, op: EdgeOp, edges: dict, out: BatchResult) -> None:
        if op.doc is None:
            self._remove(op.collection, op.key, op.expected_rev, out)
            return
        stored = self._write(op.collection, op.key, op.doc, op.expected_rev, out)
        if stored is not None:
            edges[op.key] = stored
