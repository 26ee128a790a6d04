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
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from bench import realdata  # noqa: E402
from bench.sync import DOCS_PER_RESUME, etl, fresh_db, log, report_of  # noqa: E402
from etl.generic.apply import apply_mapping_file  # noqa: E402
from etl.pg import embedded_dsn  # noqa: E402
from etl.schema import apply_schema  # noqa: E402
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed  # noqa: E402
from tests.fakearango.server import FakeArango  # noqa: E402


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
    admin = args.pg_dsn or embedded_dsn()
    ds = realdata.generate(max(1, int(args.docs / DOCS_PER_RESUME)), seed=args.seed)
    total = sum(ds.counts.values())
    template = f"etl_bench_fb_tmpl_{uuid.uuid4().hex[:8]}"
    made = [template]
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{template}"')
        version = c.execute("show server_version").fetchone()[0]
    apply_schema(make_conninfo(admin, dbname=template), REPO / "sql")
    apply_mapping_file(make_conninfo(admin, dbname=template))
    rng = random.Random(args.seed)
    server = FakeArango(ROOT_PASSWORD).start()
    try:
        for c in ds:
            seed(server, DATABASE, c, ds[c], edge=ds.types[c] == "edge")
        dsn = fresh_db(admin, template, made)
        env = {
            "ETL_ARANGO_URL": server.url,
            "ETL_ARANGO_DB": DATABASE,
            "ETL_ARANGO_USER": "root",
            "ETL_ARANGO_PASSWORD": ROOT_PASSWORD,
            "ETL_PG_DSN": dsn,
            "ETL_REPORTS_DIR": str(REPO / "bench" / "reports"),
        }
        etl(env, "migrate", "--all")
        etl(env, "fallback", "arm", "--capture", args.capture)
        n = app_writes(dsn, args.changes, rng, "b")
        t0 = time.perf_counter()
        out = etl(env, "fallback", "--until-current")
        rate = n / (time.perf_counter() - t0)
        backlog = json.loads(report_of(out).read_text())["fallback"]
        log(f"backlog: {n} changes, {rate:,.0f} changes/s (whole command)")
        # following: a writer at --rate while `etl fallback` runs
        full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        full.update(env)
        follower = subprocess.Popen(
            [sys.executable, "-m", "etl", "fallback"], env=full, cwd=REPO,
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
        with psycopg.connect(admin, autocommit=True) as c:
            for name in reversed(made):
                c.execute(f'drop database if exists "{name}" with (force)')
    print(f"\nthe way back on {total:,} real-shaped documents, PostgreSQL {version}:\n")
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
