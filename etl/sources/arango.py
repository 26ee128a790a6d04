"""The live ArangoDB source: python-arango, keyset pagination on `_key` (a fresh AQL query per
batch; keys are compared only by the server), cursors opened with allowRetry, tenacity the one
retry layer.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlsplit

import requests
from arango import ArangoClient
from arango.exceptions import ArangoClientError, ArangoServerError, JWTAuthError, JWTExpiredError
from arango.http import DefaultHTTPClient
from arango.response import Response
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from etl import jsonutil
from etl.errors import EtlError, PermanentError, TransientError, is_transient
from etl.settings import ArangoSettings
from etl.sources.base import Batch, CollectionInfo

log = logging.getLogger("etl.sources.arango")

KEYSET_QUERY = "FOR d IN @@c FILTER d._key > @last SORT d._key LIMIT @n RETURN d"
COUNT_AFTER_QUERY = "FOR d IN @@c FILTER d._key > @last COLLECT WITH COUNT INTO n RETURN n"
# Key ranges (after, until]: both bounds are compared by the server, in its own collation.
RANGE_QUERY = (
    "FOR d IN @@c FILTER d._key > @last AND d._key <= @until SORT d._key LIMIT @n RETURN d"
)
COUNT_RANGE_QUERY = (
    "FOR d IN @@c FILTER d._key > @last AND d._key <= @until COLLECT WITH COUNT INTO n RETURN n"
)
# The key at a position of the primary index: the boundaries of key ranges for parallel workers.
KEY_AT_QUERY = "FOR d IN @@c SORT d._key LIMIT @offset, 1 RETURN d._key"

T = TypeVar("T")


class _HTTPClient(DefaultHTTPClient):
    """DefaultHTTPClient with TLS settings, byte counting and the last transport error kept.

    retry_attempts=0: urllib3 retries nothing on status; python-arango's own host loop still
    resends a request whose connection failed (3 tries), which is what makes allowRetry matter.
    """

    def __init__(self, request_timeout: float, verify: bool | str, pool_maxsize: int = 4):
        super().__init__(
            request_timeout=request_timeout,
            retry_attempts=0,
            backoff_factor=0,
            pool_connections=1,
            pool_maxsize=pool_maxsize,
        )
        self.verify = verify
        self.bytes_read = 0
        self.last_transport_error: BaseException | None = None

    def create_session(self, host: str) -> requests.Session:
        session = super().create_session(host)
        session.verify = self.verify
        return session

    def send_request(
        self, session, method, url, headers=None, params=None, data=None, auth=None
    ) -> Response:
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override session.verify
            response = session.request(
                method=method,
                url=url,
                params=params,
                data=data,
                headers=headers,
                auth=auth,
                timeout=self.request_timeout,
                verify=self.verify,
            )
            content = response.content
        except requests.exceptions.SSLError as exc:
            # Not a ConnectionError for python-arango's resend loop: a certificate does not heal.
            raise _TLSFailure(exc) from exc
        except requests.ConnectionError as exc:
            self.last_transport_error = exc
            raise
        self.bytes_read += len(content)
        return Response(
            method=method,
            url=response.url,
            headers=response.headers,
            status_code=response.status_code,
            status_text=response.reason,
            raw_body=content.decode("utf-8", errors="replace"),
        )


class _TLSFailure(Exception):
    """TLS handshake or certificate failure (raised past python-arango's host loop)."""


def _deserialize(text: str) -> Any:
    # python-arango keeps the raw string when this raises ValueError/TypeError (e.g. a proxy's HTML).
    return jsonutil.loads(text)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(
        exc,
        (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            ConnectionAbortedError,
        ),
    ):
        return True  # a response cut off mid-body; python-arango does not catch these
    return is_transient(exc)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


CURSOR_BATCH_MAX = 1000
CURSOR_BATCH_MIN = 50  # with migrate.batch_bytes: the fewest documents per HTTP response


class ArangoSource:
    """Source protocol over a live ArangoDB (see etl/sources/base.py)."""

    def __init__(
        self,
        settings: ArangoSettings,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        cursor_batch_size: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.cursor_batch_size = cursor_batch_size
        self._sleep = sleep
        parts = urlsplit(settings.url)
        self.hostport = (
            parts.hostname + (f":{parts.port}" if parts.port else "")
            if parts.hostname
            else parts.netloc
        )
        self.safe_url = f"{parts.scheme}://{self.hostport}{parts.path}"
        self.description = (
            f"arangodb {self.safe_url} database {settings.database} "
            f"as {settings.username} ({settings.auth} auth)"
        )
        verify: bool | str = settings.ca_file if settings.ca_file else settings.verify_tls
        if verify is False and parts.scheme == "https":
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning("ArangoDB %s: TLS certificate verification is off", self.hostport)
        self._http = _HTTPClient(settings.request_timeout, verify)
        self._client = ArangoClient(
            hosts=f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}",
            http_client=self._http,
            deserializer=_deserialize,
        )
        self._db: Any = None
        self._names: list[str] | None = None
        self._retry("connect", self._connect)

    # connection ------------------------------------------------------------
    def _connect(self) -> None:
        s = self.settings
        try:
            db = self._client.db(
                s.database,
                username=s.username,
                password=s.password.get_secret_value(),
                auth_method=s.auth,
                verify=False,
            )
        except JWTAuthError as exc:
            if _is_transient(exc):
                raise  # retried by _retry
            raise self._server_error(exc, "authenticate") from None
        except JWTExpiredError as exc:  # clock skew between client and server
            raise PermanentError(
                f"ArangoDB at {self.safe_url}: the JWT token it issued is already expired "
                f"(check the clocks): {exc}"
            ) from None
        try:
            # GET /_api/collection: checks credentials and the database. python-arango types
            # every result as Result[T] (T, or a job of an async/batch database); ours is T.
            cols = cast(list[dict[str, Any]], db.collections())
        except ArangoServerError as exc:
            if _is_transient(exc):
                raise  # retried by _retry
            raise self._server_error(exc, "connect") from None
        self._db = db
        self._names = sorted(c["name"] for c in cols if not c.get("system"))

    def _reconnect_after_401(self) -> None:
        log.info("ArangoDB %s: JWT token rejected or expired; re-authenticating", self.hostport)
        self._connect()

    # retry machinery -------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        import random

        n = state.attempt_number
        base = min(self.backoff_max, self.backoff_initial * (2 ** (n - 1)))
        delay = base / 2 + random.uniform(0, base / 2)
        exc = state.outcome.exception() if state.outcome else None
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
        if headers is not None:
            ra = headers.get("retry-after")
            try:
                if ra is not None:
                    delay = max(delay, min(float(ra), self.backoff_max))
            except ValueError:
                pass
        return delay

    def _before_sleep(self, what: str) -> Callable[[RetryCallState], None]:
        def log_it(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "ArangoDB %s: %s failed (attempt %d of %d): %s; retrying in %.2fs",
                self.hostport,
                what,
                state.attempt_number,
                self.settings.retry_attempts,
                self._describe(exc),
                state.next_action.sleep if state.next_action else 0.0,
            )

        return log_it

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        attempts = self.settings.retry_attempts
        reauth = {"done": False}

        def attempt() -> T:
            try:
                return fn()
            except ArangoServerError as exc:
                if (
                    exc.http_code == 401
                    and exc.error_code == 11
                    and self.settings.auth == "jwt"
                    and self._db is not None
                    and not reauth["done"]
                ):
                    reauth["done"] = True
                    self._reconnect_after_401()
                    return fn()
                raise

        try:
            for att in Retrying(
                stop=stop_after_attempt(attempts),
                wait=self._wait,
                retry=retry_if_exception(_is_transient),
                before_sleep=self._before_sleep(what),
                sleep=self._sleep,
                reraise=True,
            ):
                with att:
                    return attempt()
        except EtlError:
            raise
        except _TLSFailure as exc:
            m = re.search(r"\[SSL[^\]]*\] ([^(']+)", str(exc.__cause__ or exc))
            reason = m.group(1).strip() if m else _one_line(str(exc.__cause__ or exc), 160)
            raise PermanentError(
                f"ArangoDB at {self.safe_url}: TLS failed: {reason} (check ca_file or "
                f"verify_tls in the [arango] settings)"
            ) from None
        except ArangoServerError as exc:
            if _is_transient(exc):
                cls = PermanentError if what == "connect" else TransientError
                raise cls(
                    f"ArangoDB at {self.safe_url}: {what} failed after {attempts} attempts: "
                    f"{self._describe(exc)}"
                ) from None
            raise self._server_error(exc, what) from None
        except Exception as exc:
            if _is_transient(exc):
                cls = PermanentError if what == "connect" else TransientError
                raise cls(
                    f"cannot reach ArangoDB at {self.hostport}: {what} failed after {attempts} attempts: "
                    f"{self._describe(exc)}"
                ) from None
            if isinstance(
                exc, (ArangoClientError, KeyError)
            ):  # e.g. a 2xx body without result/hasMore
                raise PermanentError(
                    f"ArangoDB at {self.safe_url}: {what} failed: unexpected answer: "
                    f"{self._describe(exc)}"
                ) from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe(self, exc: BaseException | None) -> str:
        if exc is None:
            return "unknown error"
        if isinstance(exc, ArangoServerError):
            msg = exc.error_message if isinstance(exc.error_message, str) else ""
            if not msg and exc.http_code == 429:
                msg = "too many requests (from a proxy?)"
            return _one_line(f"HTTP {exc.http_code} errorNum {exc.error_code}: {msg}")
        if isinstance(exc, ConnectionAbortedError):
            cause = self._http.last_transport_error
            self._http.last_transport_error = None
            reason = _errno_text(cause) if cause is not None else None
            return reason or "connection failed (no answer, or 503 service unavailable)"
        if isinstance(exc, requests.Timeout):
            return f"no answer within {self.settings.request_timeout:g}s (timeout)"
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return "connection dropped in the middle of a response"
        if isinstance(exc, requests.exceptions.RetryError):
            m = re.search(r"too many (\d+) error responses", str(exc))
            return f"HTTP {m.group(1)} error response" if m else _one_line(str(exc))
        if isinstance(exc, requests.ConnectionError):
            return _errno_text(exc) or _one_line(str(exc))
        return _one_line(f"{type(exc).__name__}: {exc}")

    def _server_error(self, exc: ArangoServerError, what: str) -> EtlError:
        err = self._server_error_for(exc, what)
        err.arango_error_num = exc.error_code  # type: ignore[attr-defined]
        return err

    def _server_error_for(self, exc: ArangoServerError, what: str) -> EtlError:
        code, num = exc.http_code, exc.error_code
        where = f"ArangoDB at {self.safe_url}"
        # errorNum 11 comes with 401 (credentials, or no access to the database) and with
        # 403 (right password, a forbidden operation): the status tells them apart
        if code == 401 or (code != 403 and num in (11, 401)):
            return PermanentError(
                f"{where}: wrong username or password for user '{self.settings.username}' "
                f"(or no access to database '{self.settings.database}')"
            )
        if code == 403:
            return PermanentError(
                f"{where}: {what} is forbidden for user '{self.settings.username}' (HTTP 403; "
                f"check its access to database '{self.settings.database}' and its collections)"
            )
        if num == 1228:
            return PermanentError(f"{where}: database '{self.settings.database}' does not exist")
        if _is_transient(exc):
            return TransientError(f"{where}: {what} failed: {self._describe(exc)}")
        return PermanentError(f"{where}: {what} failed: {self._describe(exc)}")

    def _unknown_collection(self, name: str) -> PermanentError:
        try:
            names = self._retry("list collections", self._list_names)
        except EtlError:
            names = self._names or []
        listing = ", ".join(names) if names else "none"
        return PermanentError(
            f"ArangoDB at {self.safe_url}: collection '{name}' does not exist in database "
            f"'{self.settings.database}' (existing collections: {listing})"
        )

    def _list_names(self) -> list[str]:
        return sorted(c["name"] for c in self._db.collections() if not c.get("system"))

    # for other readers of this server (etl/sources/wal.py) ------------------
    def arango_db(self) -> Any:
        """The python-arango database, connected and authenticated."""
        return self._db

    def retry(self, what: str, fn: Callable[[], T]) -> T:
        """fn() with this source's retries; errors become one-line EtlErrors."""
        return self._retry(what, fn)

    # Source protocol -------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        cols = self._retry("list collections", lambda: self._db.collections())
        out = []
        for c in sorted(cols, key=lambda c: c["name"]):
            if c.get("system") or c["name"].startswith("_"):
                continue
            name = c["name"]
            count = self._with_collection_check(
                name, f"count '{name}'", functools.partial(self._count, name)
            )
            out.append(
                CollectionInfo(name, "edge" if c.get("type") == "edge" else "document", count)
            )
        return out

    def collection_names(self) -> list[str]:
        """The non-system collections' names, without counting them."""
        cols = self._retry("list collections", lambda: self._db.collections())
        return sorted(c["name"] for c in cols if not (c.get("system") or c["name"].startswith("_")))

    def system_collections(self) -> list[str]:
        """The names of the database's system collections (`_graphs`, ...)."""
        cols = self._retry("list collections", lambda: self._db.collections())
        return sorted(c["name"] for c in cols if c.get("system") or c["name"].startswith("_"))

    def indexes(self, name: str) -> list[dict]:
        """GET /_api/index?collection=name, as python-arango formats them (type, fields,
        unique, sparse, name, ...)."""
        return self._with_collection_check(
            name, f"read the indexes of '{name}'", lambda: self._db.collection(name).indexes()
        )

    def collection(self, name: str) -> CollectionInfo:
        def get() -> CollectionInfo:
            col = self._db.collection(name)
            props = col.properties()
            return CollectionInfo(
                name,
                "edge" if props.get("edge") or props.get("type") in (3, "edge") else "document",
                int(col.count()),
            )

        return self._with_collection_check(name, f"read collection '{name}'", get)

    def remaining(self, collection: str, after: str | None = None, until: str | None = None) -> int:
        if after is None and until is None:
            return self.collection(collection).count
        query, bind = (
            (COUNT_AFTER_QUERY, {"@c": collection, "last": after})
            if until is None
            else (COUNT_RANGE_QUERY, {"@c": collection, "last": after, "until": until})
        )

        def count() -> int:
            with self._db.aql.execute(query, bind_vars=bind) as cursor:
                return int(next(iter(cursor)))

        return self._with_collection_check(
            collection, f"count '{collection}' after key {after!r}", count
        )

    def split_points(self, collection: str, parts: int) -> list[str]:
        """Keys that cut the collection into `parts` ranges of about equal size, in the server's
        order (the primary index): range i is (points[i-1], points[i]]. Fewer when keys run out."""
        total = self.collection(collection).count
        points: list[str] = []
        for i in range(1, parts):
            offset = total * i // parts - 1
            if offset < 0:
                continue

            def key_at(offset: int = offset) -> list[str]:
                with self._db.aql.execute(
                    KEY_AT_QUERY, bind_vars={"@c": collection, "offset": offset}
                ) as cursor:
                    return list(cursor)

            got = self._with_collection_check(
                collection, f"find a range boundary of '{collection}'", key_at
            )
            if got and (not points or got[0] != points[-1]):
                points.append(got[0])
        return points

    def batches(
        self,
        collection: str,
        batch_size: int,
        after: str | None = None,
        until: str | None = None,
        max_bytes: int | None = None,
    ) -> Iterator[Batch]:
        """Documents with after < _key (<= until when given), in the server's key order."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        # One HTTP response per 1,000 documents at most: a 5,000-resume page in one response is
        # ~40 MB held as bytes and str while it is parsed (measured: 346 MB peak RSS at 100k docs).
        cursor_batch = self.cursor_batch_size or min(batch_size, CURSOR_BATCH_MAX)
        while True:
            last = after

            def page(
                last=last, cursor_batch=cursor_batch
            ) -> tuple[list[dict], tuple[str, ...], int, bool]:
                start = self._http.bytes_read
                docs, warnings, cut = self._read_page(
                    collection, last, until, batch_size, cursor_batch, max_bytes, start
                )
                return docs, warnings, self._http.bytes_read - start, cut

            docs, warnings, nbytes, cut = self._with_collection_check(
                collection, f"read '{collection}' after key {last!r}", page
            )
            if not docs:
                return
            after = docs[-1]["_key"]
            yield Batch(collection, docs, after, nbytes, warnings)
            if len(docs) < batch_size and not cut:
                return
            if max_bytes and not self.cursor_batch_size:
                # responses of about a quarter of max_bytes, from the sizes seen so far: a batch
                # then ends close to max_bytes, and no response is larger than needed (100k
                # real-shaped documents over HTTP: 193 MB peak RSS instead of 259 MB)
                per_doc = max(1, nbytes // len(docs))
                cursor_batch = max(
                    CURSOR_BATCH_MIN, min(batch_size, CURSOR_BATCH_MAX, max_bytes // 4 // per_doc)
                )

    def _read_page(
        self,
        collection: str,
        after: str | None,
        until: str | None,
        n: int,
        cursor_batch: int,
        max_bytes: int | None = None,
        start: int = 0,
    ) -> tuple[list[dict], tuple[str, ...], bool]:
        """Up to n documents; with max_bytes, the page ends (cut: True) at the first end of an
        HTTP response once max_bytes were read since `start` (the rest is read next time)."""
        query, bind = (
            (KEYSET_QUERY, {"@c": collection, "last": after, "n": n})
            if until is None
            else (RANGE_QUERY, {"@c": collection, "last": after, "until": until, "n": n})
        )
        cursor = self._db.aql.execute(
            query, bind_vars=bind, batch_size=cursor_batch, allow_retry=True, count=False
        )
        cut = False
        try:
            if not max_bytes:
                docs = list(cursor)
            else:
                docs = []
                for doc in cursor:
                    docs.append(doc)
                    if cursor.empty() and self._http.bytes_read - start >= max_bytes:
                        cut = cursor.has_more()
                        break
        finally:
            if cursor.id is not None:
                try:
                    cursor.close(ignore_missing=True)
                except Exception as exc:  # the server drops it after its ttl anyway
                    log.debug("closing cursor %s failed: %s", cursor.id, exc)
        warnings = tuple(
            f"AQL warning {w.get('code')}: {w.get('message')}"
            for w in (cursor.warnings() or ())
            if isinstance(w, dict)
        )
        return docs, warnings, cut

    def _count(self, name: str) -> int:
        return int(self._db.collection(name).count())

    def _with_collection_check(self, collection: str, what: str, fn: Callable[[], T]) -> T:
        from etl.settings import arango_name_problem

        if (problem := arango_name_problem(collection, 256)) is not None:
            raise PermanentError(
                f"collection {collection!r} does not exist in database '{self.settings.database}'"
                f" (not a valid ArangoDB collection name: {problem})"
            )
        try:
            return self._retry(what, fn)
        except PermanentError as exc:
            if getattr(exc, "arango_error_num", None) == 1203:
                raise self._unknown_collection(collection) from None
            raise

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # pragma: no cover
            pass

    def __enter__(self) -> ArangoSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ArangoSource {self.description}>"


def _path_key(key: str) -> str:
    return quote(key, safe="").replace(".", "%2E")


def read_documents(
    db: Any, collection: str, keys: Iterable[str], retry: Callable[[str, Callable[[], Any]], Any]
) -> dict[str, dict]:
    """The documents among keys that exist, by key: one `GET /_api/document/{c}/{key}` each, the
    read every ArangoDB and the documented API subset have. Not `PUT ?onlyget` (python-arango's
    get_many): it is not in that subset, and a server that ignores `onlyget` takes the array for
    a replace. The key is percent-encoded, dots too: `%` is a legal key character, and HTTP
    clients drop a path segment that is `.` or `..`, both legal keys."""
    col = db.collection(collection)
    found: dict[str, dict] = {}
    for key in keys:
        path_key = _path_key(key)
        doc = retry(f"read {collection}/{key}", lambda: col.get(path_key))  # noqa: B023 (called at once)
        if doc is not None:
            found[key] = doc
    return found


def _errno_text(exc: BaseException) -> str | None:
    """'Connection refused' out of requests' long ConnectionError text."""
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if m:
        return m.group(1).strip()
    if "RemoteDisconnected" in str(exc) or "Connection aborted" in str(exc):
        return "connection closed by the server without an answer"
    return None
