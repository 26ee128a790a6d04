"""A parallel run's summary from what its workers committed (units, batches, rejects): the same
shape as a single-process run's, for its report and etl_runs."""

from __future__ import annotations

from etl import pg, units
from etl.results import EXAMPLES_PER_REASON, CollectionResult, RunSummary, now_iso
from etl.state import Counts


def summary_from_db(conn, mapping, run_id: str) -> RunSummary:
    """The run's summary from what the workers committed (units, batches, rejects): the same
    shape as a single-process run's, without its in-memory extras (field coverage, per-type
    counts, batch timings per batch), which no single worker sees whole."""
    run = conn.execute(
        "select state, started_at, source, target, options, error from etl_runs where run_id = %s",
        (run_id,),
    ).fetchone()
    opts = run[4] or {}
    names = opts.get("collections", [])
    source_counts = opts.get("source_counts", {})
    per_collection = units.collection_counts(conn, run_id)
    open_units = {
        c
        for (c,) in conn.execute(
            "select distinct collection from etl_work_units where run_id = %s and state <> 'done'",
            (run_id,),
        )
    }
    timing = {
        c: (float(s or 0), int(b or 0))
        for c, s, b in conn.execute(
            "select collection, extract(epoch from max(finished_at) - min(started_at)), 0"
            " from etl_work_units where run_id = %s and kind = 'range' group by collection",
            (run_id,),
        )
    }
    nbytes = dict(
        conn.execute(
            "select collection, sum(nbytes)::bigint from etl_batches where run_id = %s"
            " group by collection",
            (run_id,),
        ).fetchall()
    )
    collections = []
    for name in names:
        r = CollectionResult(name)
        r.source_count = int(source_counts.get(name, 0))
        r.counts, r.batches = per_collection.get(name, (Counts(), 0))
        r.seconds = timing.get(name, (0.0, 0))[0]
        r.nbytes = int(nbytes.get(name) or 0)
        if mapping.for_collection(name) is None:
            r.status = "unmapped"
            r.unmapped_reasons["not migrated (no mapping)"] = r.counts.unmapped
        else:
            r.status = "migrated" if name not in open_units else "incomplete"
        collections.append(r)
    by_name = {r.collection: r for r in collections}
    for name, reason, stage, n, examples in conn.execute(
        "select collection, case when stage = 'unmapped' then reason else split_part(reason, ':', 1) end,"
        " stage, count(*), (array_agg(coalesce(key, '') || ': ' || reason order by id))[1:%s]"
        " from etl_rejects where run_id = %s group by 1, 2, 3",
        (EXAMPLES_PER_REASON, run_id),
    ):
        found = by_name.get(name)
        if found is None:
            continue
        r = found
        if stage == "unmapped":
            r.unmapped_reasons[reason] += n
        else:
            r.reject_reasons[reason] += n
            r.reject_examples[reason].extend(examples)
    for name, keys in conn.execute(
        "select collection, (array_agg(key order by id))[1:1000] from etl_rejects"
        " where run_id = %s and stage = 'unmapped' and key is not null group by 1",
        (run_id,),
    ):
        if name in by_name:
            by_name[name].unmapped_keys = keys
    batch_size = int(opts.get("batch_size") or 0)  # every migrate records it
    index_builds = [
        b
        for (builds,) in conn.execute(
            "select counts -> 'index_builds' from etl_work_units where run_id = %s and kind = 'index'"
            " and state = 'done' order by unit_id",
            (run_id,),
        )
        for b in (builds or [])
    ]
    return RunSummary(
        run_id=run_id,
        command="migrate",
        dry_run=False,
        state=run[0],
        started_at=run[1].isoformat(),
        finished_at=now_iso(),
        source=run[2],
        target=run[3],
        schema_version=pg.schema_version(conn),
        server_version=pg.server_version(conn),
        mapping_version=str(mapping.version),
        batch_size=batch_size,
        collections=collections,
        error=run[5],
        index_builds=index_builds,
    )
