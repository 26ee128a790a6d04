"""How the follower commits a batch: on one connection, or, when the batch is large, split
over two (the sink's second core).

A split batch (Plan.split): the second connection upserts every other row while the first
upserts the rest; the first then waits for the second's commit and, now seeing its rows,
removes, links late parents and edges over the whole batch, saves the position and commits.

- Nothing is lost or doubled. The position commits with the first connection's part, last.
  If the second commits and the first does not (an error, a crash between the two commits),
  the batch is applied again from the old position, and applying a change again changes
  nothing: its row is already what the change says.
- No deadlock PostgreSQL cannot see. The first connection waits for the second in Python;
  the second's statements have a lock timeout (apply.SHARE_LOCK_TIMEOUT), so a second
  connection that waits on a lock of the first fails instead of waiting for ever.
- A split that fails (that lock, a row the table refuses, the second connection's error) is
  applied again on one connection, once the second has committed or rolled back.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for

from etl.sync.apply import Applier, Plan, Share, SplitFailed
from etl.writer import Writer

log = logging.getLogger("etl.sync")

ONE = "one connection"
SPLIT = "split"
SPLIT_FAILED = "split, then one"

# attempt(conn) applies the batch and saves its position in the caller's transaction;
# attempt(conn, (plan, share)) applies a split plan's first part, with share() waiting for the
# second connection's commit
Attempt = Callable[..., Counter]


class Committers:
    """The first connection (the position's) and the second, with the thread that drives it."""

    def __init__(self, dsn: str, attempts: int, retry_wait, applier: Applier, split_rows: int):
        self.applier = applier
        # a batch with at least this many rows to upsert is split (0: never); below it, one
        # connection: a trickle gains nothing from a second commit, and its lag would pay
        self.split_rows = split_rows
        self.first = Writer(dsn, attempts, retry_wait)
        self.second = Writer(dsn, attempts, retry_wait)
        self._second_thread: ThreadPoolExecutor | None = None

    def commit(self, attempt: Attempt, work: list) -> tuple[Counter, str]:
        """One batch (prepared plans and collection events) committed; returns its counts and
        how (ONE, SPLIT, SPLIT_FAILED). Only a batch of one plan is split (a collection
        dropped or truncated is rare enough to go on one connection)."""
        plan = work[0] if len(work) == 1 and isinstance(work[0], Plan) else None
        if plan is None or not self.split_rows or plan.row_count() < self.split_rows:
            return self.first.in_transaction(attempt), ONE
        mine, theirs = plan.split()
        if self._second_thread is None:
            self._second_thread = ThreadPoolExecutor(1, thread_name_prefix="etl-sync-commit2")
        future = self._second_thread.submit(
            self.second.in_transaction, lambda c: self.applier.upsert_share(c, theirs)
        )

        def share() -> Share:
            try:
                return future.result()
            except SplitFailed:
                raise
            except Exception as exc:  # its retries are spent; one connection may still do
                raise SplitFailed(f"the second connection failed: {exc}") from exc

        try:
            return self.first.in_transaction(lambda c: attempt(c, (mine, share))), SPLIT
        except SplitFailed as exc:
            wait_for([future])  # committed or rolled back: nothing of it runs beside the retry
            log.info("a batch of %d rows goes on one connection: %s", plan.row_count(), exc)
            return self.first.in_transaction(attempt), SPLIT_FAILED
        finally:
            wait_for([future])

    def close(self) -> None:
        if self._second_thread is not None:
            self._second_thread.shutdown(wait=True)
            self._second_thread = None
        self.first.close()
        self.second.close()
