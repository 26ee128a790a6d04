"""`make bench` part three: the way back. After a copy of the bench data and `etl fallback arm`:

- the apply rate of `etl fallback --until-current` (changes/s, the whole command) for a backlog
  of the application's writes to PostgreSQL (60% updates, 15% inserts, 10% deletes, 15% relinks
  of research rows to other jobs; transactions of 10);
- the lag of `etl fallback` following while a writer adds changes at --rate per second: p50 and
  p99 of (applied in ArangoDB - written in PostgreSQL), from the run's report.

Every etl step runs as the operator's command, in its own process. Usage:
    .venv/bin/python bench/fallback.py --docs 5000 --changes 2000 --pg-dsn DSN
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench import realdata  # noqa: E402
from bench.common import (  # noqa: E402
    DOCS_PER_RESUME,
    REPO,
    Databases,
    admin_dsn,
    arango_with,
    etl,
    etl_env,
    logger,
    process_env,
    report_of,
)

log = logger("bench-fallback")


def app_writes(dsn: str, n: int, rng: random.Random, tag: str) -> int:
    """n writes of the application to PostgreSQL, committed in transactions of 10."""
    with psycopg.connect(dsn) as conn:
        resumes = [r[0] for r in conn.execute("select id from resume_documents")]
        jobs = [r[0] for r in conn.execute("select id from job_documents")]
        research = [r[0] for r in conn.execute("select id from research_results")]
        done = 0
        while done < n:
            op = rng.random()
            if op < 0.6:
                conn.execute(
                    "update resume_documents set status = %s where id = %s",
                    (f"{tag}-{done}", rng.choice(resumes)),
                )
            elif op < 0.75:
                rid = conn.execute(
                    "insert into job_documents (user_id, title, company) values (%s, %s, 'Co')"
                    " returning id",
                    (f"u-{tag}", f"job {done}"),
                ).fetchone()[0]
                jobs.append(rid)
            elif op < 0.85 and len(jobs) > 10:
                conn.execute(
                    "delete from job_documents where id = %s", (jobs.pop(rng.randrange(len(jobs))),)
                )
                research = [r[0] for r in conn.execute("select id from research_results")]
            elif research:
                conn.execute(
                    "update research_results set job_id = %s where id = %s",
                    (rng.choice(jobs), rng.choice(research)),
                )
            done += 1
            if done % 10 == 0:
                conn.commit()
        conn.commit()
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--changes", type=int, default=5_000)
    ap.add_argument("--rate", type=int, default=100, help="writes/s while following")
    ap.add_argument("--seconds", type=int, default=10, help="how long the writer runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--capture", default="auto", help="auto | trigger | logical (etl fallback arm --capture)"
    )
    ap.add_argument("--pg-dsn", default=os.environ.get("ETL_BENCH_PG_DSN"))
    args = ap.parse_args()
    ds = realdata.generate(max(1, int(args.docs / DOCS_PER_RESUME)), seed=args.seed)
    total = sum(ds.counts.values())
    dbs = Databases(admin_dsn(args.pg_dsn), "etl_bench_fb")
    rng = random.Random(args.seed)
    server = arango_with(ds)
    try:
        dsn = dbs.fresh()
        env = etl_env(server, dsn)
        etl(env, "migrate", "--all")
        etl(env, "fallback", "arm", "--capture", args.capture)
        n = app_writes(dsn, args.changes, rng, "b")
        t0 = time.perf_counter()
        out = etl(env, "fallback", "--until-current")
        rate = n / (time.perf_counter() - t0)
        backlog = json.loads(report_of(out).read_text())["fallback"]
        log(f"backlog: {n} changes, {rate:,.0f} changes/s (whole command)")
        # following: a writer at --rate while `etl fallback` runs
        follower = subprocess.Popen(
            [sys.executable, "-m", "etl", "fallback"], env=process_env(env), cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(2)
        written, end = 0, time.time() + args.seconds
        while time.time() < end:
            t = time.time()
            written += app_writes(dsn, max(10, args.rate // 10), rng, f"f{written}")
            time.sleep(max(0.0, 0.1 - (time.time() - t)))
        time.sleep(2)
        follower.send_signal(signal.SIGTERM)
        fout, _ = follower.communicate(timeout=60)
        follow = json.loads(report_of(fout).read_text())["fallback"]
    finally:
        server.stop()
        dbs.drop_all()
    print(f"\nthe way back on {total:,} real-shaped documents, PostgreSQL {dbs.version}:\n")
    print("| measurement | figure |")
    print("|---|---:|")
    print(
        f"| `etl fallback --until-current`, {n:,} changes, whole command | {rate:,.0f} changes/s |"
    )
    print(f"| the same, apply loop only | {backlog['changes_per_second']:,} changes/s |")
    print(
        f"| `etl fallback` following a writer ({written:,} writes in {args.seconds} s), lag p50 / p99"
        f" | {follow['lag_p50_seconds']} s / {follow['lag_p99_seconds']} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
