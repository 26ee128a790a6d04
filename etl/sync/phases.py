"""Where a cutover's freeze goes: seconds per phase since the operator's confirmation, so that
the report shows what is fixed cost and what grows with the data (docs/sync.md#measured)."""

from __future__ import annotations

import time


class Phases:
    """A stopwatch with named laps; a phase met again (a drain's second round) adds up."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """The time since the previous lap goes to `name`."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    def total(self) -> float:
        return round(self.last - self.started, 3)

    def report(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}
