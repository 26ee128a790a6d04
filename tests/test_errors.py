"""The one retry rule: which failures are worth another attempt."""

import logging

import psycopg
import pytest
import requests

from etl.errors import ConfigError, PermanentError, TransientError, is_transient


def test_errors_transient_classification():
    assert is_transient(TransientError("x"))
    assert not is_transient(PermanentError("x")) and not is_transient(ConfigError("x"))
    assert is_transient(requests.exceptions.ChunkedEncodingError("cut"))
    assert is_transient(requests.ConnectionError("reset"))
    assert is_transient(ConnectionResetError())
    assert is_transient(psycopg.OperationalError("server closed the connection"))
    assert not is_transient(ValueError("bug"))


def test_errors_transient_arango_statuses():
    from arango.exceptions import AQLQueryExecuteError
    from arango.request import Request
    from arango.response import Response

    def err(status, num):
        resp = Response("POST", "http://x/_api/cursor", {}, status, "", f'{{"errorNum": {num}}}')
        resp.body = {"error": True, "errorNum": num, "errorMessage": "m", "code": status}
        resp.error_code = num
        return AQLQueryExecuteError(resp, Request("post", "/_api/cursor"))

    assert is_transient(err(503, 21003))
    assert is_transient(err(404, 1600))  # a lost cursor: re-run the page
    assert not is_transient(err(404, 1203))  # unknown collection
    assert not is_transient(err(401, 11))


def test_a_writer_fails_at_once_on_a_server_it_never_reached(caplog):
    # the wait for a restarting server (etl/writer.py) is only for a server that answered
    # before: a wrong DSN is said at once, with no waiting
    from etl.writer import Writer

    caplog.set_level(logging.WARNING, "etl.pipeline")
    w = Writer("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", 1)
    with pytest.raises(TransientError):
        _ = w.conn
    assert not [r for r in caplog.records if "waiting for PostgreSQL" in r.message]


def test_a_writer_waits_for_a_lost_server_once_per_outage_not_once_per_retry(
    schema_db, caplog, monkeypatch
):
    # the wait is bounded per outage: the retries of one transaction that all fall into it do
    # not each wait again (6 retries would otherwise wait 6 times reconnect_seconds)
    from etl import writer as W

    monkeypatch.setattr(W, "RECONNECT_POLL", 0.05)
    caplog.set_level(logging.WARNING, "etl.pipeline")
    w = W.Writer(schema_db, 1, reconnect_seconds=0.5)
    _ = w.conn  # it answered once
    w.close()
    w.dsn = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"  # now it is gone
    waits = lambda: len([r for r in caplog.records if "waiting for PostgreSQL" in r.message])  # noqa: E731
    with pytest.raises(TransientError):
        _ = w.conn
    first = waits()
    assert first >= 2
    with pytest.raises(TransientError):
        _ = w.conn
    assert waits() == first  # the same outage: no second wait
    w.dsn = schema_db  # back: a later outage waits again
    _ = w.conn
    w.close()
    w.dsn = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    with pytest.raises(TransientError):
        _ = w.conn
    assert waits() > first
