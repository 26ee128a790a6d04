"""`etl cutover` as the operator runs it, with the application writing right after the freeze
confirmation: a mapped change committed after it is applied and verified and the report says
the freeze did not hold; writes that go on make it no-go (exit 1) naming the keys; a row that
differs from the source is a no-go naming the key and the field; every key changed since the
copy is verified (continuously, and the last ones in the freeze) without a full reconcile."""

from __future__ import annotations

import subprocess

import psycopg

from tests.fakearango.fixtures import DATABASE
from tests.helpers import (
    App,
    error_lines,
    etl,
    etl_popen,
    key_row,
    migrated,
    newest_report,
    scalar,
)


def cutover(env: dict, server, *args: str, after_confirm=None, timeout: float = 120):
    """Run `etl cutover`, answer its freeze question with yes, and call after_confirm() (which
    may arm the test server) just before the answer goes in."""
    proc = etl_popen("cutover", *args, env=env, stdin=subprocess.PIPE)
    head = []
    for line in proc.stdout:  # click.echo flushes each line
        head.append(line)
        if "freeze writes to ArangoDB now" in line:
            break
    if after_confirm is not None:
        after_confirm()
    out, err = proc.communicate("y\n", timeout=timeout)
    return proc.returncode, "".join(head) + out, err


def unverified(conn, collection: str, key: str) -> None:
    """The key as the follower leaves it after applying it and before verifying it (a follower
    that was caught up may have verified it already)."""
    conn.execute(
        "insert into etl_sync_pending (collection, key, tick) values (%s, %s, 1)"
        " on conflict do nothing",
        (collection, key),
    )


def report(tmp_path) -> dict:
    return newest_report(tmp_path / "reports", "cutover-")


def test_a_change_right_after_the_confirmation_is_applied_and_verified(
    schema_db, tmp_path, arango_server, migrated_env
):
    env = migrated_env(seed=50)

    def late_write():  # committed just after the drain's first poll was scanned
        arango_server.insert(DATABASE, "jobs", {"_key": "late-job", "user_id": "u", "title": "L"})

    code, out, err = cutover(
        env,
        arango_server,
        "--sample",
        "10",
        after_confirm=lambda: arango_server.after(late_write, routes=("wal_tail",)),
    )
    assert code == 0, out[-2000:] + err
    assert "cutover: GO" in out and "the freeze did not hold" in out, out
    assert key_row(schema_db, "job_documents", "jobs", "late-job") is not None
    doc = report(tmp_path)
    assert doc["freeze_held"] is False and doc["late_keys"] == ["jobs/late-job"]
    assert doc["keys_verified_in_freeze"].get("jobs", 0) >= 1


def test_writes_going_on_after_the_freeze_are_a_no_go_exit_1(tmp_path, arango_server, migrated_env):
    env = migrated_env(seed=51)
    n = {"i": 0}

    def write():  # the application never stops: a new job after every tick the cutover reads
        n["i"] += 1
        arango_server.insert(DATABASE, "jobs", {"_key": f"w{n['i']}", "user_id": "u", "title": "W"})

    code, out, err = cutover(
        env,
        arango_server,
        after_confirm=lambda: arango_server.after(write, 1000, routes=("wal_last_tick",)),
    )
    assert code == 1, out[-2000:] + err
    assert "cutover: NO-GO" in out and "kept arriving after the freeze" in out, out
    assert "Traceback" not in err and "error:" not in err, err
    doc = report(tmp_path)
    assert doc["verdict"] == "no-go" and doc["freeze_held"] is False
    assert "jobs/w1" in doc["late_keys"]


def test_a_row_that_differs_from_the_source_is_a_no_go_naming_key_and_field(
    schema_db, tmp_path, arango_server, migrated_env
):
    env = migrated_env(seed=52)
    app = App(arango_server)
    app.col("jobs").insert({"_key": "j-diff", "user_id": "u", "title": "Right"})
    assert etl("sync", "--until-current", env=env).returncode == 0
    with psycopg.connect(schema_db) as conn:  # someone edits the target behind the follower
        conn.execute(
            "update job_documents set title = 'Wrong' where metadata -> 'arango' ->> '_key' = 'j-diff'"
        )
        unverified(conn, "jobs", "j-diff")
    code, out, err = cutover(env, arango_server)
    assert code == 1, out[-2000:] + err
    assert "jobs/j-diff (title)" in out, out
    doc = report(tmp_path)
    assert doc["differing"] == [{"collection": "jobs", "key": "j-diff", "fields": ["title"]}]


