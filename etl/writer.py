"""The one way etl writes to the target: a working connection (a new one after it was lost),
and a transaction retried as a whole on transient errors (tenacity, backoff with jitter). The
migrate pipeline, parallel workers and the sync follower all commit through a Writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from etl import pg
from etl.errors import TransientError, is_transient

log = logging.getLogger("etl.pipeline")

# a server that answered before and now refuses connections is restarting: how long to wait
RECONNECT_SECONDS = 60.0
RECONNECT_POLL = 1.0


def retry_policy(attempts: int, wait: Any = None) -> Retrying:
    """Transient errors (connection lost, server restarting, serialization) are retried with
    backoff and jitter; anything else goes up at once."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait or wait_random_exponential(multiplier=0.5, max=20),
        reraise=True,
        before_sleep=_log_retry,
    )


def _log_retry(retry_state: RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
    log.warning(
        "transient error, attempt %d failed, retrying in %.1fs: %s",
        retry_state.attempt_number,
        retry_state.next_action.sleep if retry_state.next_action else 0,
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )


class Writer:
    """One working connection to the target and the retried transaction around a write."""

    def __init__(
        self,
        dsn: str,
        attempts: int,
        retry_wait: Any = None,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        self.dsn = dsn
        self.attempts = attempts
        self.retry_wait = retry_wait
        self.reconnect_seconds = reconnect_seconds
        self._conn: psycopg.Connection | None = None
        self._connected_once = False
        self._lost_since: float | None = None  # when reconnecting began failing (one outage)

    @property
    def conn(self) -> psycopg.Connection:
        """The connection writes commit on; a new one when the last was lost."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            # synchronous_commit stays on: with it off, a server crash loses the last commits
            # while this process, which saw them succeed, goes on after them (a checkpoint ahead
            # of its data: the soak's PostgreSQL restart -m immediate trial lost 2 batches).
            self._conn = self._connect()
            self._connected_once = True
        return self._conn

    def _connect(self) -> psycopg.Connection:
        """A first connection fails at once (a wrong DSN is said at once). Once this server
        answered, one that refuses connections is restarting or in crash recovery (tens of
        seconds under load): wait for it up to `reconnect_seconds` per outage, however many
        retries of the transaction fall into it."""
        now = time.monotonic()
        if self._connected_once and self._lost_since is None:
            self._lost_since = now
        deadline = now if self._lost_since is None else self._lost_since + self.reconnect_seconds
        while True:
            try:
                conn = pg.connect(self.dsn)
                self._lost_since = None
                return conn
            except TransientError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("waiting for PostgreSQL to accept connections again: %s", exc)
                time.sleep(RECONNECT_POLL)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def retrying(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """fn(conn), again on a new connection after a transient error."""
        for attempt in retry_policy(self.attempts, self.retry_wait):
            with attempt:
                # no probe statement before fn: on this non-autocommit connection it would open
                # a transaction, and fn's transaction() would be a savepoint never committed
                return fn(self.conn)

    def in_transaction(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """fn(conn) inside one transaction, retried as a whole."""

        def attempt(c: psycopg.Connection) -> Any:
            with c.transaction():
                return fn(c)

        return self.retrying(attempt)
