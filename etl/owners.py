"""Who owns a run that etl_runs says is running, and whether that owner still lives.

A run records the host and PID of its process (state.start_run), and a Heartbeat thread moves
its heartbeat_at every HEARTBEAT_SECONDS while it runs, whatever the run is busy with. A
'running' run is *stale* (its process was killed: a second Ctrl-C, SIGTERM, SIGKILL, a lost
machine) when its heartbeat is older than STALE_AFTER (3 heartbeats), or at once when its PID
is gone on this very host. `etl status` shows a stale run as interrupted; `--resume` refuses a
run whose owner is alive; `etl reconcile` refuses while a live migrate loads its collections
(docs/operations.md)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

import psycopg

from etl import pg
from etl.errors import PermanentError

log = logging.getLogger("etl.owners")

HEARTBEAT_SECONDS = 10.0
STALE_AFTER = 3 * HEARTBEAT_SECONDS


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except OSError:
        return False
    return True


@dataclass
class Owner:
    host: str | None
    pid: int | None
    heartbeat_age: float | None  # seconds since the last heartbeat, by the database's clock

    @property
    def alive(self) -> bool:
        if self.host == socket.gethostname() and self.pid and not pid_alive(self.pid):
            return False  # gone from this host: no need to wait for the heartbeat to age
        return self.heartbeat_age is not None and self.heartbeat_age < STALE_AFTER

    def why_stale(self) -> str:
        if self.host == socket.gethostname() and self.pid and not pid_alive(self.pid):
            return f"its process {self.pid} on {self.host} is gone"
        age = "never" if self.heartbeat_age is None else f"{self.heartbeat_age:.0f} s ago"
        return (
            f"no heartbeat for over {STALE_AFTER:.0f} s (last {age}; owner {self.host}:{self.pid})"
        )

    def label(self) -> str:
        age = "?" if self.heartbeat_age is None else f"{self.heartbeat_age:.0f} s ago"
        return f"host {self.host}, pid {self.pid}, last heartbeat {age}"


# the columns that make an Owner, for a select on etl_runs
OWNER_SQL = "host, pid, extract(epoch from now() - heartbeat_at)::float8 as heartbeat_age"


def owner(row) -> Owner:
    """An Owner from the three columns of OWNER_SQL."""
    return Owner(row[0], row[1], row[2])


def live_migrate_of(conn: psycopg.Connection, names: list[str]) -> tuple[str, Owner, list] | None:
    """A live `etl migrate` run loading any of `names`: (run id, owner, the shared names)."""
    rows = conn.execute(
        f"select run_id, options -> 'collections', {OWNER_SQL} from etl_runs"
        " where command = 'migrate' and state = 'running' order by started_at desc"
    ).fetchall()
    if not conn.autocommit:
        conn.rollback()
    for run_id, collections, *rest in rows:
        shared = [n for n in names if n in (collections or [])]
        o = owner(rest)
        if shared and o.alive:
            return run_id, o, shared
    return None


def refuse_if_alive(run_id: str, row_owner: Owner, command: str) -> None:
    """--resume of a run whose owner still runs it: refuse at once, naming it."""
    if row_owner.alive:
        raise PermanentError(
            f"run {run_id} is still running in another etl {command} ({row_owner.label()})",
            hint=f"wait for it (etl status), or stop that process first; `etl {command} --resume`"
            " then continues it",
        )


class Heartbeat:
    """A daemon thread that sets the run's heartbeat_at every `every` seconds on its own
    connection, while the run is 'running' (a long batch or index build still beats)."""

    def __init__(self, dsn: str, run_id: str, every: float = HEARTBEAT_SECONDS):
        self.dsn, self.run_id, self.every = dsn, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="etl-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        conn = None
        while not self._stop.wait(self.every):
            try:
                if conn is None or conn.closed:
                    conn = pg.connect(self.dsn, autocommit=True, application_name="etl-heartbeat")
                    conn.execute("set lock_timeout = '5s'")
                conn.execute(
                    "update etl_runs set heartbeat_at = now()"
                    " where run_id = %s and state = 'running'",
                    (self.run_id,),
                )
            except Exception as exc:  # noqa: BLE001 - a missed beat is logged, never fatal
                log.debug("heartbeat of run %s failed: %s", self.run_id, exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
