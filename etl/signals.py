"""A clean stop on Ctrl-C or SIGTERM, shared by the CLI and the worker processes."""

from __future__ import annotations

import signal
import sys


class GracefulStop:
    """First Ctrl-C: finish the batch in flight, commit, stop (exit 130). Second: stop now."""

    def __init__(self):
        self._stop = False

    def requested(self) -> bool:
        return self._stop

    def _handler(self, signum, frame):
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True
        print(
            "\netl: stopping after the current batch (Ctrl-C again to abort now)", file=sys.stderr
        )

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handler)
        self._old_term = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
        signal.signal(signal.SIGTERM, self._old_term)
