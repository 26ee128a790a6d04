"""Parallel runs (`etl migrate --workers N`, `etl worker --run ID`): the same rows as one
process, key ranges from the server's order, dependencies, and a killed worker's unit taken over
after its lease, never done twice."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from etl import units
from etl.migrate import Migration
from etl.parallel import ParallelMigration, needs_of
from etl.reconcile import Reconciliation
from etl.settings import load_settings
from tests.datagen import generate
from tests.helpers import (
    NOT_ANALYZED,
    SEARCH_VECTORS_WRONG,
    arango_env,
    error_lines,
    etl,
    etl_popen,
    scalar,
    seed_dataset,
)

TABLES = ("resume_documents", "job_documents", "optimization_results", "research_results")
# what a row holds apart from provenance (run id, timestamps): identical whoever loaded it
ROW_SQL = (
    "select id::text, user_id, parsed_data::text, metadata - 'migrated_at' - 'run_id' - 'etl'"
    " from {t} order by id"
)


def rows(dsn: str) -> dict[str, list]:
    with psycopg.connect(dsn) as conn:
        out = {
            t: [(r[0], r[1], r[2], _strip(r[3])) for r in conn.execute(ROW_SQL.format(t=t))]
            for t in TABLES
        }
        out["links"] = conn.execute(
            "select id::text, resume_id::text, job_id::text, parent_optimization_id::text"
            " from optimization_results order by id"
        ).fetchall()
        out["research"] = conn.execute(
            "select id::text, job_id::text, resume_id::text from research_results order by id"
        ).fetchall()
        out["rejects"] = conn.execute(
            "select collection, key, stage, split_part(reason, ':', 1) from etl_rejects"
            " order by 1, 2, 3"
        ).fetchall()
    return out


def _strip(meta: dict) -> dict:
    meta = dict(meta or {})
    for k in ("migrated_at", "run_id", "etl"):
        meta.pop(k, None)
    return meta


@pytest.fixture
def dataset(seeded_arango):
    return seeded_arango(240, seed=31, bad=True)


def test_three_workers_give_the_rows_of_one_process(
    make_db, tmp_path, arango_server, dataset, monkeypatch
):
    monkeypatch.setattr(
        "etl.parallel.plan.MIN_RANGE_DOCS", 20
    )  # several ranges even for this small data set
    one, three = make_db(schema=True), make_db(schema=True)
    env1, env3 = (
        arango_env(arango_server, one, tmp_path),
        arango_env(arango_server, three, tmp_path),
    )
    Migration(
        load_settings(None, env=env1), all_=True, batch_size=20, retry_wait=lambda rs: 0
    ).run()
    m = Migration(load_settings(None, env=env3), all_=True, batch_size=20, retry_wait=lambda rs: 0)
    summary = ParallelMigration(m, workers=3, lease_seconds=30).run()
    assert summary.state == "finished"
    assert rows(one) == rows(three)
    by_name = {c.collection: c for c in summary.collections}
    for name, count in dataset.counts.items():
        c = by_name[name]
        assert c.source_count == count
        assert c.counts.loaded + c.counts.rejected + c.counts.unmapped == count, name
    with psycopg.connect(three) as conn:
        # resumes were split into several key ranges, each read exactly once
        ranges = conn.execute(
            "select count(*), sum((counts ->> 'read')::int) from etl_work_units"
            " where collection = 'resumes' and kind = 'range'"
        ).fetchone()
        assert ranges[0] > 1 and ranges[1] == dataset.counts["resumes"]
        assert (
            conn.execute("select count(*) from etl_work_units where state <> 'done'").fetchone()[0]
            == 0
        )
        assert conn.execute("select count(distinct worker) from etl_work_units").fetchone()[0] >= 2
        # a dependent collection's ranges started only after the collections it points at were done
        early = conn.execute(
            "select count(*) from etl_work_units d join etl_work_units r on r.run_id = d.run_id"
            " and r.collection = any(d.needs) where d.kind = 'range' and d.started_at < r.finished_at"
        ).fetchone()[0]
        assert early == 0
        assert (
            conn.execute(
                "select state from etl_runs where run_id = %s", (summary.run_id,)
            ).fetchone()[0]
            == "finished"
        )
        assert conn.execute("select count(*) from etl_deferred_indexes").fetchone()[0] == 0
        assert conn.execute(SEARCH_VECTORS_WRONG).fetchone()[0] == 0  # filled by 'index' units
        assert conn.execute(NOT_ANALYZED).fetchone()[0] == []  # the final unit analyzed them
    assert (tmp_path / "reports" / f"{summary.run_id}.json").exists()
    from etl.status import status

    shown = status(three)["work_units"]
    assert {u["state"] for u in shown} == {"done"}
    assert (
        sum(u["read"] or 0 for u in shown if u["collection"] == "resumes")
        == dataset.counts["resumes"]
    )
    rec = Reconciliation(load_settings(None, env=env3), all_=True).run()
    assert not rec.has_differences


def test_dependencies_come_from_the_mapping():
    from etl.mapping import load_mapping

    mapping = load_mapping("configs/atspro.toml")
    names = set(mapping.collections_in_order())
    assert needs_of(mapping, "resumes", names) == []
    assert set(needs_of(mapping, "job_research", names)) >= {"jobs"}
    assert needs_of(mapping, "task_results", names) == []


def start_parallel(
    arango_server,
    schema_db,
    tmp_path,
    n_resumes: int,
    data_seed: int,
    *args: str,
    delay: float = 0.05,
):
    """`etl migrate ARGS` as a subprocess over generated data, every ArangoDB request slowed by
    `delay` so that a test can act while the workers are mid-unit. Returns (dataset, env, process)."""
    ds = generate(n_resumes, seed=data_seed)
    seed_dataset(arango_server, ds)
    env = arango_env(arango_server, schema_db, tmp_path)
    arango_server.slow(delay, count=100000, routes=None)
    proc = etl_popen("migrate", *args, env=env)
    return ds, env, proc


def wait_for_row(conn, query: str, timeout: float = 60):
    """The first row of `query` over etl_work_units once it has one (None after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.execute("select to_regclass('etl_work_units')").fetchone()[0]:
            row = conn.execute(query).fetchone()
            if row:
                return row
        time.sleep(0.05)
    return None


def test_a_killed_worker_unit_is_taken_over_and_done_once(schema_db, tmp_path, arango_server):
    ds, env, proc = start_parallel(
        arango_server,
        schema_db,
        tmp_path,
        300,
        32,
        "--collection",
        "resumes",
        "--batch",
        "10",
        "--workers",
        "2",
        "--lease-seconds",
        "3",
        delay=0.15,
    )
    with psycopg.connect(schema_db, autocommit=True) as conn:
        victim = wait_for_row(
            conn,
            "select unit_id, worker from etl_work_units where state = 'running'"
            " and kind = 'range' and batches >= 1 order by unit_id limit 1",
        )
    assert victim is not None, "no worker got going"
    unit_id, worker = victim
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    arango_server.clear_faults()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    with psycopg.connect(schema_db) as conn:
        got = conn.execute(
            "select state, attempts, worker, counts ->> 'read' from etl_work_units"
            " where unit_id = %s",
            (unit_id,),
        ).fetchone()
        assert got[0] == "done" and got[1] >= 2 and got[2] != worker  # taken over by another worker
        total = conn.execute(
            "select sum((counts ->> 'read')::int) from etl_work_units"
            " where kind = 'range' and collection = 'resumes'"
        ).fetchone()[0]
        # every document read exactly once across the units' committed checkpoints
        assert total == ds.counts["resumes"]
    assert scalar(schema_db, "select count(*) from resume_documents") == ds.counts["resumes"]
    keys = [
        k
        for (k,) in psycopg.connect(schema_db).execute(
            "select metadata->'arango'->>'_key' from resume_documents"
        )
    ]
    assert sorted(keys) == sorted(d["_key"] for d in ds["resumes"])
    assert "starting another" in err  # the coordinator replaced the dead process


def test_a_second_machine_joins_with_etl_worker(schema_db, tmp_path, arango_server):
    ds, env, coord = start_parallel(
        arango_server, schema_db, tmp_path, 200, 33, "--all", "--batch", "10", "--workers", "2"
    )
    with psycopg.connect(schema_db, autocommit=True) as conn:
        run_id = (wait_for_row(conn, "select run_id from etl_work_units limit 1") or [None])[0]
    assert run_id
    joined = etl("worker", "--run", run_id, env=env, timeout=240)
    arango_server.clear_faults()
    out, err = coord.communicate(timeout=240)
    assert coord.returncode in (0, 1), err[-3000:]  # 1: the generated data has rejects
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert f"run {run_id}: finished" in joined.stdout or "units done" in joined.stdout
    with psycopg.connect(schema_db) as conn:
        assert conn.execute("select count(distinct worker) from etl_work_units").fetchone()[0] >= 2
        assert (
            conn.execute("select count(*) from etl_work_units where state <> 'done'").fetchone()[0]
            == 0
        )
    assert scalar(schema_db, "select count(*) from job_documents") == ds.counts["jobs"]


def test_worker_for_an_unknown_run_is_one_line_exit_2(schema_db, tmp_path, arango_server):
    env = arango_env(arango_server, schema_db, tmp_path)
    proc = etl("worker", "--run", "no-such-run", env=env, timeout=60)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == error_lines(
        proc.stderr
    )
    assert "no-such-run" in proc.stderr


def test_claims_never_hand_one_unit_to_two_workers(schema_db):
    """Claiming is the only coordination: many concurrent claimers, every unit claimed once."""
    from concurrent.futures import ThreadPoolExecutor

    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute(
            "insert into etl_runs (run_id, command, state) values ('r1', 'migrate', 'running')"
        )
        units.plan(conn, "r1", [units.PlannedUnit("c", "range") for _ in range(40)])

    def claimer(i):
        got = []
        with psycopg.connect(schema_db, autocommit=True) as c:
            while (u := units.claim(c, "r1", f"w{i}", 60)) is not None:
                got.append(u.unit_id)
        return got

    with ThreadPoolExecutor(6) as pool:
        claimed = [u for part in pool.map(claimer, range(6)) for u in part]
    assert sorted(claimed) == list(range(1, 41))


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_commit(schema_db):
    with psycopg.connect(schema_db, autocommit=True) as conn:
        conn.execute(
            "insert into etl_runs (run_id, command, state) values ('r2', 'migrate', 'running')"
        )
        units.plan(conn, "r2", [units.PlannedUnit("c", "range")])
        first = units.claim(conn, "r2", "old", 0.2)
        assert units.claim(conn, "r2", "new", 60) is None  # the lease still holds
        time.sleep(0.3)
        second = units.claim(conn, "r2", "new", 60)
        assert second is not None and second.unit_id == first.unit_id and second.attempts == 2
        old = units.UnitCheckpoints(first, worker="old")
        with pytest.raises(units.LeaseLost):
            with conn.transaction():
                old.take(conn)


def test_a_parent_link_waiting_for_a_later_parent_survives_a_stop_and_resume(schema_db, tmp_path):
    """Such links were once kept in memory and lost when a run stopped. The stored child is
    the record (reference NULL, the parent's key in metadata.extra: etl/links.py), so a run
    stopped while the child waits links it when resumed."""
    from etl.errors import Interrupted
    from etl.transform import row_id
    from tests.test_reconcile import dump_with_a_later_parent, findings, reconcile, settings_for

    path, child, parent = dump_with_a_later_parent(tmp_path)
    of_child = " from optimization_results where metadata -> 'arango' ->> '_key' = %s"
    stored_parent = "select parent_optimization_id::text" + of_child

    def waiting_link() -> bool:  # stop right after the batch that loaded the child
        return scalar(schema_db, "select count(*)" + of_child, child["_key"]) > 0

    with pytest.raises(Interrupted):
        Migration(
            settings_for(schema_db, tmp_path),
            source=f"dump:{path}",
            all_=True,
            batch_size=3,
            should_stop=waiting_link,
            retry_wait=lambda rs: 0,
        ).run()
    assert scalar(schema_db, stored_parent, child["_key"]) is None  # its parent not loaded yet
    Migration(
        settings_for(schema_db, tmp_path),
        source=f"dump:{path}",
        resume=True,
        batch_size=3,
        retry_wait=lambda rs: 0,
    ).run()
    assert scalar(schema_db, stored_parent, child["_key"]) == row_id("documents", parent["_key"])
    assert findings(reconcile(schema_db, tmp_path, path)) == set()


def test_a_parallel_run_links_a_parent_later_in_its_range(schema_db, tmp_path):
    """A range unit does not end its collection: the child loads with the reference NULL and
    the collection's finish unit links it (etl/links.py), as a single run does."""
    from etl.transform import row_id
    from tests.test_reconcile import dump_with_a_later_parent, findings, reconcile, settings_for

    path, child, parent = dump_with_a_later_parent(tmp_path)
    m = Migration(
        settings_for(schema_db, tmp_path),
        source=f"dump:{path}",
        all_=True,
        batch_size=3,
        retry_wait=lambda rs: 0,
    )
    assert ParallelMigration(m, workers=2, lease_seconds=30).run().state == "finished"
    stored = scalar(
        schema_db,
        "select parent_optimization_id::text from optimization_results"
        " where metadata -> 'arango' ->> '_key' = %s",
        child["_key"],
    )
    assert stored == row_id("documents", parent["_key"])
    assert findings(reconcile(schema_db, tmp_path, path)) == set()


def test_parallel_run_survives_its_connections_being_killed(schema_db, tmp_path, arango_server):
    """pg_terminate_backend on every etl connection mid-run (workers, coordinator, claims): the
    batches and the claims reconnect and retry, and the run completes with exact rows."""
    ds, env, proc = start_parallel(
        arango_server, schema_db, tmp_path, 200, 34, "--all", "--batch", "10", "--workers", "2"
    )
    with psycopg.connect(schema_db, autocommit=True) as admin:
        assert wait_for_row(admin, "select 1 from etl_work_units where batches >= 2"), (
            "no worker got going"
        )
        killed = admin.execute(
            "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and application_name like 'etl%%'"
            " and pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 2
    arango_server.clear_faults()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode in (0, 1), err[-3000:]  # 1: the generated data has rejects
    assert "retrying" in err
    assert scalar(schema_db, "select count(*) from resume_documents") == ds.counts["resumes"]
    assert scalar(schema_db, "select count(*) from job_documents") == ds.counts["jobs"]
    assert scalar(schema_db, "select count(*) from etl_work_units where state <> 'done'") == 0
    assert (
        scalar(
            schema_db,
            "select sum((counts ->> 'read')::int) from etl_work_units"
            " where kind = 'range' and collection = 'resumes'",
        )
        == ds.counts["resumes"]
    )
