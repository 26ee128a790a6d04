"""Apply committed WAL changes to the target in the caller's transaction, so that the tables
end as a fresh `etl migrate` of the source's current state would leave them:

- the last change of a key wins (each 2300 is the whole document, each 2302 a removal);
- removed documents, and documents that are now rejects, unmapped or routed to another table,
  lose their rows; the rows that referenced them stay, with the reference NULL (the raw key is
  in metadata.extra), never deleted by the schema's ON DELETE CASCADE;
- upserts go through the transform and the merge core as in migrate, in dependency order, with
  "the source has no value" meaning the column's default (the merge core alone would keep the
  old value);
- a parent that arrives after its children is linked to them; edges re-link or unlink their
  research rows, and an edge whose end is missing is a reject until that end arrives.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from etl import derived, jsonutil, links, state, target
from etl.errors import EtlError
from etl.load import DANGLING_EDGE, Loader
from etl.mapping import CollectionMapping, Mapping
from etl.results import now_iso
from etl.sync.changes import Change
from etl.transform import EdgeLink, Row, Transformer, Unmapped, not_a_row, row_id

# (research id, edge key, edge) of the given edge keys: one containment probe per key, which
# the GIN index on metadata answers (a key's value in metadata.edges is the edge object)
EDGES_BY_KEY = (
    "select r.id::text, k.key, (r.metadata -> 'edges' -> k.key)::text"
    " from unnest(%s::text[]) k(key) join {} r on r.metadata @> jsonb_build_object("
    "'edges', jsonb_build_object(k.key, '{{}}'::jsonb))"
)
# (research id, edge key, edge) of the edges from the given handles ("jobs/K"): the GIN index on
# metadata answers the jsonpath (a superset: lax mode also looks into arrays), and jsonb_each
# keeps exactly the edges of an object `edges` (0.3 ms for 3 jobs among 11k research rows; the
# scan of every row's edges took 38 ms and grew with the table)
EDGES_FROM = (
    "select r.id::text, e.key, e.value::text from {} r, jsonb_each(case when jsonb_typeof("
    "r.metadata -> 'edges') = 'object' then r.metadata -> 'edges' else '{{}}' end) e"
    " where r.metadata @? %s::jsonpath and e.value ->> '_from' = any(%s)"
)
FROMS_PER_PATH = 500  # alternatives in one jsonpath


def edges_from_path(froms: list[str]) -> str:
    """`$.edges.* ? (@._from == "jobs/1" || ...)`: JSON string literals are jsonpath's."""
    return jsonutil.jsonpath_any("$.edges.*", "@._from", froms)


@dataclass
class Applied:
    """What one apply did, per (collection, operation)."""

    counts: Counter = field(default_factory=Counter)
    rejects: list[tuple] = field(default_factory=list)

    def add(self, collection: str, operation: str, n: int = 1) -> None:
        if n:
            self.counts[(collection, operation)] += n


@dataclass
class Plan:
    """One batch of changes after the transform (Applier.prepare)."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    gone: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # table -> ids
    edge_upserts: dict[str, list[EdgeLink]] = field(default_factory=lambda: defaultdict(list))
    edge_touched: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    docs: dict[tuple[str, str], dict] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # changed keys
    out: Applied = field(default_factory=Applied)

    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def split(self) -> tuple[Plan, dict[str, list[Row]]]:
        """(this plan with every other row of each document type, those rows): the rows go to
        a second connection (Applier.upsert_share); the rest stays, with everything else."""
        kept: dict[str, list[Row]] = defaultdict(list)
        share: dict[str, list[Row]] = {}
        for dt, rows in self.rows.items():
            kept[dt], share[dt] = rows[::2], rows[1::2]
        return replace(self, rows=kept), {dt: rows for dt, rows in share.items() if rows}


class SplitFailed(EtlError):
    """The batch split over two connections could not be applied that way (a lock of the other
    connection, a row refused, the other part failed): the caller applies it on one."""


# A share's upserts must never wait long on the first connection's locks: that connection waits
# for the share's commit in Python, where PostgreSQL cannot see the deadlock.
SHARE_LOCK_TIMEOUT = "1s"


@dataclass
class Share:
    """What a second connection's upserts did (Applier.upsert_share), after its commit."""

    out: Applied
    upserted: dict[str, list[Row]]


