"""`etl cutover`: catch up, have the operator freeze writes, follow until the log stops moving
(arangodb-wal.md §4.6), reconcile, and say go or no-go, with the freeze's duration."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from etl import jsonutil
from etl.errors import PermanentError
from etl.reconcile import Reconciliation
from etl.sync.run import SyncJob
from etl.target import AUDIT_TABLE, DOCUMENT_TYPES

log = logging.getLogger("etl.sync")

NIL_UUID = "00000000-0000-0000-0000-000000000000"
MAX_ROUNDS = 10  # follow rounds after the freeze before calling the freeze ineffective


class Cutover:
    def __init__(
        self,
        settings,
        *,
        confirm_freeze: Callable[[], bool],
        sample: float | None = None,
        workers: int = 1,
        should_stop: Callable[[], bool] = lambda: False,
        say: Callable[[str], None] = print,
    ):
        self.settings = settings
        self.confirm_freeze = confirm_freeze
        self.sample = sample
        self.workers = workers
        self.say = say
        self.job = SyncJob(settings, command="cutover", should_stop=should_stop)
        self.go = False

    def run(self) -> dict:
        job = self.job
        doc = job.doc
        state, error = "failed", None
        try:
            job.open()
            doc = job.doc
            out = job.follow(until_current=True)
            self.say(f"caught up at tick {out.from_tick}; freeze writes to ArangoDB now")
            if not self.confirm_freeze():
                raise PermanentError(
                    "cutover cancelled before the freeze: nothing was switched",
                    hint="run `etl cutover` again when writes can be frozen",
                )
            frozen_at = time.perf_counter()
            final = self._drain()
            doc["final_tick"] = final
            self.say(f"every change up to tick {final} applied; reconciling")
            rec = Reconciliation(
                self.settings,
                all_=True,
                source="arangodb",
                sample=self.sample,
                workers=self.workers,
            )
            summary = rec.run()
            doc["reconcile_run"] = summary.run_id
            doc["reconcile_result"] = (
                "differences found" if summary.has_differences else "everything matches"
            )
            doc["reconcile_sample_percent"] = self.sample
            doc["freeze_seconds"] = round(time.perf_counter() - frozen_at, 3)
            self.go = not summary.has_differences
            if self.go:  # the way back, armed before the application is switched
                from etl.fallback.commands import arm_on_go

                assert job.run is not None
                arm_on_go(job.run.dsn, self.settings.migrate.mapping, job.run.run_id, self.say)
            doc["verdict"] = "go" if self.go else "no-go"
            state = "finished"
        except BaseException as exc:
            error = str(exc) or type(exc).__name__
            doc["verdict"] = "no-go"
            raise
        finally:
            job.close(state, error, also=lambda c: self._audit(c, doc))
        return doc

    def _drain(self) -> int:
        """Follow to the server's tick after the freeze, again while it moves and changes keep
        coming; ticks of filtered writes (system collections) alone do not block the go."""
        job = self.job
        for _ in range(MAX_ROUNDS):
            target = job.server_tick()
            out = job.follow(until_current=True)
            applied = sum(out.applied.values())
            if job.server_tick() == target or applied == 0:
                return max(target, out.from_tick)
            log.info("tick moved from %d during the drain (%d changes): again", target, applied)
        raise PermanentError(
            f"writes kept arriving after the freeze ({MAX_ROUNDS} rounds): no cutover",
            hint="stop every writer to ArangoDB (or set it read-only), then run `etl cutover` again",
        )

    def _audit(self, c, doc: dict) -> None:
        """One entry per document type (the audit log's types), action 'cutover'."""
        changes = jsonutil.dumps_str(
            {
                k: doc.get(k)
                for k in (
                    "verdict",
                    "final_tick",
                    "freeze_seconds",
                    "reconcile_run",
                    "reconcile_result",
                    "reconcile_sample_percent",
                    "error",
                )
            }
        )
        with c.cursor() as cur:
            cur.executemany(
                f"insert into {AUDIT_TABLE} (document_type, document_id, action, changes, run_id)"
                " values (%s, %s, 'cutover', %s::jsonb, %s)",
                [(dt, NIL_UUID, changes, doc.get("run_id")) for dt in DOCUMENT_TYPES],
            )
