"""`etl cutover --to arangodb`: the switch back, as the forward cutover (etl/sync/cutover.py) but
with PostgreSQL frozen and ArangoDB caught up by `etl fallback`."""

from __future__ import annotations

import time
from collections.abc import Callable

from etl import pg
from etl.errors import PermanentError
from etl.fallback import capture
from etl.fallback.run import FallbackJob
from etl.summary import DocSummary, concluded


class CutoverBack:
    """`etl cutover --to arangodb`: apply what is captured, have the operator freeze writes to
    PostgreSQL, apply until nothing committed is left and no transaction that could still add
    to it runs, reconcile, go (0) / no-go (1)."""

    def __init__(
        self,
        settings,
        *,
        confirm_freeze: Callable[[], bool],
        sample: float | None = None,
        workers: int = 1,
        on_conflict: str = "report",
        should_stop: Callable[[], bool] = lambda: False,
        say: Callable[[str], None] = print,
    ):
        self.settings = settings
        self.confirm_freeze = confirm_freeze
        self.sample = sample
        self.workers = workers
        self.say = say
        self.job = FallbackJob(
            settings, command="cutover-back", on_conflict=on_conflict, should_stop=should_stop
        )
        self.go = False

    def run(self) -> DocSummary:
        from etl.reconcile import Reconciliation

        job = self.job
        with concluded(self._close):
            job.open()
            job.follow(until_current=True)
            self.say("caught up; freeze writes to PostgreSQL now")
            if not self.confirm_freeze():
                raise PermanentError(
                    "cutover back cancelled before the freeze: nothing was switched",
                    hint="run `etl cutover --to arangodb` again when writes can be frozen",
                )
            frozen_at = time.perf_counter()
            self._drain()
            self.say("every captured change applied; reconciling")
            rec = Reconciliation(
                self.settings, all_=True, source="arangodb", sample=self.sample,
                workers=self.workers,
            )  # fmt: skip
            summary = rec.run()
            doc = job.doc
            doc["reconcile_run"] = summary.run_id
            doc["reconcile_result"] = (
                "differences found" if summary.has_differences else "everything matches"
            )
            doc["freeze_seconds"] = round(time.perf_counter() - frozen_at, 3)
            self.go = not summary.has_differences and not job.conflicts and not job.problems
            doc["verdict"] = "go" if self.go else "no-go"
        return job.doc

    def _close(self, state: str, error: str | None) -> None:
        """The run's end: no go unless it finished."""
        if state != "finished":
            self.job.doc["verdict"] = "no-go"
        self.job.close(state, error)

    def _drain(self) -> None:
        """After the freeze: apply until the change table is empty; a change that keeps
        arriving means the freeze did not hold."""
        job = self.job
        for _ in range(10):
            job.follow(until_current=True)
            left = pg.scalar(job.conn, "select count(*) from etl_fallback_changes")
            busy = capture.writers(job.conn)  # a transaction that may still commit changes
            job.conn.rollback()
            if left == 0 and busy == 0:
                return
            time.sleep(0.5)  # changes of transactions still running: wait for them to end
        raise PermanentError(
            "writes to PostgreSQL kept arriving after the freeze: no cutover back",
            hint="stop every writer to PostgreSQL (or revoke its write grants), then run "
            "`etl cutover --to arangodb` again",
        )
