"""`make soak`: etl migrate under faults for ~10 minutes, then a table of what was proven.

Starts its own PostgreSQL (embedded, in a temp dir, so that it can restart it; or the server of
ETL_SOAK_PG_DSN / --pg-dsn, and then the restart trials are skipped with a note) and its own
FakeArango seeded with generated ATSPro data (bad inputs included). Trials (soak/trials.py):
SIGKILLs at random and targeted moments each followed by --resume, pg_terminate_backend mid-batch,
PostgreSQL restarts (fast and immediate), ArangoDB faults and restarts, concurrent migrates,
parallel workers and their coordinator killed, the source changing during a run. Each ends with a completed run, a green `etl reconcile` (or exactly
the expected differences) and exact key checks. Then every output, report file and run table is
scanned for the two passwords.

    .venv/bin/python soak/run.py [--quick] [--pg-dsn DSN] [--out PATH] [--seed N]

Exit 0 when every trial passed and nothing was lost, duplicated or leaked; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak import trials as T  # noqa: E402

PROFILES = {
    # resumes -> about 4.5 documents each across the collections
    "default": dict(
        resumes=8000,
        batch=500,
        kills=40,
        terminate=4,
        restarts_fast=2,
        restarts_immediate=3,
        arango_rounds=2,
        arango_restarts=6,
        source_rounds=3,
        parallel_rounds=2,
        sync_faults=9,
        kill_window=(0.5, 10.0),
    ),
    "quick": dict(
        resumes=3000,
        batch=300,
        kills=10,
        terminate=2,
        restarts_fast=1,
        restarts_immediate=1,
        arango_rounds=1,
        arango_restarts=2,
        source_rounds=1,
        parallel_rounds=1,
        sync_faults=3,
        kill_window=(0.3, 3.0),
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a 1-2 minute version")
    ap.add_argument(
        "--pg-dsn",
        default=os.environ.get("ETL_SOAK_PG_DSN"),
        help="use this PostgreSQL (admin DSN) instead of a private embedded one",
    )
    ap.add_argument(
        "--out", help="where the JSON result goes (default reports/soak-<timestamp>.json)"
    )
    ap.add_argument(
        "--seed", type=int, default=None, help="random seed of the fault moments (default: random)"
    )
    ap.add_argument("--resumes", type=int, help="data size: resumes (x ~4.5 documents)")
    ap.add_argument("--kills", type=int, help="SIGKILLs in the kill trials")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    prof = dict(PROFILES["quick" if args.quick else "default"])
    if args.resumes:
        prof["resumes"] = args.resumes
    if args.kills:
        prof["kills"] = args.kills
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path("reports") / f"soak-{stamp}.json"

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    tally = T.Tally()
    work = Path(tempfile.mkdtemp(prefix="etl-soak-"))
    log(f"soak ({'quick' if args.quick else 'default'}), seed {seed}, work dir {work}")
    if args.pg_dsn:
        pg = T.PgServer(args.pg_dsn)
        tally.notes.append(
            "PostgreSQL given by DSN: the server-restart trials are skipped (not our server)"
        )
    else:
        pg = T.PgServer.embedded(work)
        log(f"embedded PostgreSQL in {pg.data_dir}")
    h = T.Harness(pg, work, n_resumes=prof["resumes"], batch=prof["batch"], log=log, tally=tally)
    try:
        h.setup()
        run = lambda name, fn, *a, **kw: T.run_trial(h, name, fn, *a, **kw)  # noqa: E731
        per = max(5, prof["kills"] // 4)
        left = prof["kills"]
        i = 0
        while left > 0:  # several kill trials, each verified on its own
            i += 1
            n = min(per, left)
            run(f"sigkill-{i}", T.trial_kills, n, rng, random_window=prof["kill_window"])
            left -= n
        run("pg-terminate-backend", T.trial_pg_terminate, rng, times=prof["terminate"])
        if pg.can_restart:
            run("pg-restart-fast", T.trial_pg_restart, "fast", rng, times=prof["restarts_fast"])
            run(
                "pg-restart-immediate",
                T.trial_pg_restart,
                "immediate",
                rng,
                times=prof["restarts_immediate"],
            )
        run("arango-faults", T.trial_arango_faults, rng, rounds=prof["arango_rounds"])
        run("arango-restart", T.trial_arango_restart, rng, times=prof["arango_restarts"])
        run("concurrent-migrate", T.trial_concurrent)
        for r in range(prof["parallel_rounds"]):
            run(f"parallel-kills-{r + 1}", T.trial_parallel_kills, rng)
        for r in range(prof["source_rounds"]):
            run(f"source-changes-{r + 1}", T.trial_source_changes, rng)
        run("sync-under-faults", T.trial_sync, rng, faults=prof["sync_faults"])
        h.scan_reports()
        h.scan()  # what is left of the outputs
    finally:
        h.close()
        pg.stop()
    wall = time.perf_counter() - started
    result = {
        "started": stamp,
        "seed": seed,
        "profile": "quick" if args.quick else "default",
        "wall_seconds": round(wall, 1),
        "documents_in_source": getattr(h, "source_count", None),
        **tally.asdict(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(render(result))
    print(f"\nresult: {'PASS' if tally.ok else 'FAIL'} in {wall / 60:.1f} min; written to {out}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if tally.ok else 1


def render(r: dict) -> str:
    rows = [("faults injected", str(r["faults_total"]))]
    rows += [(f"  {k}", str(v)) for k, v in r["faults_injected"].items()]
    rows += [("trials", f"{r['trials_run']} ({r['trials_failed']} failed)")]
    rows += [
        (f"  {t['trial']}", f"{'ok' if t['ok'] else 'FAILED'} {t['seconds']}s  {t['note']}")
        for t in r["trials"]
    ]
    rows += [
        ("documents checked", str(r["documents_checked"])),
        ("checkpoint checks after faults", str(r["checkpoint_checks"])),
        ("documents lost", str(r["documents_lost"])),
        ("duplicates", str(r["duplicates"])),
        ("checkpoint ahead of data", str(r["checkpoint_ahead_of_data"])),
        (
            "secrets leaked",
            f"{r['secrets_leaked']}  ({r['places_scanned']} places scanned by {r['secret_scanner']})",
        ),
    ]
    rows += [("note", n) for n in r["notes"]]
    w = max(len(k) for k, _ in rows)
    lines = [f"{'what'.ljust(w)}  result", f"{'-' * w}  {'-' * 6}"]
    lines += [f"{k.ljust(w)}  {v}" for k, v in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
