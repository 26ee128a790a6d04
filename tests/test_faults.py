"""Short versions of the soak's fault trials (soak/trials.py; `make soak` runs the long ones).

Each trial runs the real CLI as a subprocess against the FakeArango server (real HTTP) and a
real PostgreSQL, injects its faults, completes the run, and proves: reconcile green (or exactly
the expected differences), every source key a row or a reject exactly once, no checkpoint ahead
of its data after a kill, no password in any output, report or run table.
"""

from __future__ import annotations

import random
import tempfile

import psycopg
import pytest

from soak import trials as T


@pytest.fixture(scope="module")
def harness(pg_admin_dsn, tmp_path_factory):
    h = T.Harness(
        T.PgServer(pg_admin_dsn),
        tmp_path_factory.mktemp("faults"),
        n_resumes=1000,
        batch=250,
        log=lambda msg: None,
    )
    h.setup()
    yield h
    h.close()


@pytest.fixture(scope="module")
def own_pg_harness(tmp_path_factory):
    """A dedicated embedded PostgreSQL this module may restart (whatever ETL_TEST_PG_DSN says)."""
    try:
        pg = T.PgServer.embedded(tempfile.gettempdir())
    except Exception as exc:  # pragma: no cover - no embedded server here
        pytest.skip(f"cannot start a dedicated embedded PostgreSQL to restart: {exc}")
    h = T.Harness(
        pg, tmp_path_factory.mktemp("faults-own-pg"), n_resumes=600, batch=100, log=lambda msg: None
    )
    try:
        h.setup()
        yield h
    finally:
        h.close()
        pg.stop()


def run(h: T.Harness, fn, *args, **kw) -> str:
    """Run one trial; a failed trial fails the test with its reason. No secret may leak."""
    entry = T.run_trial(h, fn.__name__, fn, *args, **kw)
    assert entry["ok"], entry["note"]
    h.scan_reports()
    h.scan()
    assert not h.tally.secret_hits, h.tally.secret_hits
    return entry["note"]


def test_sigkill_in_every_phase_then_resume_loses_nothing(harness):
    note = run(harness, T.trial_kills, 5, random.Random(11), random_window=(0.3, 1.5), per_chain=5)
    # one kill in each phase: a random moment, extract (held page), COPY, merge, checkpoint
    assert all(harness.tally.faults[f"SIGKILL ({p})"] >= 1 for p in T.PHASES), note
    assert harness.tally.kill_checks >= 5 and harness.tally.ahead == 0


def test_pg_terminate_backend_mid_batch_is_retried_by_the_run_itself(harness):
    note = run(harness, T.trial_pg_terminate, random.Random(12), times=2)
    assert "completed by itself" in note


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgres_restart_mid_run_completes_and_loses_no_batch(own_pg_harness, mode):
    # Regression (immediate): with synchronous_commit off the restart lost the last commits while
    # the run went on after them: its checkpoint ended ahead of its data (400 documents).
    note = run(own_pg_harness, T.trial_pg_restart, mode, random.Random(13), times=2)
    assert own_pg_harness.tally.ahead == 0 and own_pg_harness.tally.lost == 0, note


def test_arango_faults_503_429_drops_timeouts_lost_cursor(harness):
    note = run(harness, T.trial_arango_faults, random.Random(14))
    for kind in (
        "503 burst (queue full)",
        "503 burst (service unavailable)",
        "429 from a proxy",
        "connection dropped before the answer",
        "connection dropped mid-response",
        "answer slower than the request timeout",
        "cursor lost (expired)",
    ):
        assert harness.tally.faults[f"ArangoDB: {kind}"] >= 1, (kind, note)


def test_arango_restart_between_batches(harness):
    assert "completed by itself" in run(harness, T.trial_arango_restart, random.Random(15), times=2)


def test_second_migrate_on_the_same_collection_refuses_and_changes_nothing(harness):
    # Regression: the refused `--resume` marked the running run 'failed', and a refused run built
    # the deferred indexes the running one had dropped for its bulk load.
    run(harness, T.trial_concurrent)


def test_parallel_workers_and_their_coordinator_killed_lose_nothing(harness):
    note = run(harness, T.trial_parallel_kills, random.Random(5), kills=2, lease=3.0)
    assert "2 workers killed mid-unit" in note


def test_source_changing_during_the_run_is_reported_exactly(harness):
    note = run(harness, T.trial_source_changes, random.Random(16))
    assert "reported exactly" in note


def test_fakearango_restart_keeps_data_and_port_loses_cursors(harness):
    s = harness.server
    port, count = s.port, len(s.documents(T.DATABASE, "resumes"))
    s.cursors[("atspro", "x")] = None  # type: ignore[assignment]
    s.restart(downtime=0.1)
    assert s.port == port and not s.cursors
    assert len(s.documents(T.DATABASE, "resumes")) == count
    from tests.fakearango.fixtures import client_db

    assert client_db(s, password=harness.arango_password).collection("resumes").count() == count


def test_harness_checks_catch_a_lost_document_and_a_checkpoint_ahead(harness):
    """The checks themselves: a row deleted behind a checkpoint is found."""
    h = harness
    db = h.new_db("self-check")
    res = h.etl(db, *h.migrate_args())
    assert res.returncode in (0, 1), res.stderr
    with psycopg.connect(db.admin, autocommit=True) as c:
        c.execute(
            "delete from resume_documents where id = (select id from resume_documents limit 1)"
        )
    lost, ahead = h.tally.lost, h.tally.ahead
    with pytest.raises(T.TrialFailed, match="checkpoint ahead"):
        h.check_checkpoints(db)
    with pytest.raises(T.TrialFailed, match="lost"):
        h.check_exact(db)
    h.tally.lost, h.tally.ahead = lost, ahead
    h.drop_db(db)


def test_harness_unit_check_catches_a_position_ahead_of_its_data(harness):
    """check_unit_positions: a range unit whose position covers a deleted row is found."""
    h = harness
    db = h.new_db("self-check-units")
    res = h.etl(db, *h.migrate_args("--workers", "2"))
    assert res.returncode in (0, 1), res.stderr
    assert h.check_unit_positions(db) == h.source_count  # every mapped document is in a done range
    with psycopg.connect(db.admin, autocommit=True) as c:
        key = c.execute(
            "select metadata->'arango'->>'_key' from resume_documents limit 1"
        ).fetchone()[0]
        c.execute("delete from resume_documents where metadata->'arango'->>'_key' = %s", (key,))
        c.execute(
            "update etl_work_units set state = 'running', position = %s"
            " where collection = 'resumes' and kind = 'range'",
            (key,),
        )
    ahead = h.tally.ahead
    with pytest.raises(T.TrialFailed, match="ahead of its data"):
        h.check_unit_positions(db)
    h.tally.ahead = ahead
    h.drop_db(db)
