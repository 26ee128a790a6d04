"""Parallel runs: `etl migrate --workers N` plans the run into work units (etl/units.py) and
starts N local worker processes; `etl worker --run ID` joins from any machine. Every unit goes
through the same pipeline as a single run (docs/design.md, "Parallel workers").
"""

from etl.parallel.coordinator import Joined, ParallelMigration, join, with_dsn
from etl.parallel.plan import MIN_RANGE_DOCS, needs_of, plan_units, ranges_for
from etl.parallel.summary import summary_from_db
from etl.parallel.worker import Coordination, Supervisor, Worker, worker_main

__all__ = [
    "MIN_RANGE_DOCS",
    "Coordination",
    "Joined",
    "ParallelMigration",
    "Supervisor",
    "Worker",
    "join",
    "needs_of",
    "plan_units",
    "ranges_for",
    "summary_from_db",
    "with_dsn",
    "worker_main",
]
