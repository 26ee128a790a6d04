"""`etl cutover`: catch up and verify the keys changed so far, have the operator freeze writes,
drain the log to the tick read after the freeze (arangodb-wal.md §4.6), verify the last changed
keys field by field against the source, check once more that nothing arrived, and say go or
no-go, with the freeze's duration. A full (or sampled) reconcile inside the freeze is optional:
continuous verification (etl.sync.verify) already covers every key changed since the copy."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import psycopg

from etl import jsonutil, pg
from etl.errors import EtlError, PermanentError
from etl.reconcile import Reconciliation
from etl.summary import DocSummary, concluded
from etl.sync import verify
from etl.sync.follow import Follower, WritesContinue
from etl.sync.phases import Phases
from etl.sync.run import SyncJob
from etl.target import AUDIT_TABLE, DOCUMENT_TYPES

log = logging.getLogger("etl.sync")

NIL_UUID = "00000000-0000-0000-0000-000000000000"
MAX_ROUNDS = 5  # drain-and-verify rounds while mapped changes keep arriving after the freeze
DRAIN_SECONDS = 10.0  # one drain's limit: the log still moving after it is a no-go
SHOWN = 50  # keys named in the report (differing, or changed after the freeze)


class Cutover:
    def __init__(
        self,
        settings,
        *,
        confirm_freeze: Callable[[], bool],
        sample: float | None = None,
        full: bool = False,
        workers: int = 1,
        should_stop: Callable[[], bool] = lambda: False,
        say: Callable[[str], None] = print,
    ):
        self.settings = settings
        self.confirm_freeze = confirm_freeze
        self.sample = 100.0 if full else sample
        self.workers = workers
        self.say = say
        self.job = SyncJob(settings, command="cutover", should_stop=should_stop)
        self.go = False

    def run(self) -> DocSummary:
        job = self.job
        with concluded(self._close):
            follower = job.open()
            doc = job.doc
            verified = 0
            for _ in range(2):  # again for what arrived while the backlog was verified
                out = job.follow(until_current=True)
                verified += sum(follower.verify_pending(retry_after=0).verified.values())
            follower.ready_to_verify()  # its connection and compare specs: not in the freeze
            self.say(
                f"caught up at tick {out.from_tick} (server's last tick {out.server_tick}); "
                f"{verified} changed keys verified now; freeze writes to ArangoDB now"
            )
            if not self.confirm_freeze():
                raise PermanentError(
                    "cutover cancelled before the freeze: nothing was switched",
                    hint="run `etl cutover` again when writes can be frozen",
                )
            clock = Phases()
            problems = self._freeze(doc, follower, clock)
            if self.sample is not None or not follower.verifying:
                self._reconcile(doc)
                if doc["reconcile_result"] != "everything matches":
                    problems.append(f"reconcile: {doc['reconcile_result']}")
                clock.lap("reconcile")
            doc["no_go_reasons"] = problems
            self.go = not problems
            if self.go:  # the way back, armed before the application is switched
                from etl.fallback.commands import arm_on_go

                assert job.run is not None
                arm_on_go(job.run.dsn, self.settings.migrate.mapping, job.run.run_id, self.say)
                clock.lap("arm_fallback")
            doc["verdict"] = "go" if self.go else "no-go"
            clock.lap("verdict")
            doc["freeze_seconds"] = clock.total()
            doc["freeze_phases"] = clock.report()
            self._verdict(doc)
            # after the verdict, outside the freeze: the per-collection record, then (in
            # _close) the reports and the audit entries
            self._record(doc, follower)
        self._raise_report_error()
        return job.doc

    def _raise_report_error(self) -> None:
        """An unwritable report is an error (exit 2, docs/operations.md) once the verdict is
        out and the run saved; taken off the run so that it is said once, in this error."""
        run = self.job.run
        if run is not None and run.report_error:
            error, run.report_error = run.report_error, None
            raise EtlError(
                error,
                hint="the run itself is saved (etl status); make the directory writable or "
                "choose another --reports-dir (etl preflight checks it)",
            )

    def _verdict(self, doc: DocSummary) -> None:
        """The verdict, as soon as it is known: the reports are written after it."""
        verified = sum((doc.get("keys_verified_in_freeze") or {}).values())
        self.say(
            f"verdict: {doc['verdict'].upper()} after {doc['freeze_seconds']} s of freeze "
            f"(confirmation to verdict); {verified} changed keys verified in the freeze; "
            "writing the reports"
        )

    def _close(self, state: str, error: str | None) -> None:
        """The run's end: no go unless it finished; the audit entries with its end row."""
        job = self.job
        if state != "finished":
            job.doc["verdict"] = "no-go"
        job.close(state, error, also=lambda c: self._audit(c, job.doc))

    def _freeze(self, doc: DocSummary, follower: Follower, clock: Phases) -> list[str]:
        """Drain to the tick read after the freeze, verify every key not verified yet, then
        look again: a mapped change committed after the freeze is applied and verified in the
        next round (and the report says the freeze did not hold); still arriving after
        MAX_ROUNDS, or the log still moving after DRAIN_SECONDS, is a no-go. The clock gets
        each phase (server tick, drain, verify) over all rounds."""
        job = self.job
        t1 = job.server_tick()
        clock.lap("server_tick")
        doc["freeze_tick"] = t1
        problems: list[str] = []
        in_freeze: Counter = Counter()
        late: list[tuple[str, str, int]] = []
        checked = verify.Checked()
        until = t1
        for round_ in range(MAX_ROUNDS):
            try:
                out = job.follow(
                    until_current=False,
                    until=until,
                    settle=True,
                    late_after=t1,
                    deadline=time.monotonic() + DRAIN_SECONDS,
                )
            except WritesContinue as exc:
                clock.lap("drain")
                late += follower.outcome.late if follower.outcome else []
                problems.append(str(exc))
                break
            clock.lap("drain")
            late += out.late
            doc["final_tick"] = max(until, out.from_tick)
            checked = follower.verify_pending(retry_after=0)
            clock.lap("verify")
            in_freeze.update(checked.verified)
            if round_ > 0 and not out.late:
                break  # the look after verifying found nothing new: the position is final
            until = job.server_tick()
            clock.lap("server_tick")
        else:
            problems.append(
                f"changes kept arriving after the freeze ({MAX_ROUNDS} rounds): stop every "
                "writer to ArangoDB (or set it read-only), then run `etl cutover` again"
            )
        doc["freeze_held"] = not late
        doc["late_changes"] = len(late)
        doc["late_keys"] = [f"{c}/{k}" for c, k, _t in late[:SHOWN]]
        if late:
            self.say(
                f"warning: {len(late)} changes to mapped collections were committed after the "
                "freeze was confirmed (applied and verified; the freeze did not hold): "
                + ", ".join(doc["late_keys"][:10])
            )
        doc["keys_verified_in_freeze"] = dict(in_freeze)
        doc["differing"] = checked.differing[:SHOWN]
        doc["differing_count"] = len(checked.differing)
        if checked.differing:
            problems.append(
                f"{len(checked.differing)} changed keys differ from the source: "
                + "; ".join(
                    f"{d['collection']}/{d['key']} ({', '.join(d['fields'])})"
                    for d in checked.differing[:5]
                )
            )
        self.say(
            f"every change up to tick {doc.get('final_tick')} applied; "
            f"{sum(in_freeze.values())} keys verified in the freeze"
        )
        return problems

    def _reconcile(self, doc: DocSummary) -> None:
        rec = Reconciliation(
            self.settings, all_=True, source="arangodb", sample=self.sample, workers=self.workers
        )
        summary = rec.run()
        doc["reconcile_run"] = summary.run_id
        doc["reconcile_result"] = (
            "differences found" if summary.has_differences else "everything matches"
        )
        doc["reconcile_sample_percent"] = self.sample

    def _record(self, doc: DocSummary, follower: Follower) -> None:
        """Per collection: keys verified since the copy and when; the last full reconcile.
        After the verdict: a failure here is said in the report, it does not change it."""
        try:
            self._read_record(doc, follower)
        except (psycopg.Error, EtlError) as exc:
            log.warning("the cutover's verification record could not be read: %s", exc)
            doc["record_error"] = str(exc)

    def _read_record(self, doc: DocSummary, follower: Follower) -> None:
        with pg.connect(follower.dsn) as conn:
            if follower.verifying:
                doc["verification"] = verify.verified_table(conn)
            row = conn.execute(
                "select run_id, finished_at from etl_runs where command = 'reconcile'"
                " and state = 'finished' and coalesce((options ->> 'sample')::float, 100) >= 100"
                " order by finished_at desc limit 1"
            ).fetchone()
        doc["last_full_reconcile"] = (
            {"run_id": row[0], "finished_at": row[1].isoformat()} if row else "none"
        )

    def _audit(self, c, doc: DocSummary) -> None:
        """One entry per document type (the audit log's types), action 'cutover'."""
        changes = jsonutil.dumps_str(
            {
                k: doc.get(k)
                for k in (
                    "verdict",
                    "final_tick",
                    "freeze_seconds",
                    "freeze_held",
                    "late_changes",
                    "keys_verified_in_freeze",
                    "differing_count",
                    "no_go_reasons",
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
