"""Work units of a parallel run (table etl_work_units, sql/007): planning, claiming, leases.

A unit is a key range (key_after, key_until] of one collection, a collection's 'finish' step,
the index builds of one table ('index', its table name in `collection`), or the run's 'final'
step. Workers claim units with FOR UPDATE SKIP LOCKED and a lease; UnitCheckpoints is the
pipeline's checkpoint store for a claimed unit (docs/design.md, "Parallel workers").
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

from etl.errors import EtlError
from etl.pg import scalar
from etl.state import Checkpoint, Counts

LEASE_SECONDS = 120


class LeaseLost(EtlError):
    """The unit was claimed by another worker after this worker's lease expired."""


def worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{suffix}"


@dataclass
class Unit:
    run_id: str
    unit_id: int
    collection: str
    kind: str
    key_after: str | None
    key_until: str | None
    position: str | None
    batches: int
    counts: Counts
    attempts: int = 0


class UnitCheckpoints:
    """The checkpoint store of one claimed unit (pipeline.CheckpointStore): its position and
    counts live in its etl_work_units row, and every write first re-takes the lease."""

    ends_collection = False  # the collection's 'finish' unit sets the links across ranges

    def __init__(self, unit: Unit, worker: str, lease_seconds: float = LEASE_SECONDS):
        self.unit = unit
        self.run_id = unit.run_id
        self.unit_id = unit.unit_id
        self.until = unit.key_until
        self.worker = worker
        self.lease_seconds = lease_seconds

    def checkpoint(self) -> Checkpoint:
        """Where the unit stands: its saved position, or the start of its range."""
        u = self.unit
        return Checkpoint(u.collection, u.position or u.key_after, False, u.batches, u.counts)

    def take(self, conn: psycopg.Connection) -> None:
        """In the batch's transaction: lock the unit row and extend the lease, or raise LeaseLost."""
        row = conn.execute(
            "update etl_work_units set lease_until = clock_timestamp() + make_interval(secs => %s)"
            " where run_id = %s and unit_id = %s and worker = %s and state = 'running' returning 1",
            (self.lease_seconds, self.run_id, self.unit_id, self.worker),
        ).fetchone()
        if row is None:
            raise LeaseLost(
                f"unit {self.unit_id} of run {self.run_id} was taken over by another worker"
                " (lease expired)"
            )

    def save(self, conn: psycopg.Connection, cp: Checkpoint) -> None:
        """The unit's checkpoint, in the batch's transaction (after take())."""
        conn.execute(
            "update etl_work_units set position = %s, batches = %s, counts = %s,"
            " state = case when %s then 'done' else state end,"
            " finished_at = case when %s then clock_timestamp() else finished_at end"
            " where run_id = %s and unit_id = %s and worker = %s",
            (
                cp.position,
                cp.batches,
                Jsonb(cp.counts.asdict()),
                cp.done,
                cp.done,
                self.run_id,
                self.unit_id,
                self.worker,
            ),
        )
        conn.execute("update etl_runs set heartbeat_at = now() where run_id = %s", (self.run_id,))


@dataclass
class PlannedUnit:
    collection: str
    kind: str = "range"
    key_after: str | None = None
    key_until: str | None = None
    needs: list[str] = field(default_factory=list)


_COLUMNS = (
    "run_id, unit_id, collection, kind, key_after, key_until, position, batches, counts, attempts"
)


def _unit(row) -> Unit:
    counts = Counts(
        **{k: int(v) for k, v in (row[8] or {}).items() if k in Counts.__dataclass_fields__}
    )
    return Unit(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], counts, row[9])


