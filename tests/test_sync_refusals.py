"""Every refusal of `etl sync` and `etl cutover`, run as the operator runs them: one line on
stderr, exit 2, and the run recorded as failed with that line (never a KeyError, exit 3)."""

from __future__ import annotations

import psycopg
import pytest

from tests.helpers import (
    App,
    arango_env,
    error_lines,
    etl,
    etl_popen,
    migrated,
    scalar,
    seed_dataset,
)


def _one_line_refusal(r, *phrases: str) -> str:
    lines = error_lines(r.stderr)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "KeyError" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def _recorded_as_failed(dsn: str, command: str, line: str) -> None:
    state, error = scalar(
        dsn,
        "select array[state, error] from etl_runs where command = %s"
        " order by started_at desc limit 1",
        command,
    )
    assert state == "failed" and error and error in line, (state, error)


def _no_migrate(server, dsn, tmp_path) -> dict:
    from tests.datagen import generate

    seed_dataset(server, generate(5, seed=40))
    return arango_env(server, dsn, tmp_path)


def _log_behind(server, dsn, tmp_path) -> dict:
    """The follower saved its position; ArangoDB then came back (restored, restarted) with a
    log that ends before it."""
    env = migrated(server, dsn, tmp_path, seed=41)
    assert etl("sync", "--until-current", env=env).returncode == 0
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "update etl_wal_positions set from_tick = %s where kind = 'follow'",
            (server.last_tick() + 1000,),
        )
    server.restart()
    return env


def _other_server(server, dsn, tmp_path) -> dict:
    env = migrated(server, dsn, tmp_path, seed=42)
    server.server_id += 1  # another instance answers at the same address
    return env


def _pruned(server, dsn, tmp_path) -> dict:
    """The server pruned the log past the copy's position (an archive size limit)."""
    env = migrated(server, dsn, tmp_path, seed=45)
    app = App(server)
    for i in range(3):
        app.col("resumes").insert({"_key": f"p{i}", "user_id": "u", "filename": "f"})
    server.prune_wal(force=True)
    app.col("resumes").insert({"_key": "after-prune", "user_id": "u", "filename": "f"})
    return env


REFUSALS = {
    "log pruned": (_pruned, ["no longer covers", "pruned", "etl migrate"]),
    "no migrate position": (_no_migrate, ["no finished migrate run", "etl migrate"]),
    "log behind the position": (_log_behind, ["behind the position", "etl migrate"]),
    "another server": (_other_server, ["server id", "etl migrate"]),
}


@pytest.mark.parametrize("command", ["sync", "cutover"])
@pytest.mark.parametrize("kind", list(REFUSALS))
def test_a_refusal_at_start_is_one_line_and_exit_2(
    schema_db, tmp_path, arango_server, kind, command
):
    setup, phrases = REFUSALS[kind]
    env = setup(arango_server, schema_db, tmp_path)
    args = ["sync", "--until-current"] if command == "sync" else ["cutover", "--assume-frozen"]
    line = _one_line_refusal(etl(*args, env=env), *phrases)
    _recorded_as_failed(schema_db, command, line)
    if command == "cutover":  # the refusal is a no-go in the audit log too
        assert (
            scalar(
                schema_db,
                "select changes ->> 'verdict' from document_audit_log where action = 'cutover'"
                " order by id desc limit 1",
            )
            == "no-go"
        )


def test_cutover_refuses_while_etl_sync_runs(schema_db, arango_server, migrated_env):
    """Two followers would interleave positions: cutover and sync share one lock."""
    import time

    env = migrated_env(seed=43)
    sync = etl_popen("sync", env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            running = scalar(
                schema_db,
                "select count(*) from etl_runs where command = 'sync' and state = 'running'",
            )
            if running:
                break
            time.sleep(0.2)
        App(arango_server)  # the server is up
        _one_line_refusal(etl("cutover", "--assume-frozen", env=env), "another etl", "running")
    finally:
        sync.terminate()
        sync.wait(30)


def test_a_log_pruned_under_a_running_sync_names_its_current_position(
    schema_db, arango_server, migrated_env
):
    """The message and the summary name where the follower stands now and the server's tick,
    not the position the run started from, and no "lag 0" while behind."""
    import subprocess
    import time

    env = migrated_env(seed=44)
    start = scalar(schema_db, "select from_tick from etl_wal_positions where kind = 'migrate'")
    app = App(arango_server)
    proc = etl_popen("sync", env=env)
    try:
        for i in range(3):
            app.col("resumes").insert({"_key": f"r{i}", "user_id": "u", "filename": "f"})
        deadline = time.time() + 60
        while time.time() < deadline and not scalar(
            schema_db, "select count(*) from etl_sync_applied where collection = 'resumes'"
        ):
            time.sleep(0.2)
        held = arango_server.hold(routes=("wal_tail",))
        assert held.arrived.wait(30)
        time.sleep(0.5)  # the batch before the held poll: committed
        current = scalar(schema_db, "select from_tick from etl_wal_positions where kind = 'follow'")
        assert current > start
        for i in range(3):
            app.col("resumes").insert({"_key": f"q{i}", "user_id": "u", "filename": "f"})
        arango_server.prune_wal(force=True)
        app.col("resumes").insert({"_key": "after-prune", "user_id": "u", "filename": "f"})
        last = arango_server.last_tick()
        held.release()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = _one_line_refusal(r, "no longer covers", "etl migrate")
    assert f"(tick {current};" in line and f"last tick is {last}" in line, line
    assert "lag 0 ticks" not in out and f"position tick {current}" in out, out
