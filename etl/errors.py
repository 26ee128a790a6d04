"""Errors an operator can cause or meet, and which of them are worth retrying.

    EtlError                 one-line message for the operator, exit status 2
     +-- PermanentError      retrying cannot help (auth, unknown collection, schema not applied)
     +-- TransientError      retrying may help (connection lost, timeout, HTTP 503)
     +-- ConfigError         a settings or mapping file is wrong; names file, key, problem

The CLI catches EtlError in one place, prints `error: <message>` on stderr and exits with
`exit_code`; a traceback only with --debug. `is_transient()` is the one rule tenacity uses.
"""

from __future__ import annotations


class EtlError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint else msg


class PermanentError(EtlError):
    pass


class TransientError(EtlError):
    pass


class ConfigError(PermanentError):
    pass


class Interrupted(EtlError):
    """Ctrl-C honoured at a batch boundary; the run can be resumed."""

    exit_code = 130


# SQLSTATE classes worth a retry: connection exceptions (08), serialization failure and
# deadlock (40001, 40P01), operator intervention such as admin shutdown (57P01..57P03),
# and "insufficient resources" (53) which may clear.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40001", "40P01", "57P01", "57P02", "57P03", "53")


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    return sqlstate is not None and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same operation may succeed. Used by every tenacity policy."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, EtlError):
        return False
    import psycopg

    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        return True  # connection refused/lost before the server said anything
    if isinstance(exc, psycopg.Error):
        return is_transient_sqlstate(getattr(exc, "sqlstate", None))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(
            exc,
            (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.RetryError,
                requests.exceptions.ChunkedEncodingError,
            ),
        ):  # a response cut mid-body
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from arango.exceptions import ArangoServerError

        if isinstance(exc, ArangoServerError):
            return exc.http_code in (408, 429, 500, 502, 503, 504) or exc.error_code in (
                1600,
                21003,
                21004,
                503,
            )
    except ImportError:  # pragma: no cover
        pass
    return False
