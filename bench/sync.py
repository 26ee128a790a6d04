"""`make bench` part two: change capture. On the bench data in the test ArangoDB server, at
each of --sizes (documents):

- the apply rate of `etl sync --until-current` (changes/s) for a backlog of mixed changes
  (updates, replaces, inserts, removes, stream transactions) written after the copy, against
  the bulk rate of the `etl migrate` that made the copy, measured in the same run (the ratio);
- the write freeze of `etl cutover`: the operator's confirmation to the verdict, with
  --last-changes written just before the confirmation (the drain and their verification are in
  the freeze; every key changed since the copy is verified, no full reconcile);
- the lag (commit in ArangoDB to row in PostgreSQL, p50/p99 from `etl sync`'s report) while an
  application writes at a steady half of the measured apply rate for --lag-seconds.

Every etl step runs as the operator's command, in its own process. Data: shaped like the real
exports (bench/realdata.py; --data classic for tests/datagen). Medians of --runs, each on a
fresh copy of the schema. Usage:
    .venv/bin/python bench/sync.py --sizes 100000,1000000 --changes 20000 --runs 3 --pg-dsn DSN
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import signal
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


def cutover_with_last_changes(env: dict, server: FakeArango, rng, n: int, tag: str) -> dict:
    """`etl cutover`, answering its freeze question after writing n last changes."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "cutover"],
        env=full,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    head = []
    for line in proc.stdout:
        head.append(line)
        if "freeze writes to ArangoDB now" in line:
            break
    write_changes(server, n, rng, tag)
    assert proc.stdin is not None
    proc.stdin.write("y\n")
    proc.stdin.flush()
    answered = time.perf_counter()
    seen = None  # the answer to the verdict line, as the operator sees it (start-up excluded)
    for line in proc.stdout:
        head.append(line)
        if line.startswith("verdict:"):
            seen = time.perf_counter() - answered
            break
    out, err = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"etl cutover failed ({proc.returncode}): {err[-2000:]}")
    doc = json.loads(report_of("".join(head) + out).read_text())
    doc["seen_seconds"] = seen
    return doc


def lag_under_load(env: dict, server: FakeArango, rng, rate: float, seconds: float, tag: str):
    """`etl sync` while the application writes `rate` changes/s for `seconds`: its report's lag."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "sync"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # started, caught up
    t0 = time.perf_counter()
    written = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate)
        if due > written:
            written += write_changes(server, due - written, rng, f"{tag}-{written}")
        time.sleep(0.02)
    time.sleep(2)  # the last ones applied
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    doc = json.loads(report_of(out).read_text())
    return (doc.get("sync") or {}).get("lag") or {}, written / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="20000,100000", help="documents, comma-separated")
    ap.add_argument("--docs", type=int, help="one size only (as --sizes N)")
    ap.add_argument("--changes", type=int, default=20_000)
    ap.add_argument("--last-changes", type=int, default=200, help="written just before the freeze")
    ap.add_argument("--lag-seconds", type=float, default=15)
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
    # The test server keeps every document in this process: at 1M, a full collection over
    # tens of millions of objects pauses it past its clients' 10 s timeout (seen while seeding).
    gc.disable()
    admin = args.pg_dsn or embedded_dsn()
    make = realdata.generate if args.data == "real" else generate
    template = f"etl_bench_sync_tmpl_{uuid.uuid4().hex[:8]}"
    made = [template]
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{template}"')
        version = c.execute("show server_version").fetchone()[0]
    apply_schema(make_conninfo(admin, dbname=template), REPO / "sql")
    apply_mapping_file(make_conninfo(admin, dbname=template))  # arango.task_results
    rng = random.Random(args.seed)
    tables = []
    try:
        sizes = [args.docs] if args.docs else [int(x) for x in args.sizes.split(",")]
        for size in sizes:
            ds = make(max(1, int(size / DOCS_PER_RESUME)), seed=args.seed)
            total = sum(ds.counts.values())
            rows: dict[str, list[float]] = {
                "migrate docs/s": [],
                "apply changes/s": [],
                "ratio apply/copy": [],
                "freeze s (confirmation to verdict)": [],
                "freeze s (answer to verdict line, seen)": [],
                "keys verified in the freeze": [],
                "offered changes/s (half the apply rate)": [],
                "lag p50 ms": [],
                "lag p99 ms": [],
            }
            for run in range(args.runs):
                server = FakeArango(ROOT_PASSWORD).start()
                try:
                    for c in ds:
                        # small imports: an import of 10,000 real-shaped documents can outlast the
                        # client's 10 s timeout on a loaded machine
                        seed(server, DATABASE, c, ds[c], edge=ds.types[c] == "edge", chunk=2000)
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
                    apply_rate = n / (time.perf_counter() - t0)  # the whole command
                    rows["migrate docs/s"].append(migrate_rate)
                    rows["apply changes/s"].append(apply_rate)
                    rows["ratio apply/copy"].append(apply_rate / migrate_rate)
                    lag, offered = lag_under_load(
                        env, server, rng, apply_rate / 2, args.lag_seconds, f"l{run}"
                    )
                    rows["offered changes/s (half the apply rate)"].append(offered)
                    if lag:
                        rows["lag p50 ms"].append(lag["p50_ms"])
                        rows["lag p99 ms"].append(lag["p99_ms"])
                    doc = cutover_with_last_changes(env, server, rng, args.last_changes, f"c{run}")
                    if doc["verdict"] != "go":
                        log(f"cutover said {doc['verdict']}: {doc.get('no_go_reasons')}")
                    rows["freeze s (confirmation to verdict)"].append(doc["freeze_seconds"])
                    if doc["seen_seconds"] is not None:
                        rows["freeze s (answer to verdict line, seen)"].append(doc["seen_seconds"])
                    log(f"freeze phases (s): {doc.get('freeze_phases')}")
                    rows["keys verified in the freeze"].append(
                        sum((doc.get("keys_verified_in_freeze") or {}).values())
                    )
                    log(
                        f"{total:,} docs, run {run + 1}: migrate {migrate_rate:,.0f} docs/s, apply "
                        f"{apply_rate:,.0f} changes/s ({apply_rate / migrate_rate:.2f}x), lag "
                        f"p50 {lag.get('p50_ms')} ms p99 {lag.get('p99_ms')} ms at "
                        f"{offered:,.0f} changes/s, freeze {doc['freeze_seconds']:.2f} s"
                    )
                finally:
                    server.stop()
            tables.append((total, rows))
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            for name in reversed(made):
                c.execute(f'drop database if exists "{name}" with (force)')
    for total, rows in tables:
        print(
            f"\nchange capture on {total:,} {args.data} documents, {args.changes:,} changes, "
            f"PostgreSQL {version}, medians of {args.runs}:\n"
        )
        print("| measurement | median | runs |")
        print("|---|---:|---|")
        for label, xs in rows.items():
            fmt = "{:,.2f}" if "ratio" in label or "freeze" in label else "{:,.0f}"
            shown = fmt.format(median(xs)) if xs else "-"
            print(f"| {label} | {shown} | {', '.join(fmt.format(x) for x in xs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
