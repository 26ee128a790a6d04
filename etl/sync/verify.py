"""Continuous verification of what the follower applied: each changed key is read again from
ArangoDB after it is applied and its rows are compared field by field with reconcile's compare
objects (etl.reconcile.compare), so that the cutover verifies only the last changes inside the
freeze. The keys still to verify live in etl_sync_pending (sql/009), written in the apply's own
transaction; per collection counts in etl_sync_verified."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from etl import pg, target
from etl.canonical import canonical, loads_exact
from etl.mapping import Mapping
from etl.reconcile.buckets import server_compare_texts
from etl.reconcile.compare import TypeSpec, diff_paths, load_masks, type_specs
from etl.results import now_iso
from etl.sources.arango import ArangoSource, read_documents
from etl.sync.apply import EDGES_BY_KEY
from etl.sync.changes import Change
from etl.transform import EdgeLink, Row, Transformer, row_id

READERS = 4  # concurrent document reads: the source's HTTP pool keeps 4 connections


@dataclass
class Checked:
    """One verification: keys equal to the source per collection, and the differing ones."""

    verified: Counter = field(default_factory=Counter)
    verified_keys: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    differing: list[dict] = field(default_factory=list)  # {collection, key, fields}
    last_tick: dict[str, int] = field(default_factory=dict)

    def ok(self, collection: str, key: str) -> None:
        self.verified[collection] += 1
        self.verified_keys[collection].add(key)


def available(conn: psycopg.Connection) -> bool:
    return bool(pg.scalar(conn, "select to_regclass('etl_sync_pending') is not null"))


def add_pending(conn: psycopg.Connection, mapping: Mapping, changes: list[Change]) -> None:
    """In the apply's transaction: the mapped keys it changed, to verify later."""
    last: dict[tuple[str, str], int] = {}
    for ch in changes:
        if mapping.for_collection(ch.collection) is not None:
            last[(ch.collection, ch.key)] = ch.tick
    if not last:
        return
    cols, keys = zip(*last)
    conn.execute(
        "insert into etl_sync_pending (collection, key, tick)"
        " select * from unnest(%s::text[], %s::text[], %s::numeric[])"
        " on conflict (collection, key) do update set tick = greatest("
        "etl_sync_pending.tick, excluded.tick), checks = 0, fields = null",
        (list(cols), list(keys), list(last.values())),
    )


