"""The follower's lag: from a change's commit in ArangoDB to its row committed in PostgreSQL.

ArangoDB's `_rev` is a hybrid logical clock: milliseconds since the epoch in its high 44 bits,
written in ArangoDB's own base64 alphabet. A change whose document carries no readable `_rev`
(a removal, a server whose revisions are not HLC) counts from the moment the follower read it.
Clocks: the ArangoDB host's and this host's; skew between them shows up in the figures."""

from __future__ import annotations

import time
from collections import deque

_ALPHABET = "-_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
WINDOW = 10_000  # the latest changes the percentiles are over
PLAUSIBLE = 86_400.0  # a revision time further than a day from now is not a clock reading


def rev_time(rev: object) -> float | None:
    """Unix time of an HLC `_rev` ("_jB1x2Ka---"), or None when it is not one."""
    if not isinstance(rev, str) or not 8 <= len(rev) <= 12:
        return None
    v = 0
    for ch in rev:
        i = _INDEX.get(ch)
        if i is None:
            return None
        v = v * 64 + i
    t = (v >> 20) / 1000.0
    return t if abs(time.time() - t) < PLAUSIBLE else None


def commit_time(doc: dict | None, read_at: float) -> float:
    t = rev_time(doc.get("_rev")) if isinstance(doc, dict) else None
    return min(t, read_at) if t is not None else read_at


class LagWindow:
    """The lags (seconds) of the latest WINDOW changes, and their percentiles."""

    def __init__(self) -> None:
        self.lags: deque[float] = deque(maxlen=WINDOW)

    def add(self, lags: list[float]) -> None:
        self.lags.extend(lags)

    def percentiles(self) -> dict[str, float] | None:
        if not self.lags:
            return None
        s = sorted(self.lags)

        def at(q: float) -> float:
            return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 1)

        return {"changes": len(s), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}
