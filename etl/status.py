"""`etl status`: runs, checkpoints of the latest migrate run, the latest reconcile per collection."""

from __future__ import annotations

from etl import pg, state
from etl.owners import OWNER_SQL, owner


def status(dsn: str, *, limit: int = 10, run: str | None = None) -> dict[str, list[dict]]:
    """Recent runs (or only `run`), the checkpoints and work units of the latest migrate run (or
    of `run`), the latest reconcile per collection and the change capture."""
    with pg.connect(dsn) as conn:
        state.require_schema(conn)
        runs = _dicts(
            conn.execute(
                "select run_id, command, state, started_at, finished_at, heartbeat_at, source, error,"
                f" {OWNER_SQL} from etl_runs where %(run)s::text is null or run_id = %(run)s"
                " order by started_at desc limit %(limit)s",
                {"run": run, "limit": limit},
            )
        )
        for r in runs:  # a 'running' run whose owner is gone was interrupted (etl/owners.py)
            o = owner([r.pop("host"), r.pop("pid"), r.pop("heartbeat_age")])
            if r["state"] == "running" and not o.alive:
                r["state"] = "interrupted"
                r["error"] = r["error"] or f"stale: {o.why_stale()}"
        latest = (
            (run,)
            if run is not None
            else conn.execute(
                "select run_id from etl_runs where command = 'migrate'"
                " order by started_at desc limit 1"
            ).fetchone()
        )
        checkpoints, work_units = [], []
        if latest:
            # a parallel run: its units by collection and state, who holds them, until when
            work_units = _dicts(
                conn.execute(
                    "select collection, kind, state, count(*) as units, sum(batches) as batches,"
                    " sum((counts ->> 'read')::bigint) as read, string_agg(distinct worker, ' ') as workers,"
                    " max(lease_until) as lease_until, max(error) as error from etl_work_units where run_id = %s"
                    " group by collection, kind, state order by min(unit_id)",
                    (latest[0],),
                )
            )
            checkpoints = _dicts(
                conn.execute(
                    "select collection, done, position, batches, read, inserted, updated, unchanged,"
                    " rejected, unmapped, dangling, updated_at from etl_checkpoints where run_id = %s"
                    " order by collection",
                    (latest[0],),
                )
            )
        reconciles = _dicts(
            conn.execute(
                "select distinct on (c.key) c.key as collection, r.run_id, r.finished_at,"
                # a sampled reconcile compared only part of the keys: it says so
                " case when c.value->>'sample_percent' is null then c.value->>'status'"
                " else (c.value->>'status') || ' (sampled '"
                " || trim_scale((c.value->>'sample_percent')::numeric) || '%)'"
                " end as result, c.value->>'differences' as differences"
                " from etl_runs r cross join lateral jsonb_each(coalesce(r.summary, '{}')) c"
                " where r.command = 'reconcile' and r.state = 'finished'"
                " order by c.key, r.started_at desc"
            )
        )
        # the reject store holds only live rejects (a key read again loses its old ones)
        rejects = _dicts(
            conn.execute(
                "select collection, stage, count(*) as rejects from etl_rejects"
                " group by collection, stage order by collection, stage"
            )
        )
        sync, sync_applied, sync_verified = [], [], []
        if pg.scalar(conn, "select to_regclass('etl_wal_positions') is not null"):
            # lag in seconds: since the follower last read everything there was
            sync = _dicts(
                conn.execute(
                    "select kind, run_id, base_run_id as follows, from_tick as position,"
                    " server_tick, greatest(0, server_tick - greatest(from_tick, last_scanned) - 1)"
                    " as lag_ticks,"
                    " round(extract(epoch from now() - coalesce(caught_up_at, created_at)))"
                    " as lag_seconds, caught_up_at, applied_at, updated_at"
                    " from etl_wal_positions where kind = 'follow'"
                    " union all (select kind, run_id, base_run_id, start_tick, server_tick, null,"
                    " null, null, null, updated_at from etl_wal_positions where kind <> 'follow'"
                    " order by created_at desc limit 3)"
                )
            )
            sync_applied = _dicts(
                conn.execute(
                    "select collection, operation, changes from etl_sync_applied"
                    " order by collection, operation"
                )
            )
            if pg.scalar(conn, "select to_regclass('etl_sync_lag') is not null"):
                # commit in ArangoDB to row in PostgreSQL, over the follower's latest changes
                lag = conn.execute(
                    "select p50_ms, p99_ms, changes, updated_at from etl_sync_lag"
                    " where run_id = 'follow'"
                ).fetchone()
                for row in sync:
                    if row["kind"] == "follow":
                        row["lag_p50_ms"], row["lag_p99_ms"] = (
                            (lag[0], lag[1]) if lag else (None, None)
                        )
                from etl.sync.verify import verified_table

                sync_verified = verified_table(conn)
        from etl.fallback.commands import status as fallback_status

        fallback = fallback_status(conn)
        fallback_applied = (
            _dicts(
                conn.execute(
                    "select collection, operation, changes from etl_fallback_applied"
                    " order by collection, operation"
                )
            )
            if fallback
            else []
        )
    return {
        "fallback": fallback,
        "fallback_applied": fallback_applied,
        "sync": sync,
        "sync_applied": sync_applied,
        "sync_verified": sync_verified,
        "runs": runs,
        "checkpoints": checkpoints,
        "work_units": work_units,
        "reconciles": reconciles,
        "rejects": rejects,
    }


def _dicts(cur) -> list[dict]:
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]