def plan(conn: psycopg.Connection, run_id: str, units: list[PlannedUnit]) -> None:
    """Insert the run's units (ids in the order given: claimed in that order)."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into etl_work_units (run_id, unit_id, collection, kind, key_after, key_until, needs)"
            " values (%s, %s, %s, %s, %s, %s, %s)",
            [
                (run_id, i, u.collection, u.kind, u.key_after, u.key_until, u.needs)
                for i, u in enumerate(units, 1)
            ],
        )


def has_units(conn: psycopg.Connection, run_id: str) -> bool:
    return scalar(conn, "select exists (select 1 from etl_work_units where run_id = %s)", (run_id,))


def claim(conn: psycopg.Connection, run_id: str, worker: str, lease_seconds: float) -> Unit | None:
    """Take the first claimable unit, or None. Commits (autocommit-safe)."""
    with conn.transaction():
        row = conn.execute(
            "update etl_work_units w set state = 'running', worker = %(w)s, attempts = w.attempts + 1,"
            " lease_until = clock_timestamp() + make_interval(secs => %(lease)s),"
            " started_at = coalesce(w.started_at, now()), error = null"
            " where (w.run_id, w.unit_id) = ("
            "   select u.run_id, u.unit_id from etl_work_units u"
            "    where u.run_id = %(run)s"
            "      and (u.state = 'pending' or (u.state = 'running' and u.lease_until < clock_timestamp()))"
            "      and not exists (select 1 from etl_work_units f where f.run_id = u.run_id and f.state = 'failed')"
            "      and not exists (select 1 from etl_work_units d"
            "             where d.run_id = u.run_id and d.unit_id <> u.unit_id and d.state <> 'done'"
            "               and (d.collection = any(u.needs) or u.kind = 'final'"
            "                    or (u.kind = 'finish' and d.collection = u.collection)))"
            "    order by u.unit_id limit 1 for update of u skip locked)"
            " returning " + ", ".join(f"w.{c.strip()}" for c in _COLUMNS.split(",")),
            {"w": worker, "lease": lease_seconds, "run": run_id},
        ).fetchone()
    return _unit(row) if row else None


def release(conn: psycopg.Connection, unit: Unit, worker: str) -> None:
    """Give a unit back at once (Ctrl-C): the next claim takes it from its position."""
    with conn.transaction():
        conn.execute(
            "update etl_work_units set state = 'pending', worker = null, lease_until = null"
            " where run_id = %s and unit_id = %s and worker = %s and state = 'running'",
            (unit.run_id, unit.unit_id, worker),
        )


def fail(conn: psycopg.Connection, unit: Unit, worker: str, error: str) -> None:
    """A permanent error: the unit stops the run (no other unit is claimed) until --resume."""
    with conn.transaction():
        conn.execute(
            "update etl_work_units set state = 'failed', error = %s, lease_until = null"
            " where run_id = %s and unit_id = %s and worker = %s",
            (error[:2000], unit.run_id, unit.unit_id, worker),
        )


def retry_failed(conn: psycopg.Connection, run_id: str) -> int:
    """--resume: failed units go back to pending."""
    with conn.transaction():
        return conn.execute(
            "update etl_work_units set state = 'pending', worker = null, error = null,"
            " lease_until = null where run_id = %s and state = 'failed'",
            (run_id,),
        ).rowcount


@dataclass
class RunProgress:
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    read: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.running == 0 and self.failed == 0


def progress(conn: psycopg.Connection, run_id: str) -> RunProgress:
    out = RunProgress()
    with conn.transaction():
        for st, n, read, errors in conn.execute(
            "select state, count(*), coalesce(sum((counts ->> 'read')::bigint), 0),"
            " array_remove(array_agg(error order by unit_id), null)"
            " from etl_work_units where run_id = %s group by state",
            (run_id,),
        ):
            setattr(out, st, n)
            out.read += int(read)
            out.errors += errors
    return out


def collection_counts(conn: psycopg.Connection, run_id: str) -> dict[str, tuple[Counts, int]]:
    """Per collection: the summed counts and batches of its units."""
    out: dict[str, tuple[Counts, int]] = {}
    for collection, counts, batches in conn.execute(
        "select collection, counts, batches from etl_work_units where run_id = %s and kind in ('range', 'finish')"
        " order by unit_id",
        (run_id,),
    ):
        total, n = out.get(collection, (Counts(), 0))
        total.add(
            Counts(
                **{k: int(v) for k, v in (counts or {}).items() if k in Counts.__dataclass_fields__}
            )
        )
        out[collection] = (total, n + batches)
    return out
