"""`make bench` part two: change capture. On the bench data in the test ArangoDB server, at
each of --sizes (documents):

- the apply rate of `etl sync --until-current` (changes/s) for a backlog of mixed changes
  (updates, replaces, inserts, removes, stream transactions) written after the copy, against
  two bulk rates of the same documents measured in the same run:
  - the goal's baseline, "the same documents into the same tables with their indexes and
    triggers (which the application pays too)": `etl migrate --all` into a scratch copy of the
    schema with ETL_PERF_OFF=fastpath and ETL_DEFER_INDEXES=false, the operator's own switches.
    Every row then goes through the stage and the merge core (sql/007) as a change does, into
    tables whose indexes (the full-text expression index among them) and audit and validation
    triggers are there from the first row. A re-migrate into the filled tables would measure
    the merge finding rows unchanged (no index or trigger work), so it is not used;
  - the copy that made the tables sync follows (empty tables: COPY without the merge, indexes
    built once at the end), for the record;
  both also by CPU seconds (the `etl` command's and the local PostgreSQL server's, bench/common.py
  CpuClock): on a machine shared with other work the wall clock measures the share of the CPU
  each step got, which moves with the load from one minute to the next;
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
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import realdata  # noqa: E402
from bench.common import (  # noqa: E402
    DOCS_PER_RESUME,
    CpuClock,
    Databases,
    admin_dsn,
    arango_with,
    etl,
    etl_env,
    logger,
    median,
    process_env,
    report_of,
)
from tests.datagen import generate  # noqa: E402
from tests.fakearango.fixtures import DATABASE  # noqa: E402
from tests.fakearango.server import FakeArango  # noqa: E402

log = logger("bench-sync")
# the copy into tables whose indexes and triggers are in place all along: the merge path
# (no empty-table COPY) and no index dropped to be rebuilt at the end
INDEXED_COPY = {"ETL_PERF_OFF": "fastpath", "ETL_DEFER_INDEXES": "false"}


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


def cutover_with_last_changes(env: dict, server: FakeArango, rng, n: int, tag: str) -> dict:
    """`etl cutover`, answering its freeze question after writing n last changes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "cutover"],
        env=process_env(env),
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "sync"],
        env=process_env(env),
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


def _by_cpu(docs: int, copy_cpu: float | None, changes: int, apply_cpu: float | None) -> str:
    if not (copy_cpu and apply_cpu):
        return "not measured (the server is not on this machine)"
    return (
        f"copy {docs / copy_cpu:,.0f} docs/s, apply {changes / apply_cpu:,.0f} changes/s "
        f"({(changes / apply_cpu) / (docs / copy_cpu):.2f}x)"
    )


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
    make = realdata.generate if args.data == "real" else generate
    dbs = Databases(admin_dsn(args.pg_dsn), "etl_bench_sync")
    cpu = CpuClock(dbs.admin)
    rng = random.Random(args.seed)
    tables = []
    try:
        sizes = [args.docs] if args.docs else [int(x) for x in args.sizes.split(",")]
        for size in sizes:
            ds = make(max(1, int(size / DOCS_PER_RESUME)), seed=args.seed)
            total = sum(ds.counts.values())
            rows: dict[str, list[float]] = {
                "copy into indexed tables docs/s": [],
                "initial copy docs/s (empty tables, indexes built at the end)": [],
                "apply changes/s": [],
                "ratio apply/copy into indexed tables (the goal)": [],
                "ratio apply/initial copy": [],
                "copy into indexed tables docs per CPU second (etl + PostgreSQL)": [],
                "apply changes per CPU second (etl + PostgreSQL)": [],
                "ratio apply/copy into indexed tables, by CPU": [],
                "freeze s (confirmation to verdict)": [],
                "freeze s (answer to verdict line, seen)": [],
                "keys verified in the freeze": [],
                "offered changes/s (half the apply rate)": [],
                "lag p50 ms": [],
                "lag p99 ms": [],
            }
            for run in range(args.runs):
                server = arango_with(ds)
                try:
                    # the goal's baseline: the same documents into the same tables with their
                    # indexes and triggers (a scratch database, dropped after)
                    indexed = dbs.fresh()
                    t0, c0 = time.perf_counter(), cpu.now()
                    etl({**etl_env(server, indexed), **INDEXED_COPY}, "migrate", "--all")
                    indexed_rate = total / (time.perf_counter() - t0)
                    indexed_cpu = cpu.since(c0)
                    dbs.drop(indexed)
                    env = etl_env(server, dbs.fresh())
                    t0 = time.perf_counter()
                    etl(env, "migrate", "--all")
                    migrate_rate = total / (time.perf_counter() - t0)
                    n = write_changes(server, args.changes, rng, f"r{run}")
                    t0, c0 = time.perf_counter(), cpu.now()
                    out = etl(env, "sync", "--until-current")
                    apply_rate = n / (time.perf_counter() - t0)  # the whole command
                    apply_cpu = cpu.since(c0)
                    synced = json.loads(report_of(out).read_text()).get("sync") or {}
                    log(f"apply batches, by how they committed: {synced.get('batches')}")
                    if indexed_cpu and apply_cpu:
                        rows[
                            "copy into indexed tables docs per CPU second (etl + PostgreSQL)"
                        ].append(total / indexed_cpu)
                        rows["apply changes per CPU second (etl + PostgreSQL)"].append(
                            n / apply_cpu
                        )
                        rows["ratio apply/copy into indexed tables, by CPU"].append(
                            (n / apply_cpu) / (total / indexed_cpu)
                        )
                    rows["copy into indexed tables docs/s"].append(indexed_rate)
                    rows["initial copy docs/s (empty tables, indexes built at the end)"].append(
                        migrate_rate
                    )
                    rows["apply changes/s"].append(apply_rate)
                    rows["ratio apply/copy into indexed tables (the goal)"].append(
                        apply_rate / indexed_rate
                    )
                    rows["ratio apply/initial copy"].append(apply_rate / migrate_rate)
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
                        f"{total:,} docs, run {run + 1}: copy into indexed tables "
                        f"{indexed_rate:,.0f} docs/s, initial copy {migrate_rate:,.0f} docs/s, "
                        f"apply {apply_rate:,.0f} changes/s ({apply_rate / indexed_rate:.2f}x "
                        f"/ {apply_rate / migrate_rate:.2f}x), lag p50 {lag.get('p50_ms')} ms "
                        f"p99 {lag.get('p99_ms')} ms at {offered:,.0f} changes/s, freeze "
                        f"{doc['freeze_seconds']:.2f} s; by CPU seconds "
                        f"{_by_cpu(total, indexed_cpu, n, apply_cpu)}"
                    )
                finally:
                    server.stop()
            tables.append((total, rows))
    finally:
        dbs.drop_all()
    for total, rows in tables:
        print(
            f"\nchange capture on {total:,} {args.data} documents, {args.changes:,} changes, "
            f"PostgreSQL {dbs.version}, medians of {args.runs}:\n"
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