def test_every_changed_key_is_verified_without_a_full_reconcile(
    schema_db, tmp_path, arango_server, migrated_env
):
    env = migrated_env(seed=53)
    app = App(arango_server)
    for i in range(5):
        app.col("jobs").insert({"_key": f"v{i}", "user_id": "u", "title": f"T{i}"})
    app.col("jobs").delete("v0")
    edges = sorted(arango_server.documents(DATABASE, "job_research"))
    app.col("job_research").delete(edges[0])  # an edge unlinked, another one changed
    app.col("job_research").update({"_key": edges[1], "note": "changed"})
    assert etl("sync", "--until-current", env=env).returncode == 0
    code, out, err = cutover(env, arango_server)
    assert code == 0, out[-2000:] + err
    assert scalar(schema_db, "select count(*) from etl_sync_pending") == 0
    doc = report(tmp_path)
    assert doc["freeze_held"] is True and "reconcile_run" not in doc
    assert doc["last_full_reconcile"] == "none"  # the report says when; here: never
    verified = {v["collection"]: v for v in doc["verification"]}
    # every key changed since the copy: 5 jobs (one removed again) and 2 edges, none pending
    assert verified["jobs"]["keys_verified"] >= 5 and verified["jobs"]["last_verified_at"]
    assert verified["job_research"]["keys_verified"] >= 2
    assert all(v["pending"] == 0 and v["differing"] == 0 for v in verified.values())


def test_sigkill_of_sync_then_a_rerun_and_cutover_loses_no_key_to_verify(
    schema_db, tmp_path, arango_server, migrated_env
):
    import signal
    import time

    env = migrated_env(seed=55)
    env["ETL_SYNC_SPLIT_ROWS"] = "2"  # batches split over two connections: killed between them
    app = App(arango_server)
    proc = etl_popen("sync", env=env, text=False)
    try:
        for i in range(40):
            app.col("jobs").insert({"_key": f"k{i}", "user_id": "u", "title": f"T{i}"})
            if i == 20:
                time.sleep(1)
        deadline = time.time() + 30
        while time.time() < deadline and not scalar(
            schema_db, "select count(*) from etl_sync_applied where collection = 'jobs'"
        ):
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert etl("sync", "--until-current", env=env).returncode == 0
    code, out, err = cutover(env, arango_server)
    assert code == 0, out[-2000:] + err
    assert scalar(schema_db, "select count(*) from etl_sync_pending") == 0
    verified = {v["collection"]: v for v in report(tmp_path)["verification"]}
    assert verified["jobs"]["keys_verified"] >= 40  # each inserted job, at least once
    assert all(key_row(schema_db, "job_documents", "jobs", f"k{i}") for i in range(40))


def test_a_running_sync_verifies_changed_keys_and_exports_its_lag(
    schema_db, arango_server, migrated_env
):
    import signal
    import time
    import urllib.request

    from tests.helpers import free_port

    env = migrated_env(seed=54)
    port = free_port()
    proc = etl_popen("sync", "--metrics-port", str(port), env=env)
    try:
        app = App(arango_server)
        for i in range(5):
            app.col("jobs").insert({"_key": f"c{i}", "user_id": "u", "title": f"T{i}"})
        deadline = time.time() + 60
        verified = 0
        while time.time() < deadline and verified < 5:  # verified while following, at idle
            time.sleep(0.3)
            if scalar(schema_db, "select to_regclass('etl_sync_verified') is not null"):
                verified = scalar(
                    schema_db,
                    "select coalesce(sum(keys_verified), 0) from etl_sync_verified"
                    " where collection = 'jobs'",
                )
        assert verified >= 5
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        count = [
            line
            for line in text.decode().splitlines()
            if line.startswith("etl_sync_change_lag_seconds_count")
        ]
        assert count and float(count[0].split()[-1]) >= 5, count
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "lag p50" in out and "p99" in out, out
    status = etl("status", env=env)
    assert "lag_p50_ms" in status.stdout and "Changed keys verified" in status.stdout
    assert scalar(schema_db, "select count(*) from etl_sync_pending") == 0


def test_the_lag_clock_is_read_from_arangodbs_hlc_revision():
    import time

    from etl.sync.lag import _ALPHABET, commit_time, rev_time

    ms = int(time.time() * 1000) - 1500
    v, chars = (ms << 20) | 3, []
    while v:
        chars.append(_ALPHABET[v % 64])
        v //= 64
    rev = "".join(reversed(chars))
    assert abs(rev_time(rev) - ms / 1000) < 0.002
    assert rev_time("_XUJFD3C---") is None  # 2018: not a clock reading of now
    assert commit_time({"_rev": "not-a-rev"}, 42.0) == 42.0 and commit_time(None, 7.0) == 7.0


