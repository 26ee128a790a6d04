"""etl through a real PgBouncer, in session and in transaction pooling: apply-schema, migrate
(small batches, so that every statement repeats many times), reconcile and status give exactly
what a direct connection gives. Under transaction pooling consecutive transactions land on any
server connection: nothing may rely on a prepared statement, a session lock or a temporary
table surviving from one transaction to the next."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.datagen import generate, write_dump
from tests.helpers import db_rows, etl, pg_env, strip_volatile
from tests.pgbouncer import pgbouncer


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    path = tmp_path_factory.mktemp("dump") / "atspro"
    write_dump(path, generate(150, seed=21, bad=True), gzip=False)
    return path


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_through_pgbouncer_gives_the_rows_of_a_direct_connection(
    pg_admin_dsn, make_db, tmp_path, dump, mode
):
    direct = make_db()
    pooled_db = conninfo_to_dict(make_db())["dbname"]
    with pgbouncer(pg_admin_dsn, mode) as via:
        pooled = via(pooled_db)
        runs = {}
        for name, dsn in (("direct", direct), ("pooled", pooled)):
            env = pg_env(dsn, tmp_path, name)
            steps = [
                ("apply-schema",),
                ("migrate", "--all", "--source", f"dump:{dump}", "--batch", "3"),
                ("reconcile", "--all", "--source", f"dump:{dump}"),
                ("reconcile", "--all", "--source", f"dump:{dump}", "--workers", "2"),
                ("status",),
                ("migrate", "--all", "--source", f"dump:{dump}", "--batch", "50"),  # a re-run
            ]
            for args in steps:
                proc = etl(*args, env=env)
                # 1 = finished with findings: the dump holds every bad input, so rejects
                assert proc.returncode in (0, 1), (name, args, proc.stderr[-3000:])
                assert "Traceback" not in proc.stderr, proc.stderr
                if args[0] == "reconcile":
                    assert proc.returncode == 0, (name, args, proc.stdout[-2000:])
                    assert "everything matches" in proc.stdout
            runs[name] = proc.stdout
        assert "unchanged" in runs["pooled"]
    rows_direct = {k: comparable(v) for k, v in db_rows(direct).items()}
    rows_pooled = {k: comparable(v) for k, v in db_rows(conninfo_for(direct, pooled_db)).items()}
    assert len(rows_direct) > 400
    assert rows_pooled == rows_direct
    # and the same bookkeeping: counts per collection of both runs
    assert _counts(direct) == _counts(conninfo_for(direct, pooled_db))


def comparable(row: dict) -> dict:
    """A row without what differs between two loads of the same document: provenance, and a
    timestamp the table default filled with now() (the source had none, or garbage)."""
    row = strip_volatile(row)
    for col in ("created_at", "updated_at"):
        if (row.get(col) or "") >= "2026-01-01":
            row[col] = "(default)"
    return row


def conninfo_for(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, dbname=dbname)


def _counts(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select collection, read, inserted, updated, unchanged, rejected, unmapped, dangling"
            " from etl_checkpoints c join etl_runs r using (run_id)"
            " order by r.started_at, collection"
        ).fetchall()
