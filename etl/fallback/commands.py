"""What the `etl fallback ...` commands and `etl cutover --to arangodb` do, for
etl/cli/fallback.py and etl/cli/sync.py (which only parse options and print)."""

from __future__ import annotations

from collections.abc import Callable

from etl import pg
from etl.errors import PermanentError
from etl.fallback import capture, decoding
from etl.mapping import load_mapping
from etl.state import new_run_id, require_schema


def arm(settings, armed_by: str | None = None, capture_with: str = "auto") -> dict:
    """Arm the capture now (by hand, or from `etl cutover` on go)."""
    mapping = load_mapping(settings.migrate.mapping)
    with pg.connect(pg.resolve_dsn(settings)) as conn:
        require_schema(conn)
        st = capture.arm(conn, mapping, armed_by or new_run_id("fallback-arm"), capture_with)
        conn.commit()
        st["mechanisms"] = capture.mechanisms(conn)
        conn.rollback()
    return st


def arm_on_go(dsn: str, mapping_path: str, run_id: str, say: Callable[[str], None]) -> None:
    """`etl cutover` on go: arm before the application is switched. A schema without sql/010
    (an older etl's) is said, not fatal: the forward cutover does not depend on it."""
    with pg.connect(dsn) as conn:
        if not capture.installed(conn):
            conn.rollback()
            say("fallback NOT armed: sql/010 is not applied (run `etl apply-schema`, then "
                "`etl fallback arm` BEFORE switching the application)")  # fmt: skip
            return
        try:
            capture.arm(conn, load_mapping(mapping_path), run_id)
        except PermanentError as exc:  # e.g. a loader role that may not create triggers
            conn.rollback()
            say(f"fallback NOT armed: {exc}; arm it BEFORE switching the application")
            return
        conn.commit()
    say("fallback armed (" + _mechanism(dsn) + "): PostgreSQL's writes to the migrated tables are captured from now on "
        "(`etl fallback` replays them to ArangoDB)")  # fmt: skip


def _mechanism(dsn: str) -> str:
    with pg.connect(dsn) as conn:
        st = capture.state(conn)
        return "logical decoding" if st and st["mechanism"] == "logical" else "triggers"


def retire(settings, *, force: bool) -> list[str]:
    with pg.connect(pg.resolve_dsn(settings)) as conn:
        done = capture.retire(conn, force=force)
        conn.commit()
    return done


def status(conn) -> list[dict]:
    """Rows for `etl status` (empty when the fallback is not installed or not armed)."""
    if not capture.installed(conn):
        return []
    st = capture.state(conn)
    if st is None:
        return []
    b = capture.backlog(conn)
    return [
        {
            "mechanism": st["mechanism"],
            "armed_at": st["armed_at"],
            "armed_by": st["armed_by"],
            "pending_changes": b["pending_changes"],
            "change_table_bytes": b["change_table_bytes"],
            **(decoding.slot_status(conn, st["slot_name"]) if st["mechanism"] == "logical" else {}),
            "lag_seconds": b["oldest_pending_seconds"] or 0,
            "applied_at": st["applied_at"],
            "caught_up_at": st["caught_up_at"],
        }
    ]


def echo_lines(job) -> list[str]:
    f = job.doc.get("fallback") or {}
    out = []
    if f:
        out.append(
            f"fallback: {f['changes']} changes applied to ArangoDB ({f['changes_per_second']} "
            f"changes/s, lag p50 {f['lag_p50_seconds']} s, p99 {f['lag_p99_seconds']} s); "
            f"left {f['pending_changes']}; conflicts {len(f['conflicts'])}"
        )
        for c, ops in f["applied"].items():
            out.append(f"  {c}: " + ", ".join(f"{op} {n}" for op, n in ops.items()))
    if job.report_paths:
        out.append(f"run {job.doc['run_id']}: {job.doc['state']}; report {job.report_paths['md']}")
    return out


def cutover_back(settings, *, assume_frozen: bool, sample, workers: int, echo, confirm) -> int:
    """`etl cutover --to arangodb`: the exit status (0 go, 1 no-go; errors raise)."""
    from etl.fallback.cutover_back import CutoverBack
    from etl.signals import GracefulStop

    def frozen() -> bool:
        return assume_frozen or confirm(
            "Are writes to PostgreSQL frozen (application stopped or read-only)?"
        )

    stopper = GracefulStop()
    cut = CutoverBack(settings, confirm_freeze=frozen, sample=sample, workers=workers, say=echo)
    cut.job.should_stop = stopper.requested
    try:
        with stopper:
            doc = cut.run()
    finally:
        for line in echo_lines(cut.job):
            echo(line)
    echo(
        f"cutover to arangodb: {doc['verdict'].upper()}; writes to PostgreSQL frozen for "
        f"{doc.get('freeze_seconds')} s; reconcile: {doc.get('reconcile_result')}; conflicts "
        f"{len(cut.job.conflicts)}"
    )
    return 0 if cut.go else 1
