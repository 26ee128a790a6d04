"""`etl migrate --max-rejects N|N%`: when a run's rejects make its exit status 1.

Only this run's NEW rejects count: documents (collection, key, stage) first rejected by this
run. A document rejected again keeps the time it was first rejected (state.write_rejects), so a
rerun that rejects the same bad documents again is not news; a document that starts failing is. N% is of the documents this run read. `etl purge-rejects` forgets a
run's rejects, so they count as new again afterwards (docs/operations.md)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import typer

from etl import pg

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")

# this run's kept rejects (not the 'unmapped' rows), and those first rejected by this run
_NEW_REJECTS_SQL = """
select count(*) filter (where r.first_at >= (select started_at from etl_runs where run_id = %s)),
       count(*)
  from (select collection, key, stage, min(created_at) as first_at from etl_rejects
         where run_id = %s and stage <> 'unmapped' group by collection, key, stage) r
"""


@dataclass(frozen=True)
class RejectLimit:
    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> RejectLimit:
        m = _LIMIT.match(text or "")
        if m is None or (not m.group(2) and "." in m.group(1)):
            raise typer.BadParameter(
                f"{text!r}: expected a count (e.g. 10) or a percentage (e.g. 0.5%)",
                param_hint="--max-rejects",
            )
        value, percent = float(m.group(1)), bool(m.group(2))
        if percent and value > 100:
            raise typer.BadParameter(f"{text!r}: at most 100%", param_hint="--max-rejects")
        return cls(value, percent)

    def allowed(self, read: int) -> int:
        """The most new rejects a run that read `read` documents may have and exit 0."""
        return math.floor(read * self.value / 100) if self.percent else int(self.value)

    def label(self, read: int) -> str:
        if self.percent:
            return f"limit {self.value:g}% of {read} read = {self.allowed(read)}"
        return f"limit {self.allowed(read)}"

    def judge(self, settings, summary) -> tuple[bool, str]:
        """(over the limit?, the phrase for the run's last line)."""
        rejected = sum(c.counts.rejected for c in summary.collections)
        read = sum(c.counts.read for c in summary.collections)
        if summary.dry_run:  # nothing was kept to compare with: every reject counts
            new = rejected
        else:
            new, rejected = count_new_rejects(
                pg.resolve_dsn(settings, announce=False), summary.run_id
            )
        over = new > self.allowed(read)
        phrase = f"{new} new rejects ({self.label(read)})"
        if rejected != new:
            phrase += f", {rejected - new} rejected by earlier runs too"
        if over:
            phrase = "TOO MANY REJECTS: " + phrase
        return over, phrase


def count_new_rejects(dsn: str, run_id: str) -> tuple[int, int]:
    """(this run's rejects no other run kept, all this run's rejects) from etl_rejects."""
    with pg.connect(dsn) as conn:
        new, total = pg.one(conn, _NEW_REJECTS_SQL, (run_id, run_id))
    return int(new), int(total)
