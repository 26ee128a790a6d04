"""The reader thread runs at most one batch ahead, and its errors reach the consumer."""

import threading

import pytest

from etl.sources.prefetch import prefetch


def test_prefetch_reads_at_most_depth_ahead():
    produced = []
    gate = threading.Event()

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    it = prefetch(source(), depth=1)
    first = next(it)
    assert first == 0
    for _ in range(50):  # give the reader every chance to run ahead
        gate.wait(0.01)
    # the consumer holds item 0; exactly one more may have been read
    assert produced == [0, 1]
    assert list(it) == list(range(1, 10))


def test_prefetch_reraises_the_source_error():
    def source():
        yield 1
        raise ConnectionResetError("lost")

    it = prefetch(source())
    assert next(it) == 1
    with pytest.raises(ConnectionResetError):
        next(it)
