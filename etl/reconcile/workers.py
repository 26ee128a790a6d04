"""Reading a collection for reconcile: whole, in this process, or in key ranges by forked worker
processes (workers > 1 and a source that can split its key order, i.e. ArangoDB).

A worker gets everything it reads as one RangeWorker, handed to ProcessPoolExecutor's
initializer at the fork (initargs are inherited, not pickled, with the 'fork' start method; the
parent's memory is shared copy-on-write). A task is just the index of a key range."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from etl.errors import ConfigError, EtlError, PermanentError, TransientError
from etl.settings import Settings
from etl.sources import open_source
from etl.sources.prefetch import prefetch

log = logging.getLogger("etl.reconcile")

RANGE_MIN_DOCS = 250  # a collection is split into key ranges of at least this many documents

T = TypeVar("T")
KeyRange = tuple[str | None, str | None]  # (after, until]; None: the start or the end


class CollectionReader:
    """The source's documents of one collection, with progress reported to on_progress."""

    def __init__(
        self,
        source,
        *,
        source_spec: str,
        settings: Settings,
        batch_size: int,
        workers: int,
        on_progress: Callable[[str, int, int | None], None],
    ):
        self.source = source
        self.source_spec = source_spec  # a worker opens its own source from these two
        self.settings = settings
        self.batch_size = batch_size
        self.workers = workers
        self.on_progress = on_progress
        self._said_no_ranges = False

    def docs(self, name: str) -> Iterator[Any]:
        """Every document of the collection, read in this process."""
        n = 0
        total = self.source.collection(name).count
        self.on_progress(name, 0, total)  # the start: docs/s counts from here
        for batch in prefetch(iter(self.source.batches(name, self.batch_size))):
            yield from batch.docs
            n += len(batch.docs)
            self.on_progress(name, n, total)

    def ranges(self, name: str) -> list[KeyRange]:
        """(after, until] key ranges of a collection: one unless workers > 1, the source can
        split (ArangoDB) and the collection is large enough; up to 2 per worker, each of at
        least RANGE_MIN_DOCS documents."""
        whole: list[KeyRange] = [(None, None)]
        if self.workers <= 1:
            return whole
        parts = min(self.workers * 2, self.source.collection(name).count // RANGE_MIN_DOCS)
        if parts <= 1:
            return whole
        points = self.source.split_points(name, parts)
        if not points and not self._said_no_ranges:
            log.info(
                "--workers %d: the source (%s) cannot be read in key ranges; each collection is"
                " reconciled in one process",
                self.workers,
                self.source.description,
            )
            self._said_no_ranges = True
        bounds = [None, *points, None]
        return list(zip(bounds, bounds[1:]))

    def over_ranges(self, name: str, work: Callable[[Iterator[Any]], T]) -> list[T]:
        """work(documents) for every key range of the collection, in key order. Several ranges
        run in forked worker processes (at most self.workers at a time); one runs here.

        `work` runs in the children: it must only read what it holds (filled before this call)
        and return a picklable result."""
        ranges = self.ranges(name)
        if len(ranges) == 1:
            return [work(self.docs(name))]
        total = self.source.collection(name).count
        log.info(
            "%s: read in %d key ranges by %d worker processes",
            name,
            len(ranges),
            min(self.workers, len(ranges)),
        )
        ctx = multiprocessing.get_context("fork")
        progress = ctx.RawArray("q", len(ranges))  # documents read per range (one writer each)
        worker = RangeWorker(
            source_spec=self.source_spec,
            settings=self.settings,
            batch_size=self.batch_size,
            name=name,
            ranges=ranges,
            work=work,
            progress=progress,
        )
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(ranges)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(worker,),
        )
        ok = False
        try:
            futures = [pool.submit(_run_range, i) for i in range(len(ranges))]
            pending, reported = set(futures), 0
            self.on_progress(name, 0, total)  # the start: docs/s counts from here
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if isinstance(exc, BrokenProcessPool):
                        raise EtlError(
                            f"reconcile of {name!r}: a worker process ended unexpectedly"
                            f" (killed, or out of memory?)"
                        ) from None
                    if exc is not None:
                        raise exc
                n = sum(progress)
                if n != reported:
                    self.on_progress(name, n, total)
                    reported = n
            ok = True
            return [f.result() for f in futures]
        finally:
            if not ok:  # a failure or Ctrl-C: the other ranges are not wanted
                _kill_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RangeWorker:
    """Everything a worker process reads: how to open its own source, the collection, its key
    ranges, the work to do on a range's documents, and the shared progress counters. A worker
    never touches the parent's PostgreSQL connection or source."""

    source_spec: str
    settings: Settings
    batch_size: int
    name: str
    ranges: list[KeyRange]
    work: Callable[[Iterator[Any]], Any]
    progress: Any  # multiprocessing RawArray of int64, documents read per range

    def run(self, i: int) -> Any:
        """Pass `work` over key range i, read through a source of its own."""
        after, until = self.ranges[i]
        source = open_source(self.source_spec, self.settings)
        try:

            def docs() -> Iterator[Any]:
                for batch in prefetch(
                    iter(source.batches(self.name, self.batch_size, after=after, until=until))
                ):
                    yield from batch.docs
                    self.progress[i] += len(batch.docs)

            return self.work(docs())
        finally:
            source.close()


# In a worker process only: the RangeWorker its initializer received. Tasks are pickled by name,
# so _run_range finds the worker's state here; the parent never sets it.
_worker: RangeWorker | None = None


def _init_worker(worker: RangeWorker) -> None:
    global _worker
    _worker = worker
    # Ctrl-C goes to the whole process group: the parent handles it and kills the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_range(i: int) -> Any:
    """The task of a worker process: its RangeWorker's run(i); an exception that cannot cross
    the process boundary is sent as the nearest class with its one-line text."""
    assert _worker is not None, "a reconcile worker is started by CollectionReader.over_ranges"
    try:
        return _worker.run(i)
    except BaseException as exc:
        try:  # the exception crosses the process boundary pickled (concurrent.futures)
            pickle.loads(pickle.dumps(exc))
        except Exception:  # what cannot is sent as the nearest class and its one-line text
            if isinstance(exc, EtlError):
                cls = next(
                    c
                    for c in (ConfigError, PermanentError, TransientError, EtlError)
                    if isinstance(exc, c)
                )
                raise cls(str(exc)) from None
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's processes (Python 3.14 has pool.kill_workers(); before, only _processes)."""
    if hasattr(pool, "kill_workers"):
        pool.kill_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.kill()
