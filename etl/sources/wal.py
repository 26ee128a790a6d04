"""ArangoDB's write-ahead log over HTTP (../shared/spec/arangodb-wal.md): the last tick, one
tail response with its five replication headers and its markers, the retained range, and the
collection ids (cuid) of the markers. Retried like every other ArangoDB call (ArangoSource).

Not python-arango's `db.wal`: it hides the HTTP status and turns a one-line body into a dict;
the body is read here as UTF-8 lines through the same HTTP client as the extract (spec §5.1)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from arango.exceptions import ArangoServerError
from arango.request import Request

from etl import jsonutil
from etl.errors import PermanentError
from etl.sources.arango import ArangoSource

# marker types (spec §3.1)
COLLECTION_CREATE, COLLECTION_DROP, COLLECTION_RENAME = 2000, 2001, 2002
COLLECTION_CHANGE, COLLECTION_TRUNCATE = 2003, 2004
TRX_START, TRX_COMMIT, TRX_ABORT = 2200, 2201, 2202
DOCUMENT, EDGE_OLD, REMOVE = 2300, 2301, 2302


@dataclass(frozen=True)
class ServerTick:
    tick: int
    server_id: str
    version: str


@dataclass
class TailResponse:
    status: int
    markers: list[dict]
    last_included: int
    last_scanned: int
    last_tick: int
    check_more: bool
    from_present: bool
    # the body reached the chunk size: the server stopped there with more to send (a backlog),
    # not at the end of its log
    full: bool = False


def new_syncer_id() -> str:
    """A positive integer without a leading zero (spec §1.2), one per follower."""
    return str(random.randint(10**11, 2**53 - 1))


CHUNK_SIZE = 4 * 1024 * 1024  # a tail response's soft limit (the spec: keep it 1-8 MiB)


class WalReader:
    def __init__(self, source: ArangoSource, chunk_size: int | None = None):
        self.source = source
        self.chunk_size = chunk_size or CHUNK_SIZE

    @property
    def database(self) -> str:
        return self.source.settings.database

    def _get(self, what: str, endpoint: str, params: dict | None = None, raw: bool = False):
        def call():
            db = self.source.arango_db()
            request = Request(
                method="get",
                endpoint=endpoint,
                params=params or {},
                headers={"accept": "application/json"},
                deserialize=not raw,
            )
            resp = db._conn.send_request(request)
            if resp.status_code == 403 and endpoint.startswith("/_api/wal/"):
                # 403/11 is not a wrong password (that is 401): the WAL API needs an admin
                # user, one with administrate (read-write) access to _system (spec §1.1)
                raise PermanentError(
                    f"ArangoDB at {self.source.safe_url}: user '{self.source.settings.username}'"
                    " may not read the write-ahead log",
                    hint="grant it administrate (read-write) access to the _system database",
                )
            if not resp.is_success:
                if raw:  # error bodies are JSON: errorNum and errorMessage for the message
                    resp = db._conn.prep_response(resp, True)
                raise ArangoServerError(resp, request)
            return resp

        return self.source.retry(what, call)

    def last_tick(self) -> ServerTick:
        body = self._get("read the WAL's last tick", "/_api/wal/lastTick").body
        server = body.get("server") or {}
        return ServerTick(
            int(body["tick"]), str(server.get("serverId", "")), server.get("version", "")
        )

    def tick_range(self) -> tuple[int, int]:
        body = self._get("read the WAL's range", "/_api/wal/range").body
        return int(body["tickMin"]), int(body["tickMax"])

    def logger_state(self) -> dict:
        return self._get("read the replication state", "/_api/replication/logger-state").body

    def tail(
        self, from_tick: int, last_scanned: int, syncer_id: str, *, to_tick: int | None = None
    ) -> TailResponse:
        params: dict[str, Any] = {
            "from": from_tick,
            "lastScanned": last_scanned,
            "chunkSize": self.chunk_size,
            "syncerId": syncer_id,
            "clientInfo": "etl",
        }
        if to_tick is not None:
            params["to"] = to_tick
        resp = self._get("follow the WAL", "/_api/wal/tail", params, raw=True)
        h = resp.headers
        markers = []
        for line in (resp.raw_body or "").split("\n"):
            if line.strip():
                try:
                    markers.append(jsonutil.loads(line))
                except ValueError as exc:
                    raise PermanentError(
                        f"ArangoDB at {self.source.safe_url}: a WAL marker is not JSON "
                        f"({exc}): {line[:120]}"
                    ) from None
        return TailResponse(
            status=resp.status_code,
            markers=markers,
            last_included=int(h.get("x-arango-replication-lastincluded") or 0),
            last_scanned=int(h.get("x-arango-replication-lastscanned") or 0),
            last_tick=int(h.get("x-arango-replication-lasttick") or 0),
            check_more=h.get("x-arango-replication-checkmore", "false").lower() == "true",
            from_present=h.get("x-arango-replication-frompresent", "false").lower() == "true",
            # in bytes, as the server counts the chunk size
            full=len((resp.raw_body or "").encode()) >= self.chunk_size,
        )

    def pin(self, tick: int, syncer_id: str) -> None:
        """Register `syncer_id` at `tick`: the server keeps the WAL from there on for 2 h
        (spec §4.2 step 2); every tail call refreshes it."""
        self.tail(tick, 0, syncer_id, to_tick=max(tick, 1))

    def collection_ids(self) -> dict[str, str]:
        """cuid (globallyUniqueId) -> current name, for every collection of the database."""
        out = {}
        for c in self.source.retry(
            "list collections", lambda: self.source.arango_db().collections()
        ):
            props = self._get(
                f"read collection '{c['name']}'", f"/_api/collection/{c['name']}/properties"
            ).body
            cuid = props.get("globallyUniqueId")
            if cuid:
                out[str(cuid)] = c["name"]
        return out
