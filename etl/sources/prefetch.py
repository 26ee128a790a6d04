"""prefetch(): read a source one batch ahead in a thread, so its latency overlaps the consumer's work."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


def prefetch(iterator: Iterator, depth: int = 1) -> Iterator:
    """Run `iterator` in a thread, at most `depth` items ahead; errors re-raised in the consumer.
    The reader takes a slot BEFORE it reads the next item, so no more than `depth` items exist
    beyond the one the consumer holds: memory is bounded by batches, whatever the source."""
    q: queue.Queue = queue.Queue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()

    def worker():
        try:
            it = iter(iterator)
            while True:
                while not slots.acquire(timeout=0.2):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(it)
                except StopIteration:
                    q.put(("done", None))
                    return
                q.put(("item", item))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(("error", exc))

    t = threading.Thread(target=worker, name="etl-reader", daemon=True)
    t.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "item":
                slots.release()
                yield item
            elif kind == "done":
                return
            else:
                raise item
    finally:
        stop.set()