def test_an_edge_that_differs_from_the_source_is_a_no_go_naming_it(
    schema_db, arango_server, migrated_env
):
    env = migrated_env(seed=56)
    edge = sorted(arango_server.documents(DATABASE, "job_research"))[0]
    App(arango_server).col("job_research").update({"_key": edge, "note": "source"})
    assert etl("sync", "--until-current", env=env).returncode == 0
    with psycopg.connect(schema_db) as conn:  # the stored edge edited behind the follower
        n = conn.execute(
            "update research_results set metadata = jsonb_set(metadata, array['edges', %s,"
            " 'note'], '\"target\"') where metadata -> 'edges' ? %s",
            (edge, edge),
        ).rowcount
        unverified(conn, "job_research", edge)
    assert n == 1
    code, out, err = cutover(env, arango_server)
    assert code == 1, out[-2000:] + err
    assert f"job_research/{edge} (note)" in out, out


def test_a_tick_moved_only_by_writes_that_are_not_ours_does_not_hold_up_the_drain(
    tmp_path, arango_server, migrated_env
):
    """Another database or a system collection written after every poll: the server's tick is
    always past the position, but no mapped change comes; the drain ends after a quiet moment
    instead of running into its limit (a no-go)."""
    env = migrated_env(seed=57)

    def busy():
        arango_server.during_tail = arango_server.background_write

    code, out, err = cutover(env, arango_server, after_confirm=busy)
    assert code == 0, out[-2000:] + err
    doc = report(tmp_path)
    assert doc["verdict"] == "go" and doc["freeze_held"] is True
    assert doc["freeze_seconds"] < 5, doc["freeze_seconds"]


def test_the_verdict_is_said_before_the_reports_are_written_and_the_freeze_is_broken_down(
    schema_db, tmp_path, arango_server, monkeypatch
):
    """Writing the reports (and the per-collection record) is not part of the freeze: the
    verdict comes first, with its freeze timed phase by phase."""
    from etl import runs
    from etl.settings import load_settings
    from etl.sync.cutover import Cutover

    env = migrated(arango_server, schema_db, tmp_path, seed=58)
    App(arango_server).col("jobs").insert({"_key": "p1", "user_id": "u", "title": "P"})
    events: list[str] = []
    real = runs.write_reports

    def write_reports(*a, **kw):
        events.append("reports")
        return real(*a, **kw)

    monkeypatch.setattr(runs, "write_reports", write_reports)
    cut = Cutover(
        load_settings(None, env=env),
        confirm_freeze=lambda: events.append("confirmed") or True,
        say=events.append,
    )
    doc = cut.run()
    verdict = [i for i, e in enumerate(events) if e.startswith("verdict: GO after")]
    assert verdict and events.index("reports") > verdict[0] > events.index("confirmed"), events
    phases = doc["freeze_phases"]
    assert {"server_tick", "drain", "verify", "verdict"} <= set(phases), phases
    assert abs(sum(phases.values()) - doc["freeze_seconds"]) < 0.01, (phases, doc)
    saved = report(tmp_path)
    assert saved["freeze_phases"] == phases and saved["verification"]


def test_an_unwritable_report_is_exit_2_after_the_verdict(schema_db, tmp_path, arango_server):
    env = migrated(arango_server, schema_db, tmp_path, seed=59)
    reports = tmp_path / "reports"
    reports.rename(tmp_path / "reports-old")
    reports.write_text("a file where the reports directory should be")
    code, out, err = cutover(env, arango_server)
    assert code == 2, out[-2000:] + err
    assert "verdict: GO after" in out, out
    lines = error_lines(err)
    assert len(lines) == 1 and "could not be written" in lines[0], err
    assert "Traceback" not in err
    verdict = scalar(
        schema_db,
        "select summary ->> 'verdict' from etl_runs where command = 'cutover'"
        " order by started_at desc limit 1",
    )
    assert verdict == "go"  # the run itself is saved


def test_a_failure_after_the_verdict_does_not_change_it(
    schema_db, tmp_path, arango_server, monkeypatch
):
    """The per-collection record is read after the verdict is said: if it cannot be read, the
    report says so and keeps the verdict the operator saw (it became a failed no-go)."""
    from etl.settings import load_settings
    from etl.sync import verify
    from etl.sync.cutover import Cutover

    env = migrated(arango_server, schema_db, tmp_path, seed=60)
    said: list[str] = []

    def broken(conn):
        raise psycopg.OperationalError("the server closed the connection")

    monkeypatch.setattr(verify, "verified_table", broken)
    cut = Cutover(load_settings(None, env=env), confirm_freeze=lambda: True, say=said.append)
    doc = cut.run()
    assert any(s.startswith("verdict: GO") for s in said), said
    assert cut.go and doc["state"] == "finished" and doc["verdict"] == "go"
    saved = report(tmp_path)
    assert saved["verdict"] == "go" and "closed the connection" in saved["record_error"]
