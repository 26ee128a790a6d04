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
    dbs.drop(dsn)
    return {
        "status": proc.returncode,
        "seconds": round(seconds, 2),
        "changes_per_s": round(n / seconds),
        "cpu_seconds": used and round(used, 2),
        "tail": (proc.stdout + proc.stderr).splitlines()[-12:],
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
