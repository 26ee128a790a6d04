"""Progress for the terminal: a tqdm bar (documents, docs/s, ETA from the source count) when
stderr is a terminal, otherwise a log line at most every LOG_EVERY seconds. Only the CLI uses
this; library code takes callbacks."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

LOG_EVERY = 10.0
log = logging.getLogger("etl.progress")


class Progress:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar: tqdm | None = None
        self.collection = None
        self.total = None
        self.last_log = 0.0
        self.started = time.monotonic()
        self.first = 0

    def start(self, collection: str, total: int | None, first: int | None = None) -> None:
        """A new bar. `first`: the count the rate starts from (None: the first update's, which
        on --resume holds the documents done before this process)."""
        self.close()
        self.collection, self.total = collection, total
        self.started, self.last_log, self.first = time.monotonic(), 0.0, first
        if self.tty:
            self.bar = tqdm(
                total=total,
                desc=collection,
                unit="doc",
                unit_scale=True,
                file=self.stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def update(self, collection: str, done: int, total: int | None) -> None:
        if self.first is None:
            self.first = done  # documents already done before this process (resume)
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last_log >= LOG_EVERY or (total is not None and done >= total):
            self.last_log = now
            elapsed = max(now - self.started, 1e-9)
            rate = (done - (self.first or 0)) / elapsed
            eta = (
                f", ETA {((total - done) / rate):.0f}s"
                if total and rate > 0 and done < total
                else ""
            )
            log.info(
                "%s: %d/%s documents, %.0f docs/s%s",
                collection,
                done,
                total if total is not None else "?",
                rate,
                eta,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
