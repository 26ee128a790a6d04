"""`etl reconcile`: compare the source with the target, key by key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from etl.cli.options import (
    AllowTruncated,
    AsJson,
    Dsn,
    Mapping,
    ReportsDir,
    Source,
    check_selection,
    settings_from,
)
from etl.cli.output import end_run, header, show_run
from etl.errors import Interrupted

if TYPE_CHECKING:
    from etl.progress import Progress

# the options of these commands alone (the shared ones are in etl/cli/options.py)
Collections = Annotated[
    list[str] | None,
    typer.Option("--collection", "-c", help="Collection to check (repeatable)."),
]
All = Annotated[bool, typer.Option("--all", help="Every collection, in dependency order.")]
Sample = Annotated[
    float | None,
    typer.Option(
        "--sample",
        min=0.01,
        max=100,
        help="Check only a random P% of the keys (a fast pre-check).",
    ),
]
Seed = Annotated[
    int | None,
    typer.Option(
        "--seed", help="Seed of the --sample choice (default random; the report names it)."
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        help="Processes that digest key ranges of a collection in parallel (ArangoDB source).",
    ),
]
AllowMissing = Annotated[
    bool,
    typer.Option(
        "--allow-missing",
        help="Go on when the source lacks mapped collections (reported as not checked).",
    ),
]
WhileRunning = Annotated[
    bool,
    typer.Option(
        "--while-running",
        help="Compare even while an etl migrate of the same collections runs.",
    ),
]


def reconcile_cmd(
    collection: Collections = None,
    all_: All = False,
    source: Source = "arangodb",
    sample: Sample = None,
    seed: Seed = None,
    workers: Workers = 1,
    dsn: Dsn = None,
    mapping: Mapping = None,
    reports_dir: ReportsDir = None,
    allow_missing: AllowMissing = False,
    while_running: WhileRunning = False,
    allow_truncated: AllowTruncated = False,
    as_json: AsJson = False,
):
    """Compare source and target: counts, content digests per key range, every missing, extra and
    differing key with the fields that differ. Exit 0 = everything matches, 1 = differences.

    Example: etl reconcile --all --source dump:./atspro-dump --sample 10
    """
    from etl.progress import Progress
    from etl.reconcile import Reconciliation, render_table

    check_selection(all_, collection)
    settings = settings_from(dsn, mapping, reports_dir, allow_truncated)
    header(settings, source)
    reports_existed = Path(settings.migrate.reports_dir).exists()
    progress = Progress()
    rec = Reconciliation(
        settings,
        collections=collection,
        all_=all_,
        source=source,
        sample=sample,
        seed=seed,
        on_progress=_progress_bars(progress),
        workers=workers,
        allow_missing=allow_missing,
        while_running=while_running,
    )
    exit_code = 0
    try:
        summary = rec.run()
        exit_code = 1 if summary.has_differences else 0
    except KeyboardInterrupt:
        raise Interrupted("reconcile stopped; it changed nothing (run it again)") from None
    finally:
        progress.close()
        final = rec.summary
        if final is not None and (final.collections or final.state == "finished"):
            doc = final.asdict()
            show_run(rec, doc, render_table, f"run {final.run_id}: {doc['verdict']}", as_json)
    end_run(settings, reports_existed, rec, exit_code)


def _progress_bars(progress: Progress) -> Any:
    """One bar per collection: a new collection, or a second pass over the same one, starts a
    new bar counting from 0."""
    current: dict[str, Any] = {"name": None, "done": 0}

    def on_progress(name: str, done: int, total: int | None) -> None:
        if name != current["name"] or done < current["done"]:
            progress.start(name, total, first=0)
        current["name"], current["done"] = name, done
        progress.update(name, done, total)

    return on_progress
