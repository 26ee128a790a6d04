"""`make bench` part two: change capture. On the bench data in the test ArangoDB server:

- the apply rate of `etl sync --until-current` (changes/s) for a backlog of mixed changes
  (updates, replaces, inserts, removes, stream transactions) written after the copy, against
  the bulk rate of the `etl migrate` that made the copy, measured in the same run;
- the write freeze of `etl cutover --assume-frozen --workers 2`: from the freeze to the go,
  with the reconcile inside it sampled (--sample 10) and in full.

Every etl step runs as the operator's command, in its own process. Data: shaped like the real
exports (bench/realdata.py; --data classic for tests/datagen). Medians of --runs, each on a
fresh copy of the schema. Usage:
    .venv/bin/python bench/sync.py --docs 100000 --changes 20000 --runs 3 --pg-dsn DSN
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
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
from etl.generic.apply import apply_mapping_file  # noqa: E402
from etl.pg import embedded_dsn  # noqa: E402
from etl.schema import apply_schema  # noqa: E402
from tests.datagen import generate  # noqa: E402
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed  # noqa: E402
from tests.fakearango.server import FakeArango  # noqa: E402

DOCS_PER_RESUME = 4.5


def log(msg: str) -> None:
    print(f"[bench-sync {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fresh_db(admin: str, template: str, made: list[str]) -> str:
    name = f"etl_bench_sync_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{name}" template "{template}"')
    made.append(name)
    return make_conninfo(admin, dbname=name)


def write_changes(server: FakeArango, n: int, rng: random.Random, tag: str) -> int:
    """n changes through the server's write path (each reaches the WAL as ArangoDB writes it)."""
    docs = {c: server.documents(DATABASE, c) for c in ("resumes", "jobs", "documents")}
    keys = {c: list(d) for c, d in docs.items()}
    written = 0
    while written < n:
        c = rng.choice(("resumes", "resumes", "jobs", "documents"))
        op = rng.random()
        if op < 0.5:
            server.update(DATABASE, c, rng.choice(keys[c]), {"status": f"{tag}-{written}"})
            written += 1
        elif op < 0.65:
            key = rng.choice(keys[c])
            doc = {k: v for k, v in docs[c][key].items() if not k.startswith("_")}
            server.replace(DATABASE, c, key, {**doc, "note": written})
            written += 1
        elif op < 0.85:
            key = f"{tag}-{written}"
            src = docs[c][rng.choice(keys[c])]
            server.insert(
                DATABASE, c, {**{k: v for k, v in src.items() if k != "_id"}, "_key": key}
            )
            keys[c].append(key)
            written += 1
        elif op < 0.95:
            key = keys[c].pop(rng.randrange(len(keys[c])))
            server.remove(DATABASE, c, key)
            written += 1
        else:
            with server.transaction(DATABASE) as t:
                for i in range(5):
                    key = f"{tag}-{written}-t{i}"
                    t.insert("resumes", {"_key": key, "user_id": "user-bench", "filename": "t"})
                    written += 1
    return written


def etl(env: dict, *args: str) -> str:
    """`etl ARGS` as the operator runs it: its own process (the test server here keeps this
    one's interpreter busy); stdout, or the error."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "etl", *args], env=full, capture_output=True, text=True
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"etl {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def report_of(stdout: str) -> Path:
    """The JSON report a command's last line names ("... report PATH.md")."""
    md = re.findall(r"report (\S+)\.md", stdout)[-1]
    return Path(md + ".json")


def median(xs):
    return statistics.median(xs) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg-dsn", default=os.environ.get("ETL_BENCH_PG_DSN"))
    ap.add_argument(
        "--data",
        choices=("real", "classic"),
        default="real",
        help="real: shaped like the ATSPro exports (bench/realdata.py); classic: tests/datagen",
    )
    args = ap.parse_args()
    admin = args.pg_dsn or embedded_dsn()
    make = realdata.generate if args.data == "real" else generate
    ds = make(max(1, int(args.docs / DOCS_PER_RESUME)), seed=args.seed)
    total = sum(ds.counts.values())
    template = f"etl_bench_sync_tmpl_{uuid.uuid4().hex[:8]}"
    made = [template]
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{template}"')
        version = c.execute("show server_version").fetchone()[0]
    apply_schema(make_conninfo(admin, dbname=template), REPO / "sql")
    apply_mapping_file(make_conninfo(admin, dbname=template))  # arango.task_results
    rows = {"migrate docs/s": [], "apply changes/s": [], "ratio": [], "freeze s (sample 10)": []}
    rows["freeze s (full reconcile)"] = []
    rng = random.Random(args.seed)
    try:
        for run in range(args.runs):
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
                t0 = time.perf_counter()
                etl(env, "migrate", "--all")
                migrate_rate = total / (time.perf_counter() - t0)
                n = write_changes(server, args.changes, rng, f"r{run}")
                t0 = time.perf_counter()
                etl(env, "sync", "--until-current")
                apply_rate = n / (time.perf_counter() - t0)  # the whole command, start-up included
                rows["migrate docs/s"].append(migrate_rate)
                rows["apply changes/s"].append(apply_rate)
                rows["ratio"].append(apply_rate / migrate_rate)
                for label, sample in (("sample 10", ["--sample", "10"]), ("full reconcile", [])):
                    write_changes(server, 500, rng, f"c{run}{label[0]}")
                    out = etl(env, "cutover", "--assume-frozen", "--workers", "2", *sample)
                    doc = json.loads(report_of(out).read_text())
                    if doc["verdict"] != "go":
                        log(f"cutover said {doc['verdict']}: {doc.get('reconcile_result')}")
                    rows[f"freeze s ({label})"].append(doc["freeze_seconds"])
                log(
                    f"run {run + 1}: migrate {migrate_rate:,.0f} docs/s, apply {apply_rate:,.0f} "
                    f"changes/s, freeze {rows['freeze s (sample 10)'][-1]:.2f} s (sample 10), "
                    f"{rows['freeze s (full reconcile)'][-1]:.2f} s (full)"
                )
            finally:
                server.stop()
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            for name in reversed(made):
                c.execute(f'drop database if exists "{name}" with (force)')
    print(
        f"\nchange capture on {total:,} {args.data} documents, {args.changes:,} changes, PostgreSQL "
        f"{version}, medians of {args.runs}:\n"
    )
    print("| measurement | median | runs |")
    print("|---|---:|---|")
    for label, xs in rows.items():
        fmt = "{:,.2f}" if "ratio" in label or "freeze" in label else "{:,.0f}"
        print(f"| {label} | {fmt.format(median(xs))} | {', '.join(fmt.format(x) for x in xs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