class Verifier:
    """Reads changed keys from the source and compares their rows in the target."""

    def __init__(self, mapping: Mapping, source: ArangoSource, run_id: str):
        self.mapping = mapping
        self.source = source
        self.run_id = run_id
        self._specs: dict[str, TypeSpec] | None = None

    def prepare(self, conn) -> None:
        """The compare specs, read once (the cutover: before its freeze, not in it)."""
        if self._specs is None:
            self._specs = type_specs(conn, self.mapping)
            conn.commit()

    # -- the pending record --------------------------------------------------------------
    def pending(self, conn) -> int:
        return conn.execute("select count(*) from etl_sync_pending").fetchone()[0]

    def verify_pending(self, conn, *, limit: int | None = None, retry_after: float = 0) -> Checked:
        """Verify pending keys (oldest change first; a key that differed is checked again only
        after retry_after seconds); equal ones leave the record and count as verified."""
        rows = conn.execute(
            "select collection, key, tick from etl_sync_pending"
            " where checked_at is null or checked_at < now() - make_interval(secs => %s)"
            " order by tick limit %s",
            (retry_after, limit),
        ).fetchall()
        conn.commit()
        if not rows:
            return Checked()
        keys: dict[str, dict[str, int]] = defaultdict(dict)
        for c, k, t in rows:
            keys[c][k] = int(t)
        got = self.check(conn, {c: set(ks) for c, ks in keys.items()})
        differing = {(d["collection"], d["key"]): d["fields"] for d in got.differing}
        with conn.transaction():
            for c, ks in keys.items():
                ok = [k for k in ks if (c, k) not in differing]
                if ok:  # a key changed again meanwhile (greater tick) stays pending
                    conn.execute(
                        "delete from etl_sync_pending p using unnest(%s::text[], %s::numeric[])"
                        " u(key, tick) where p.collection = %s and p.key = u.key"
                        " and p.tick <= u.tick",
                        (ok, [ks[k] for k in ok], c),
                    )
                    got.last_tick[c] = max(ks[k] for k in ok)
                    conn.execute(
                        "insert into etl_sync_verified as v (collection, keys_verified,"
                        " first_verified_at, last_verified_at, last_tick)"
                        " values (%s, %s, now(), now(), %s) on conflict (collection) do update"
                        " set keys_verified = v.keys_verified + excluded.keys_verified,"
                        " last_verified_at = now(),"
                        " last_tick = greatest(v.last_tick, excluded.last_tick)",
                        (c, len(ok), got.last_tick[c]),
                    )
            bad = [(c, k, f) for (c, k), f in differing.items()]
            if bad:
                conn.execute(
                    "update etl_sync_pending p set checks = p.checks + 1, fields = u.fields,"
                    " checked_at = now() from (select c, k, string_to_array(f, ',') fields"
                    " from unnest(%s::text[], %s::text[], %s::text[]) x(c, k, f)) u"
                    " where p.collection = u.c and p.key = u.k",
                    ([b[0] for b in bad], [b[1] for b in bad], [",".join(b[2]) for b in bad]),
                )
        return got

    # -- one check -----------------------------------------------------------------------
    def check(self, conn, keys: dict[str, set[str]]) -> Checked:
        """Each key's rows against the source document as it is now (absent: no row)."""
        out = Checked()
        self.prepare(conn)
        assert self._specs is not None
        transformer = Transformer(self.mapping, self.run_id, now_iso())
        for name, ks in keys.items():
            cm = self.mapping.for_collection(name)
            if cm is None:
                continue
            docs = self._read(name, sorted(ks))
            if cm.edge is not None:
                self._edges(conn, name, cm, ks, docs, transformer, out)
                continue
            rows: dict[str, list[Row]] = defaultdict(list)
            absent: list[str] = []  # keys that must have no row
            for k in ks:
                t = transformer.transform(name, docs[k]) if k in docs else None
                if isinstance(t, Row):
                    rows[t.document_type].append(t)
                else:  # removed, a reject or unmapped: a fresh migrate has no row for it
                    absent.append(k)
            refused = self._load_refused(conn, name, ks)
            for dt, batch in rows.items():
                self._rows(conn, name, self._specs[dt], batch, refused, out)
            self._absent(conn, name, cm, absent, out)
        conn.commit()
        return out

    def _read(self, name: str, keys: list[str]) -> dict[str, dict]:
        """One GET per key (the documented API has no batch read), READERS at a time: the
        cutover verifies its last changes inside the freeze, where round trips add up."""
        db, retry = self.source.arango_db(), self.source.retry
        if len(keys) <= READERS:
            return read_documents(db, name, keys, retry)
        found: dict[str, dict] = {}
        with ThreadPoolExecutor(READERS, thread_name_prefix="etl-verify-read") as pool:
            for part in pool.map(
                lambda ks: read_documents(db, name, ks, retry),
                [keys[i::READERS] for i in range(READERS)],
            ):
                found.update(part)
        return found

    @staticmethod
    def _load_refused(conn, name: str, keys: set[str]) -> set[str]:
        """Keys the target refused (kept in etl_rejects, stage load): no row is right for them."""
        return {
            k
            for (k,) in conn.execute(
                "select key from etl_rejects where collection = %s and stage = 'load'"
                " and key = any(%s)",
                (name, sorted(keys)),
            )
        }

    def _rows(self, conn, name, spec: TypeSpec, batch: list[Row], refused, out: Checked):
        exists: dict[str, set[bytes]] = defaultdict(set)
        for column, ref_type in spec.references.items():
            ids = sorted({r.values[column] for r in batch if r.values.get(column)})
            if ids:
                for (rid,) in conn.execute(
                    sql.SQL("select id from {} where id = any(%s::uuid[])").format(
                        target.ident(target.table(ref_type))
                    ),
                    (ids,),
                ):
                    exists[ref_type].add(rid.bytes if isinstance(rid, uuid.UUID) else rid)
        masks: set[tuple[str, str]] = set()
        masked: set[str] = set()
        cmps = {}
        for r in batch:
            row_masks: list[str] = []
            cmps[r.values["id"]] = (r.key, spec.compare(r.values, exists, row_masks, None))
            for col in row_masks:
                masks.add((r.values["id"], col))
                masked.add(col)
        load_masks(conn, masks)  # the same transaction as the query
        stored = server_compare_texts(conn, spec, masked, list(cmps))
        for rid, (key, cmp) in cmps.items():
            if rid not in stored:
                if key in refused:
                    out.ok(name, key)
                else:
                    out.differing.append(
                        {"collection": name, "key": key, "fields": ["(row missing)"]}
                    )
                continue
            if canonical(cmp) == stored[rid]:  # the same text: equal (reconcile's digests)
                out.ok(name, key)
                continue
            paths: list[str] = []
            diff_paths(cmp, loads_exact(stored[rid]), "", paths)
            if paths:
                fields = list(dict.fromkeys(re.split(r"[.\[]", p, maxsplit=1)[0] for p in paths))
                out.differing.append({"collection": name, "key": key, "fields": fields})
            else:
                out.ok(name, key)

    def _absent(self, conn, name, cm, keys: list[str], out: Checked) -> None:
        if not keys:
            return
        ids = {row_id(name, k): k for k in keys}
        present: set[str] = set()
        for tg in cm.targets():
            present |= {
                r
                for (r,) in conn.execute(
                    sql.SQL("select id::text from {} where id = any(%s::uuid[])").format(
                        target.ident(tg.table)
                    ),
                    (list(ids),),
                )
            }
        for rid, k in ids.items():
            if rid in present:
                out.differing.append(
                    {"collection": name, "key": k, "fields": ["(row kept, not in the source)"]}
                )
            else:
                out.ok(name, k)

    def _edges(self, conn, name, cm, keys: set[str], docs, transformer, out: Checked) -> None:
        """An edge is in its research row's metadata.edges as the source has it, or nowhere
        (removed, or an end missing: then it is a reject)."""
        table = target.table(cm.edge.to_document_type)
        stored: dict[str, tuple[str, dict]] = {}
        for rid, k, text in conn.execute(
            sql.SQL(EDGES_BY_KEY).format(target.ident(table)), (sorted(keys),)
        ):
            value = loads_exact(text)
            if isinstance(value, dict):
                value.pop("_etl_escaped", None)
            stored[k] = (rid, value)
        rejected = {
            k
            for (k,) in conn.execute(
                "select key from etl_rejects where collection = %s and key = any(%s)",
                (name, sorted(keys)),
            )
        }
        for k in keys:
            t = transformer.transform(name, docs[k]) if k in docs else None
            have = stored.get(k)
            fields: list[str] = []
            if isinstance(t, EdgeLink):
                if have is None:
                    if k not in rejected:
                        fields = ["(edge missing)"]
                elif have[0] != t.target_id:
                    fields = ["_to"]
                else:
                    paths: list[str] = []
                    diff_paths(t.edge, have[1], "", paths)
                    fields = list(
                        dict.fromkeys(re.split(r"[.\[]", p, maxsplit=1)[0] for p in paths)
                    )
            elif have is not None:
                fields = ["(edge kept, not in the source)"]
            if fields:
                out.differing.append({"collection": name, "key": k, "fields": fields})
            else:
                out.ok(name, k)


def verified_table(conn) -> list[dict]:
    """Per collection: keys verified, first and last time, keys still pending."""
    rows = conn.execute(
        "select coalesce(v.collection, p.collection), coalesce(v.keys_verified, 0),"
        " v.first_verified_at, v.last_verified_at, coalesce(p.n, 0), coalesce(p.differing, 0)"
        " from etl_sync_verified v full join (select collection, count(*) n,"
        " count(*) filter (where checks > 0) differing from etl_sync_pending group by collection)"
        " p on p.collection = v.collection order by 1"
    ).fetchall()
    conn.commit()
    return [
        {
            "collection": c,
            "keys_verified": int(n),
            "first_verified_at": first.isoformat() if first else None,
            "last_verified_at": last.isoformat() if last else None,
            "pending": int(p),
            "differing": int(d),
        }
        for c, n, first, last, p, d in rows
    ]
