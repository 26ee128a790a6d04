"""What bench/sync.py and bench/fallback.py share: the scratch databases, the test ArangoDB
server seeded with the bench data, `etl` run as the operator runs it, its report, medians."""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from etl.generic.apply import apply_mapping_file  # noqa: E402
from etl.pg import embedded_dsn  # noqa: E402
from etl.schema import apply_schema  # noqa: E402
from etl.settings import default_embedded_dir  # noqa: E402
from tests.fakearango.fixtures import DATABASE, ROOT_PASSWORD, seed  # noqa: E402
from tests.fakearango.server import FakeArango  # noqa: E402

DOCS_PER_RESUME = 4.5  # the bench data's documents per resume (all collections)


def logger(name: str):
    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def admin_dsn(given: str | None) -> str:
    """--pg-dsn, else this project's embedded server (as `etl` would start it here)."""
    return given or embedded_dsn(default_embedded_dir(REPO), announce=False)


class Databases:
    """A template database with the schema and the mapping's tables, and fresh copies of it;
    drop_all() removes every one made."""

    def __init__(self, admin: str, prefix: str):
        self.admin = admin
        self.prefix = prefix
        self.made: list[str] = []
        self.template = self._create(None)
        apply_schema(make_conninfo(admin, dbname=self.template), REPO / "sql")
        apply_mapping_file(make_conninfo(admin, dbname=self.template))  # arango.task_results
        with psycopg.connect(admin, autocommit=True) as c:
            self.version = c.execute("show server_version").fetchone()[0]

    def _create(self, template: str | None) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin, autocommit=True) as c:
            c.execute(f'create database "{name}"' + (f' template "{template}"' if template else ""))
        self.made.append(name)
        return name

    def fresh(self) -> str:
        """The DSN of a new copy of the template."""
        return make_conninfo(self.admin, dbname=self._create(self.template))

    def drop(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.admin, autocommit=True) as c:
            c.execute(f'drop database if exists "{name}" with (force)')
        self.made.remove(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as c:
            for name in reversed(self.made):
                c.execute(f'drop database if exists "{name}" with (force)')
        self.made.clear()


def arango_with(ds) -> FakeArango:
    """The test ArangoDB server, started and holding the data set `ds`."""
    server = FakeArango(ROOT_PASSWORD).start()
    for c in ds:
        # small imports: an import of 10,000 real-shaped documents can outlast the client's
        # 10 s timeout on a loaded machine
        seed(server, DATABASE, c, ds[c], edge=ds.types[c] == "edge", chunk=2000)
    return server


def etl_env(server: FakeArango, dsn: str) -> dict:
    """The ETL_ settings of a run against `server` and `dsn`."""
    return {
        "ETL_ARANGO_URL": server.url,
        "ETL_ARANGO_DB": DATABASE,
        "ETL_ARANGO_USER": "root",
        "ETL_ARANGO_PASSWORD": ROOT_PASSWORD,
        "ETL_PG_DSN": dsn,
        "ETL_REPORTS_DIR": str(REPO / "bench" / "reports"),
    }


def process_env(env: dict) -> dict:
    """This process's environment without its ETL_ settings, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    full.update(env)
    return full


def etl(env: dict, *args: str) -> str:
    """`etl ARGS` as the operator runs it: its own process (the test server here keeps this
    one's interpreter busy); stdout, or the error."""
    proc = subprocess.run(
        [sys.executable, "-m", "etl", *args], env=process_env(env), capture_output=True, text=True
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


class CpuClock:
    """CPU seconds spent by the `etl` commands this process ran (their own processes) and by
    the PostgreSQL server, when it runs on this machine and /proc shows it (its backends' time
    comes to the postmaster once they exit). On a machine shared with other work the wall clock
    measures the share of the CPU a step got; the CPU seconds measure the step."""

    def __init__(self, admin: str):
        self.postmaster: int | None = None
        try:
            with psycopg.connect(admin, autocommit=True) as c:
                data = c.execute("show data_directory").fetchone()[0]
            pid = int(Path(data, "postmaster.pid").read_text().split()[0])
            self._server(pid)
            self.postmaster = pid
        except (psycopg.Error, OSError, ValueError, IndexError):
            pass  # another machine's server, or not ours to read: etl's CPU alone

    @staticmethod
    def _server(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime (proc(5) fields 14-17)
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def now(self) -> tuple[float, float | None]:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime, (
            self._server(self.postmaster) if self.postmaster is not None else None
        )

    def since(self, start: tuple[float, float | None]) -> float | None:
        """etl's plus the server's CPU seconds since `start` (None without the server's)."""
        time.sleep(0.5)  # the command's backends have exited and been reaped
        etl_now, pg_now = self.now()
        if pg_now is None or start[1] is None:
            return None
        return etl_now - start[0] + pg_now - start[1]