class Applier:
    def __init__(self, mapping: Mapping, run_id: str):
        self.mapping = mapping
        self.run_id = run_id
        self._defaults: dict[str, dict[str, object]] | None = None
        # collection -> tick at or below which its changes are already in the target (its
        # copy's start; after a re-copy, the follower's old position for the others)
        self.floors: dict[str, int] = {}

    # -- entry points --------------------------------------------------------------------
    def apply(self, c: psycopg.Connection, changes: list[Change]) -> Applied:
        """prepare() then execute(), in the caller's transaction."""
        return self.execute(c, self.prepare(changes))

    def prepare(self, changes: list[Change]) -> Plan:
        """The transform's part, no database: which rows to upsert, which ids to delete, which
        edges to link, the rejects. The follower prepares the next batch while PostgreSQL
        executes this one."""
        plan = Plan()
        out = plan.out
        last: dict[tuple[str, str], Change] = {}
        for ch in changes:
            if ch.tick <= self.floors.get(ch.collection, 0):  # the copy already holds it
                continue
            if last.pop((ch.collection, ch.key), None) is not None:  # the later change wins
                out.add(ch.collection, "superseded")
            last[(ch.collection, ch.key)] = ch  # at the position of its last change
        by_collection: dict[str, list[Change]] = defaultdict(list)
        for ch in last.values():
            by_collection[ch.collection].append(ch)

        transformer = Transformer(self.mapping, self.run_id, now_iso())
        for name in self._order(by_collection):
            cm = self.mapping.for_collection(name)
            for ch in by_collection[name]:
                plan.keys[name].add(ch.key)
                if cm is None:
                    out.add(name, "skipped")
                    continue
                if cm.edge is not None:
                    plan.edge_touched[name].add(ch.key)
                    if ch.doc is None:
                        out.add(name, "remove")
                        continue
                t = None if ch.doc is None else transformer.transform(name, ch.doc)
                if ch.doc is not None:
                    plan.docs[(name, ch.key)] = ch.doc
                if isinstance(t, EdgeLink):
                    plan.edge_upserts[name].append(t)
                    continue
                tables = {tg.table for tg in cm.targets()}
                if isinstance(t, Row):
                    plan.rows[t.document_type].append(t)
                    tables.discard(target.table(t.document_type))  # routed elsewhere before?
                elif t is None:
                    out.add(name, "remove")
                else:  # Reject / Unmapped: a fresh migrate would keep it in etl_rejects
                    out.rejects.append(not_a_row(name, ch.doc, t))
                    out.add(name, "unmapped" if isinstance(t, Unmapped) else "reject")
                for table in tables:
                    plan.gone[table].add(row_id(name, ch.key))
        return plan

    def execute(
        self, c: psycopg.Connection, plan: Plan, share: Callable[[], Share] | None = None
    ) -> Applied:
        """The database's part, in the caller's transaction; may run again after a rollback
        (the plan is not changed). With `share`, the rest of the batch's rows were given to
        a second connection (Plan.split): this one upserts its own rows first, then waits for
        the share's commit (share() raises SplitFailed if it failed), then removes, links and
        relinks over the whole batch, whose rows it now sees. Removals come after the share's
        commit so that the references nulled before a delete include the share's rows (else
        ON DELETE CASCADE would take them)."""
        out = Applied(Counter(plan.out.counts), list(plan.out.rejects))
        c.execute("select set_config('etl.run_id', %s, true)", (self.run_id,))
        if share is None:
            first = self._forget_and_remove(c, plan, out)
            upserted = self._upsert(c, plan.rows, plan.docs, out)  # only rows not there before
        else:
            upserted = self._upsert(c, plan.rows, plan.docs, out, strict=True)
            theirs = share()
            out.counts.update(theirs.out.counts)
            for dt, rows in theirs.upserted.items():
                upserted[dt] = upserted.get(dt, []) + rows
            first = self._forget_and_remove(c, plan, out)
        links.link_arrived(c, self.mapping, self.run_id, _keys_by_collection(upserted))
        for name, keys in plan.edge_touched.items():
            self._edges(c, self.mapping.collections[name], keys, plan.edge_upserts[name], out)
        if upserted:
            self._retry_dangling_edges(c, upserted, out)
        state.write_rejects(c, self.run_id, out.rejects, first)
        return out

    def _forget_and_remove(self, c, plan: Plan, out: Applied) -> state.FirstSeen:
        """The changed keys' live rejects forgotten (the changes say what is now), then the
        removed rows deleted; returns when each forgotten reject was first seen."""
        first: state.FirstSeen = {}
        for name, keys in plan.keys.items():
            first.update(state.forget_rejects(c, name, keys))
        self._remove(c, plan.gone, out)
        return first

    def upsert_share(self, c: psycopg.Connection, rows: dict[str, list[Row]]) -> Share:
        """A second connection's part of a split batch: upserts only, in the caller's
        transaction, committed before the first connection goes on (Applier.execute). A row
        refused, or a wait on a lock longer than SHARE_LOCK_TIMEOUT, raises SplitFailed."""
        c.execute("select set_config('lock_timeout', %s, true)", (SHARE_LOCK_TIMEOUT,))
        c.execute("select set_config('etl.run_id', %s, true)", (self.run_id,))
        out = Applied()
        try:
            upserted = self._upsert(c, rows, {}, out, strict=True)
        except psycopg.errors.LockNotAvailable as exc:
            raise SplitFailed(f"the second connection waited on a lock: {exc}") from exc
        return Share(out, upserted)

    def _order(self, names) -> list[str]:
        rank = {n: i for i, n in enumerate(self.mapping.collections_in_order())}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))

    # -- removals ------------------------------------------------------------------------
    def _remove(self, c, gone: dict[str, set[str]], out: Applied) -> None:
        soft = self.mapping.on_remove == "soft"
        for table, ids in gone.items():
            ids_list = sorted(ids)
            if soft:
                c.execute(
                    sql.SQL(
                        "update {} set is_active = false, deleted_at = coalesce(deleted_at, now())"
                        " where id = any(%s::uuid[])"
                    ).format(target.ident(table)),
                    (ids_list,),
                )
                continue
            dangling = self._detach_children(c, table, ids_list, out)
            c.execute(
                sql.SQL("delete from {} where id = any(%s::uuid[])").format(target.ident(table)),
                (ids_list,),
            )
            for cm, to_table, froms in dangling:  # once the rows are gone: recomputed links
                self._unlink(c, cm, to_table, "from", froms, out, True)

    def _detach_children(self, c, table: str, ids: list[str], out: Applied) -> list[tuple]:
        """Before rows of `table` go: what references them keeps its row, reference NULL (as a
        fresh migrate leaves a dangling reference), and edges into them become rejects.
        Returns the edges from them to unlink once they are gone: (edge mapping, table, _from)."""
        dangling: list[tuple[CollectionMapping, str, list[str]]] = []
        dt = next((d for d in target.DOCUMENT_TYPES if target.table(d) == table), None)
        if dt is None:  # a generic table: nothing references its rows by a foreign key
            return dangling
        for child_dt in target.DOCUMENT_TYPES:
            for column, to in target.reference_columns(child_dt).items():
                if to == dt:
                    c.execute(
                        sql.SQL("update {t} set {c} = null where {c} = any(%s::uuid[])").format(
                            t=sql.Identifier(target.table(child_dt)), c=sql.Identifier(column)
                        ),
                        (ids,),
                    )
        for cm in self.mapping.collections.values():
            spec = cm.edge
            if spec is None:
                continue
            to_table = target.table(spec.to_document_type)
            if table == to_table:  # the research rows themselves go, with their edges
                cur = c.execute(
                    sql.SQL(
                        "select e.key, e.value::text from {} r,"
                        " jsonb_each(case when jsonb_typeof(r.metadata -> 'edges') = 'object'"
                        " then r.metadata -> 'edges' else '{{}}' end) e where r.id = any(%s::uuid[])"
                    ).format(sql.Identifier(to_table)),
                    (ids,),
                )
                for key, text in cur.fetchall():
                    self._dangling(cm.name, key, jsonutil.loads(text), out)
            from_tables = {
                t.table for t in self.mapping.collections[spec.from_collection].targets()
            }
            if table in from_tables:  # edges from removed jobs dangle now
                keys = self._keys_of(c, table, ids)
                froms = [f"{spec.from_collection}/{k}" for k in keys]
                dangling.append((cm, to_table, froms))
        return dangling

    @staticmethod
    def _keys_of(c, table: str, ids: list[str]) -> list[str]:
        return [
            k
            for (k,) in c.execute(
                sql.SQL(
                    "select metadata -> 'arango' ->> '_key' from {} where id = any(%s::uuid[])"
                ).format(sql.Identifier(table)),
                (ids,),
            )
            if k is not None
        ]

    def _dangling(self, collection: str, key: str, edge: dict, out: Applied) -> None:
        edge = dict(edge)
        edge.pop("_etl_escaped", None)
        out.rejects.append((collection, key, edge, DANGLING_EDGE, "link"))
        out.add(collection, "reject")

    # -- upserts -------------------------------------------------------------------------
    def _upsert(
        self, c, rows: dict[str, list[Row]], docs, out: Applied, strict: bool = False
    ) -> dict[str, list[Row]]:
        """Load rows per document type in dependency order; returns the new rows stored (only
        a new row can be the late parent of a row or the missing end of an edge). strict (a
        split batch): a refused row raises SplitFailed, since removing its old row here could
        race the other connection's rows."""
        if self._defaults is None:  # read once, by whichever connection upserts first
            self.load_defaults(c)
        stored: dict[str, list[Row]] = {}
        loader = Loader(c, self.run_id)
        order = self.mapping.document_types()
        for dt in sorted(rows, key=lambda d: order.index(d) if d in order else len(order)):
            batch = [self._with_defaults(r) for r in rows[dt]]
            lo = loader.load(dt, batch)
            if strict and lo.rejected:
                raise SplitFailed(f"{len(lo.rejected)} row(s) of {dt} refused by the table")
            collection = batch[0].values["metadata"]["arango"]["collection"]
            out.add(collection, "insert", lo.inserted)
            out.add(collection, "update", lo.updated)
            out.add(collection, "unchanged", lo.unchanged)
            refused = {r.key for r, _ in lo.rejected}
            for row, reason in lo.rejected:
                doc = docs.get((collection, row.key), row.values)
                out.rejects.append((collection, row.key, doc, reason, "load"))
                out.add(collection, "reject")
            if refused:  # a fresh migrate would have no row for them
                self._remove(c, {target.table(dt): {row_id(collection, k) for k in refused}}, out)
            kept = [r for r in batch if r.key not in refused]
            derived.refresh_rows(c, self.mapping, dt, [r.values["id"] for r in kept])
            stored[dt] = [r for r in kept if r.values["id"] in lo.inserted_ids]
        return {dt: new for dt, new in stored.items() if new}

    def _with_defaults(self, row: Row) -> Row:
        """A column the document has no value for gets its default: the merge core would
        otherwise keep the stored value, and the update would not replace the whole row."""
        defaults = self._column_defaults(row.document_type)
        missing = {k: v for k, v in defaults.items() if row.values.get(k) is None}
        if not missing:
            return row
        return Row(row.document_type, row.key, {**row.values, **missing}, row.warnings)

    def _column_defaults(self, document_type: str) -> dict[str, object]:
        return (self._defaults or {}).get(document_type, {})

    def load_defaults(self, c) -> None:
        """The constant column defaults of every document table (not now() and the like).
        Assigned once complete: two committer threads may both load them."""
        defaults: dict[str, dict[str, object]] = {}
        for dt in target.DOCUMENT_TYPES:
            found: dict[str, object] = {}
            for name, expr in c.execute(
                "select a.attname, pg_get_expr(d.adbin, d.adrelid) from pg_attrdef d"
                " join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum"
                " where d.adrelid = to_regclass(%s)",
                (target.table(dt),),
            ):
                value = _constant(expr)
                if value is not _NOT_CONSTANT and name not in target.JSONB_COLUMNS:
                    found[name] = value
            defaults[dt] = found
        self._defaults = defaults

    # -- edges ---------------------------------------------------------------------------
    def _edges(self, c, cm: CollectionMapping, keys: set[str], links: list[EdgeLink], out):
        """Touched edge keys leave every research row that records them; then the edges
        still in the source link again (a fresh migrate's outcome whatever moved)."""
        spec = cm.edge
        assert spec is not None  # an edge collection
        table = target.table(spec.to_document_type)
        c.execute(
            "delete from etl_rejects where collection = %s and stage = 'link' and key = any(%s)",
            (cm.name, sorted(keys)),
        )
        # and the dangling-edge rejects this batch made of them so far (a removed job's edge
        # that moved in the same batch): they are decided again below
        out.rejects[:] = [
            r for r in out.rejects if not (r[0] == cm.name and r[4] == "link" and r[1] in keys)
        ]
        self._unlink(c, cm, table, "key", sorted(keys), out, False)
        if not links:
            return
        result = Loader(c, self.run_id).link_edges(links, self._edge_set(cm))
        out.add(cm.name, "link", result.linked)
        out.add(cm.name, "unchanged", result.unchanged)
        for e in result.dangling:
            self._dangling(cm.name, e.key, e.edge, out)

    def _unlink(self, c, cm, table: str, by: str, values: list, out, reject: bool) -> None:
        """Remove the entries of metadata.edges with the given edge keys (by="key") or from the
        given handles (by="from"); with reject, they become dangling-edge rejects. The rows'
        job_id is recomputed. Both lookups go through the metadata GIN index."""
        if not values:
            return
        found = []
        if by == "key":
            query = sql.SQL(EDGES_BY_KEY).format(sql.Identifier(table))
            found = c.execute(query, (values,)).fetchall()
        else:
            query = sql.SQL(EDGES_FROM).format(sql.Identifier(table))
            for i in range(0, len(values), FROMS_PER_PATH):
                part = values[i : i + FROMS_PER_PATH]
                found += c.execute(query, (edges_from_path(part), part)).fetchall()
        if not found:
            return
        by_row: dict[str, list[str]] = defaultdict(list)
        for rid, key, text in found:
            by_row[rid].append(key)
            if reject:
                self._dangling(cm.name, key, jsonutil.loads(text), out)
        # one statement for every row (not one UPDATE per row): each row loses its own keys
        pairs = [(rid, k) for rid, ekeys in by_row.items() for k in ekeys]
        c.execute(
            sql.SQL(
                "update {} t set metadata = case when (t.metadata -> 'edges') - u.keys"
                " = '{{}}' then t.metadata - 'edges' else jsonb_set(t.metadata, '{{edges}}',"
                " (t.metadata -> 'edges') - u.keys) end from (select id, array_agg(key) keys"
                " from unnest(%s::uuid[], %s::text[]) x(id, key) group by id) u where t.id = u.id"
            ).format(sql.Identifier(table)),
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        )
        if not reject:
            out.add(cm.name, "unlink", len(found))
        self._recompute_sets(c, cm, list(by_row))

    def _edge_set(self, cm: CollectionMapping) -> derived.EdgeSet:
        es = derived.edge_set_for(self.mapping, cm.name)
        assert es is not None
        return es

    def _recompute_sets(self, c, cm: CollectionMapping, ids: list[str]) -> None:
        """The column an edge sets, by the one rule (etl/derived.py)."""
        derived.refresh(c, self._edge_set(cm), ids)

    def _retry_dangling_edges(self, c, upserted: dict[str, list[Row]], out: Applied) -> None:
        """An edge kept as a dangling reject links once both its ends exist."""
        for cm in self.mapping.collections.values():
            spec = cm.edge
            if spec is None:
                continue
            from_types = {
                t.document_type for t in self.mapping.collections[spec.from_collection].targets()
            }
            if not (set(upserted) & (from_types | {spec.to_document_type})):
                continue
            pending = c.execute(
                "select distinct on (key) id, key, document from etl_rejects"
                " where collection = %s and stage = 'link' and key is not null"
                " order by key, id desc",
                (cm.name,),
            ).fetchall()
            if not pending:
                continue
            arrived = {r.values["id"] for dt, rows in upserted.items() for r in rows}
            transformer = Transformer(self.mapping, self.run_id, now_iso())
            links = []
            for _id, _key, text in pending:
                t = transformer.transform(cm.name, jsonutil.loads(text))
                if isinstance(t, EdgeLink) and (t.target_id in arrived or t.job_id in arrived):
                    links.append(t)
            if not links:
                continue
            result = Loader(c, self.run_id).link_edges(links, self._edge_set(cm))
            still = {e.key for e in result.dangling}
            done = [link.key for link in links if link.key not in still]
            if done:
                c.execute(
                    "delete from etl_rejects where collection = %s and stage = 'link'"
                    " and key = any(%s)",
                    (cm.name, done),
                )
                out.add(cm.name, "link", len(done))


def _keys_by_collection(rows: dict[str, list[Row]]) -> dict[str, set[str]]:
    """collection -> keys of the rows (for etl/links.py: the parents that arrived)."""
    out: dict[str, set[str]] = defaultdict(set)
    for batch in rows.values():
        for r in batch:
            out[r.values["metadata"]["arango"]["collection"]].add(r.key)
    return out


_NOT_CONSTANT = object()
_STRING = re.compile(r"^'((?:[^']|'')*)'(?:::[\w ]+(?:\(\d+\))?)?$")


def _constant(expr: str | None):
    """The value of a constant default expression, or _NOT_CONSTANT."""
    if expr is None:
        return _NOT_CONSTANT
    e = expr.strip()
    if e in ("true", "false"):
        return e == "true"
    m = _STRING.match(e)
    if m:
        return m.group(1).replace("''", "'")
    if re.fullmatch(r"-?\d+", e):
        return int(e)
    return _NOT_CONSTANT
