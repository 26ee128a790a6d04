"""The same apply, again and again: a profiling harness for `etl sync --until-current`.

One process starts the test ArangoDB server with the bench data (bench/realdata.py), migrates
it into a database, writes a backlog of changes (bench/sync.py's mix) and stays alive. Each
trial copies the migrated database (`create database T template M`) and runs the apply against
the copy as the operator runs it, so that code changes, settings and profilers can be compared
on one backlog without seeding and copying again (at 1M documents that takes 15 minutes).

Trials are asked for by files in --requests: each `NAME.json` holds
    {"repo": "<a checkout whose etl runs>", "env": {"ETL_...": "..."},
     "py_spy": "<py-spy binary: record every thread into NAME.raw>",
     "database": {"track_functions": "all", ...}}   (all keys optional)
and gets `NAME.out` (rate, seconds, the command's last lines) when done. `stop.json` ends it.
    .venv/bin/python bench/apply_trials.py --docs 1000000 --changes 20000 --requests DIR
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg.conninfo import conninfo_to_dict  # noqa: E402

from bench import realdata  # noqa: E402
from bench.common import (  # noqa: E402
    DOCS_PER_RESUME,
    REPO,
    CpuClock,
    Databases,
    admin_dsn,
    arango_with,
    etl,
    etl_env,
    logger,
    process_env,
)
from bench.sync import write_changes  # noqa: E402

log = logger("apply-trials")


def trial(dbs: Databases, cpu: CpuClock, env: dict, name: str, ask: dict, n: int) -> dict:
    dsn = dbs.fresh()
    db = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dbs.admin, autocommit=True) as c:
        for setting, value in (ask.get("database") or {}).items():
            c.execute(f'alter database "{db}" set {setting} = {value}')
    repo = Path(ask.get("repo") or REPO)
    cmd = [sys.executable, "-m", "etl", "sync", "--until-current"]
    if ask.get("py_spy"):
        raw = Path(ask["requests"]) / f"{name}.raw"
        cmd = [ask["py_spy"], "record", "--idle", "--threads", "-f", "raw", "-o", str(raw), "--"]
        cmd += [sys.executable, "-m", "etl", "sync", "--until-current"]
    t0, c0 = time.perf_counter(), cpu.now()
    proc = subprocess.run(
        cmd,
        env=process_env({**env, "ETL_PG_DSN": dsn, **(ask.get("env") or {})}),
        cwd=repo,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    used = cpu.since(c0)
    stats = table_stats(dsn)
    dbs.drop(dsn)
    return {
        "stats": stats,
        "status": proc.returncode,
        "seconds": round(seconds, 2),
        "changes_per_s": round(n / seconds),
        "cpu_seconds": used and round(used, 2),
        "tail": (proc.stdout + proc.stderr).splitlines()[-12:],
    }


def table_stats(dsn: str) -> dict:
    """What the trial's backends did, per table and function: scans, rows read, blocks read
    from outside shared_buffers; per function (with track_functions) calls and milliseconds."""
    time.sleep(1)  # the command's backends have exited and flushed their statistics
    with psycopg.connect(dsn, autocommit=True) as c:
        tables = c.execute(
            "select s.relname, s.seq_scan, s.seq_tup_read, s.idx_scan, s.n_tup_ins,"
            " s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del, io.heap_blks_read, io.idx_blks_read"
            " from pg_stat_user_tables s join pg_statio_user_tables io using (relid)"
            " where s.seq_scan + coalesce(s.idx_scan, 0) + s.n_tup_ins > 0 order by s.relname"
        ).fetchall()
        functions = c.execute(
            "select funcname, calls, round(total_time), round(self_time)"
            " from pg_stat_user_functions order by total_time desc limit 25"
        ).fetchall()
    heads = "seq_scan seq_read idx_scan ins upd hot_upd del heap_read idx_read".split()
    return {
        "tables": {t[0]: dict(zip(heads, t[1:])) for t in tables},
        "functions (calls, total ms, self ms)": {f[0]: list(f[1:]) for f in functions},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg-dsn")
    ap.add_argument("--requests", required=True, help="a directory to watch for NAME.json")
    args = ap.parse_args()
    gc.disable()  # as bench/sync.py: the server holds every document in this process
    requests = Path(args.requests)
    requests.mkdir(parents=True, exist_ok=True)
    ds = realdata.generate(max(1, int(args.docs / DOCS_PER_RESUME)), seed=args.seed)
    dbs = Databases(admin_dsn(args.pg_dsn), "etl_apply_trials")
    cpu = CpuClock(dbs.admin)
    server = arango_with(ds)
    try:
        migrated = dbs.fresh()
        env = etl_env(server, migrated)
        t0 = time.perf_counter()
        etl(env, "migrate", "--all")
        log(f"migrated {sum(ds.counts.values()):,} docs in {time.perf_counter() - t0:.0f} s")
        n = write_changes(server, args.changes, random.Random(args.seed), "t")
        log(f"{n:,} changes written; waiting for requests in {requests}")
        # the copies' template: no connection may be open to it while one is made
        dbs.template = conninfo_to_dict(migrated)["dbname"]
        while not (requests / "stop.json").exists():
            asks = sorted(requests.glob("*.json"))
            if not asks:
                time.sleep(1)
                continue
            ask_path = asks[0]
            ask = {**json.loads(ask_path.read_text() or "{}"), "requests": str(requests)}
            ask_path.unlink()
            log(f"trial {ask_path.stem}")
            out = trial(dbs, cpu, env, ask_path.stem, ask, n)
            log(f"trial {ask_path.stem}: {out['changes_per_s']:,} changes/s, {out['seconds']} s")
            (requests / f"{ask_path.stem}.out").write_text(json.dumps(out, indent=2))
        (requests / "stop.json").unlink()
    finally:
        server.stop()
        dbs.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
