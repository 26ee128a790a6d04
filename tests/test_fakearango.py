"""Fidelity of the fake ArangoDB server (docs: arangodb-http.md), with python-arango as the client.

Every request goes over real HTTP through python-arango 8.3.7: its high-level API where one
exists, otherwise its connection with an arango.request.Request (so headers, parameters and
body encoding are exactly what python-arango sends).
"""

from __future__ import annotations

import base64
import time

import jwt as pyjwt
import pytest
import requests
from arango import ArangoClient
from arango.exceptions import (
    AQLQueryExecuteError,
    CursorCloseError,
    CursorNextError,
    DocumentCountError,
    DocumentInsertError,
    JWTAuthError,
    ServerConnectionError,
)
from arango.http import DefaultHTTPClient
from arango.request import Request

from tests.fakearango import FakeArango
from tests.fakearango.fixtures import (  # fixtures come from the plugin registered in conftest.py
    DATABASE,
    ROOT_PASSWORD,
    client_db,
    seed,
)

KEYSET = "FOR d IN @@c FILTER d._key > @last SORT d._key LIMIT @n RETURN d"
ERROR_KEYS = {"error", "errorNum", "errorMessage", "code"}


def raw(
    server: FakeArango,
    method: str,
    endpoint: str,
    *,
    db: str = DATABASE,
    data=None,
    params=None,
    headers=None,
    auth=("root", ROOT_PASSWORD),
    skip_db_prefix: bool = False,
    timeout: float = 10,
):
    """One request through python-arango's connection; returns arango.response.Response."""
    client = ArangoClient(
        hosts=server.url, http_client=DefaultHTTPClient(request_timeout=timeout, retry_attempts=0)
    )
    conn = client.db(db, username="root", password=ROOT_PASSWORD)._conn
    req = Request(method=method, endpoint=endpoint, data=data, params=params, headers=headers)
    return conn.process_request(0, req, auth=auth, skip_db_prefix=skip_db_prefix)


def assert_error(resp, status: int, num: int) -> None:
    assert resp.status_code == status, resp.body
    assert isinstance(resp.body, dict) and set(resp.body) == ERROR_KEYS, resp.body
    assert resp.body["error"] is True
    assert resp.body["errorNum"] == num
    assert resp.body["code"] == status
    assert isinstance(resp.body["errorMessage"], str) and resp.body["errorMessage"]
    assert "x-arango-queue-time-seconds" in resp.headers


@pytest.fixture
def server(arango_server: FakeArango) -> FakeArango:
    seed(arango_server, DATABASE, "resumes", [{"_key": f"k{i:02d}", "n": i} for i in range(10)])
    return arango_server


# ------------------------------------------------------------------ conventions, routing, auth


def test_error_body_shape_and_queue_time_header_on_every_response(server):
    db = client_db(server)
    with pytest.raises(DocumentCountError) as ei:
        db.collection("nope").count()
    assert (ei.value.http_code, ei.value.error_code) == (404, 1203)
    assert_error(raw(server, "get", "/_api/collection/nope/count"), 404, 1203)
    ok = raw(server, "get", "/_api/collection")
    assert ok.status_code == 200 and float(ok.headers["x-arango-queue-time-seconds"]) >= 0
    assert_error(raw(server, "get", "/_api/collection", auth=("root", "bad")), 401, 11)
    assert_error(raw(server, "get", "/_api/nothing-here"), 404, 404)


def test_queue_time_limit_412(server):
    server.queue_time = 2.5
    resp = raw(server, "get", "/_api/version", headers={"x-arango-queue-time-seconds": "1"})
    assert_error(resp, 412, 21004)
    assert float(resp.headers["x-arango-queue-time-seconds"]) == 2.5
    for disabled in ("0", "not-a-number"):
        assert (
            raw(
                server, "get", "/_api/version", headers={"x-arango-queue-time-seconds": disabled}
            ).status_code
            == 200
        )
    assert (
        raw(
            server, "get", "/_api/version", headers={"x-arango-queue-time-seconds": "5"}
        ).status_code
        == 200
    )


def test_unknown_database_404_for_root_401_for_others(server):
    server.add_user("reader", "pw", databases=[DATABASE])
    assert_error(raw(server, "get", "/_api/collection", db="nodb"), 404, 1228)
    assert_error(raw(server, "get", "/_api/collection", db="nodb", auth=("reader", "pw")), 401, 11)
    assert_error(raw(server, "get", "/_api/collection", db="nodb", auth=("root", "wrong")), 401, 11)
    # a known database the user may not access looks the same as a wrong password
    server.create_database("other")
    assert_error(raw(server, "get", "/_api/collection", db="other", auth=("reader", "pw")), 401, 11)
    assert raw(server, "get", "/_api/collection", auth=("reader", "pw")).status_code == 200
    client = ArangoClient(hosts=server.url, http_client=DefaultHTTPClient(retry_attempts=0))
    with pytest.raises(ServerConnectionError, match="database not found"):
        client.db("nodb", username="root", password=ROOT_PASSWORD, verify=True)
    with pytest.raises(ServerConnectionError, match="bad username/password"):
        client.db("nodb", username="reader", password="pw", verify=True)


def test_unprefixed_paths_use_system_database(server):
    resp = raw(server, "get", "/_api/database/current", skip_db_prefix=True)
    assert resp.body["result"]["name"] == "_system" and resp.body["result"]["isSystem"] is True


def test_www_authenticate_header_and_omit(server):
    resp = raw(server, "get", "/_api/collection", auth=("root", "wrong"))
    assert "www-authenticate" in resp.headers
    resp = raw(
        server,
        "get",
        "/_api/collection",
        auth=("root", "wrong"),
        headers={"X-Omit-Www-Authenticate": "1"},
    )
    assert_error(resp, 401, 11)
    assert "www-authenticate" not in resp.headers


def test_basic_and_bearer_schemes_case_insensitive(server):
    basic = base64.b64encode(f"root:{ROOT_PASSWORD}".encode()).decode()
    for scheme in ("Basic", "basic", "BASIC"):
        assert (
            raw(
                server,
                "get",
                "/_api/version",
                auth=None,
                headers={"Authorization": f"{scheme} {basic}"},
            ).status_code
            == 200
        )
    token = raw(
        server,
        "post",
        "/_open/auth",
        auth=None,
        skip_db_prefix=True,
        data={"username": "root", "password": ROOT_PASSWORD},
    ).body["jwt"]
    for scheme in ("bearer", "Bearer", "BEARER"):
        assert (
            raw(
                server,
                "get",
                "/_api/version",
                auth=None,
                headers={"Authorization": f"{scheme} {token}"},
            ).status_code
            == 200
        )
    assert_error(
        raw(
            server, "get", "/_api/version", auth=None, headers={"Authorization": f"bearer {token}x"}
        ),
        401,
        11,
    )
    assert_error(raw(server, "get", "/_api/version", auth=None), 401, 11)
    # a superuser token (no preferred_username) may see every database, so unknown ones are 404
    su = server.superuser_token()
    assert_error(
        raw(
            server,
            "get",
            "/_api/version",
            db="nodb",
            auth=None,
            headers={"Authorization": f"bearer {su}"},
        ),
        404,
        1228,
    )


def test_open_auth_issues_hs256_token(server):
    before = int(time.time())
    resp = raw(
        server,
        "post",
        "/_open/auth",
        auth=None,
        skip_db_prefix=True,
        data={"username": "root", "password": ROOT_PASSWORD},
    )
    assert resp.status_code == 200 and set(resp.body) == {"jwt"}
    token = resp.body["jwt"]
    assert pyjwt.get_unverified_header(token)["alg"] == "HS256"
    claims = pyjwt.decode(token, server.jwt_secret, algorithms=["HS256"], issuer="arangodb")
    assert claims["preferred_username"] == "root"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600
    assert_error(
        raw(
            server,
            "post",
            "/_open/auth",
            auth=None,
            skip_db_prefix=True,
            data={"username": "root", "password": "nope"},
        ),
        401,
        401,
    )
    assert_error(
        raw(server, "post", "/_open/auth", auth=None, skip_db_prefix=True, data="{not json"),
        400,
        400,
    )


def test_python_arango_jwt_auth_and_no_refresh_after_expiry(server):
    client = ArangoClient(hosts=server.url, http_client=DefaultHTTPClient(retry_attempts=0))
    with pytest.raises(JWTAuthError) as ei:
        client.db(DATABASE, username="root", password="wrong", auth_method="jwt")
    assert ei.value.http_code == 401 and ei.value.error_code == 401
    server.session_timeout = 1
    db = client.db(DATABASE, username="root", password=ROOT_PASSWORD, auth_method="jwt")
    assert db.collection("resumes").count() == 10
    time.sleep(
        2.1
    )  # the token has expired; python-arango does not fetch a new one (spec section 1)
    with pytest.raises(DocumentCountError) as ei2:
        db.collection("resumes").count()
    assert (ei2.value.http_code, ei2.value.error_code) == (401, 11)


# ------------------------------------------------------------------ version, database, collections


def test_version_and_database_current(server):
    db = client_db(server)
    assert db.version() == "3.12.4"
    body = raw(server, "get", "/_api/version", params={"details": False}).body
    assert body == {"server": "arango", "version": "3.12.4", "license": "community"}
    # details defaults to false (arangodb-http.md §3)
    assert raw(server, "get", "/_api/version").body == body
    details = raw(server, "get", "/_api/version", params={"details": "true"}).body["details"]
    assert details and all(isinstance(v, str) for v in details.values())
    props = db.properties()
    assert props["name"] == DATABASE and props["system"] is False
    body = raw(server, "get", "/_api/database/current").body
    assert body["error"] is False and body["code"] == 200
    assert set(body["result"]) == {"id", "name", "isSystem", "path"}


def test_collection_list_includes_system_and_exclude_system(server):
    server.create_collection(DATABASE, "job_research", edge=True)
    db = client_db(server)
    cols = {c["name"]: c for c in db.collections()}
    assert cols["resumes"]["type"] == "document" and cols["job_research"]["type"] == "edge"
    assert any(c["system"] for c in cols.values()) and cols["_graphs"]["system"] is True
    body = raw(server, "get", "/_api/collection").body
    assert body["error"] is False and body["code"] == 200
    item = next(c for c in body["result"] if c["name"] == "resumes")
    assert set(item) == {"id", "name", "status", "type", "isSystem", "globallyUniqueId"}
    assert item["type"] == 2 and item["status"] == 3 and isinstance(item["id"], str)
    for flag in ("true", "1"):
        names = {
            c["name"]
            for c in raw(server, "get", "/_api/collection", params={"excludeSystem": flag}).body[
                "result"
            ]
        }
        assert names == {"resumes", "job_research"}
    assert (
        len(
            raw(server, "get", "/_api/collection", params={"excludeSystem": "false"}).body["result"]
        )
        > 2
    )


def test_collection_info_properties_count_shapes(server):
    base = {"id", "name", "status", "type", "isSystem", "globallyUniqueId"}
    info = raw(server, "get", "/_api/collection/resumes").body
    assert set(info) == base | {"error", "code"}
    props = raw(server, "get", "/_api/collection/resumes/properties").body
    assert set(props) >= base | {
        "statusString",
        "waitForSync",
        "keyOptions",
        "schema",
        "computedValues",
        "cacheEnabled",
        "syncByRevision",
    }
    assert props["statusString"] == "loaded" and props["keyOptions"]["type"] == "traditional"
    count = raw(server, "get", "/_api/collection/resumes/count").body
    assert set(count) == set(props) | {"count"} and count["count"] == 10
    db = client_db(server)
    assert db.collection("resumes").count() == 10
    assert db.collection("resumes").properties()["edge"] is False
    for suffix in ("", "/properties", "/count"):
        assert_error(raw(server, "get", f"/_api/collection/nope{suffix}"), 404, 1203)


# ------------------------------------------------------------------ cursors


def test_cursor_batches_ids_count_and_extra(server):
    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={
            "query": KEYSET,
            "bindVars": {"@c": "resumes", "last": None, "n": 10},
            "count": True,
            "batchSize": 4,
        },
    ).body
    assert body["code"] == 201 and body["error"] is False and body["cached"] is False
    assert [d["_key"] for d in body["result"]] == ["k00", "k01", "k02", "k03"]
    assert body["hasMore"] is True and isinstance(body["id"], str) and body["nextBatchId"] == "2"
    assert body["count"] == 10
    assert set(body["extra"]) == {"warnings", "stats"} and body["extra"]["warnings"] == []
    stats = body["extra"]["stats"]
    assert stats["scannedIndex"] > 0 and stats["scannedFull"] == 0
    cid = body["id"]
    b2 = raw(server, "post", f"/_api/cursor/{cid}").body
    assert b2["code"] == 200 and b2["nextBatchId"] == "3" and b2["count"] == 10 and b2["id"] == cid
    b3 = raw(server, "put", f"/_api/cursor/{cid}").body  # the deprecated twin
    assert [d["_key"] for d in b3["result"]] == ["k08", "k09"]
    assert b3["hasMore"] is False and "id" not in b3 and "nextBatchId" not in b3
    # without allowRetry the cursor is gone after its last batch
    assert_error(raw(server, "post", f"/_api/cursor/{cid}"), 404, 1600)
    assert_error(raw(server, "delete", f"/_api/cursor/{cid}"), 404, 1600)


def test_cursor_single_batch_has_no_id_and_default_batch_size(server):
    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={"query": KEYSET, "bindVars": {"@c": "resumes", "last": "k07", "n": 50}},
    ).body
    assert [d["_key"] for d in body["result"]] == ["k08", "k09"]
    assert (
        body["hasMore"] is False
        and "id" not in body
        and "nextBatchId" not in body
        and "count" not in body
    )
    seed(server, DATABASE, "big", [{"_key": f"{i:05d}"} for i in range(1500)])
    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={"query": KEYSET, "bindVars": {"@c": "big", "last": None, "n": 1500}},
    ).body
    assert len(body["result"]) == 1000 and body["hasMore"] is True  # default batchSize 1000


def test_cursor_options_unknown_attributes_fullcount_and_stream(server):
    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={
            "query": KEYSET,
            "bindVars": {"@c": "resumes", "last": "k02", "n": 3},
            "options": {"fullCount": True},
            "whatever": 1,
            "batchSize": 2,
        },
    ).body
    assert body["extra"]["stats"]["fullCount"] == 7
    stream = raw(
        server,
        "post",
        "/_api/cursor",
        data={
            "query": KEYSET,
            "bindVars": {"@c": "resumes", "last": None, "n": 10},
            "count": True,
            "batchSize": 6,
            "options": {"stream": True},
        },
    ).body
    assert "count" not in stream and "extra" not in stream and stream["hasMore"] is True
    last = raw(server, "post", f"/_api/cursor/{stream['id']}").body
    assert last["hasMore"] is False and "stats" in last["extra"]


def test_python_arango_reads_cursor_and_close_rules(server):
    db = client_db(server)
    cur = db.aql.execute(
        KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}, batch_size=3, count=True
    )
    assert len(cur) == 10
    assert [d["n"] for d in cur] == list(range(10))
    with pytest.raises(CursorCloseError) as ei:  # without allowRetry the server already dropped it
        cur.close()
    assert ei.value.error_code == 1600
    cur = db.aql.execute(
        KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}, batch_size=3, allow_retry=True
    )
    assert len(list(cur)) == 10
    assert cur.close() is True  # with allowRetry it survives its last batch until DELETE
    assert server.cursors == {}
    paths = [r.path for r in server.requests if r.route == "cursor_batch"]
    assert paths and all(p.rsplit("/", 1)[1] in ("2", "3", "4") for p in paths)


def test_batch_retry_rules(server):
    def create(allow_retry: bool) -> dict:
        return raw(
            server,
            "post",
            "/_api/cursor",
            data={
                "query": KEYSET,
                "bindVars": {"@c": "resumes", "last": None, "n": 10},
                "batchSize": 3,
                "options": {"allowRetry": allow_retry},
            },
        ).body

    body = create(True)
    cid = body["id"]
    b2 = raw(server, "post", f"/_api/cursor/{cid}/2").body  # x = y+1: advance
    assert [d["n"] for d in b2["result"]] == [3, 4, 5] and b2["nextBatchId"] == "3"
    again = raw(
        server, "post", f"/_api/cursor/{cid}/2"
    ).body  # x = y with allowRetry: same batch again
    assert again["result"] == b2["result"] and again["nextBatchId"] == "3"
    assert_error(raw(server, "post", f"/_api/cursor/{cid}/1"), 404, 1600)  # older: not found
    assert_error(raw(server, "post", f"/_api/cursor/{cid}/5"), 404, 1600)  # ahead: not found
    raw(server, "post", f"/_api/cursor/{cid}/3")
    last = raw(server, "post", f"/_api/cursor/{cid}/4").body
    assert last["hasMore"] is False and [d["n"] for d in last["result"]] == [9]
    assert (
        raw(server, "post", f"/_api/cursor/{cid}/4").body["result"] == last["result"]
    )  # survives its last batch
    deleted = raw(server, "delete", f"/_api/cursor/{cid}")
    assert deleted.status_code == 202 and deleted.body == {"id": cid, "error": False, "code": 202}

    body = create(False)
    cid = body["id"]
    assert (
        raw(server, "post", f"/_api/cursor/{cid}/2").status_code == 200
    )  # advancing is allowed without it
    assert_error(raw(server, "post", f"/_api/cursor/{cid}/2"), 400, 400)  # a resend is not


def test_cursor_ttl_expiry_and_expire_cursors(server):
    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={
            "query": KEYSET,
            "bindVars": {"@c": "resumes", "last": None, "n": 10},
            "batchSize": 2,
            "ttl": 0.6,
        },
    ).body
    time.sleep(0.35)
    assert (
        raw(server, "post", f"/_api/cursor/{body['id']}").status_code == 200
    )  # access renews the ttl
    time.sleep(0.35)
    assert raw(server, "post", f"/_api/cursor/{body['id']}").status_code == 200
    time.sleep(0.8)
    assert_error(raw(server, "post", f"/_api/cursor/{body['id']}"), 404, 1600)
    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={
            "query": KEYSET,
            "bindVars": {"@c": "resumes", "last": None, "n": 10},
            "batchSize": 2,
        },
    ).body
    assert server.expire_cursors() == 1
    assert_error(raw(server, "post", f"/_api/cursor/{body['id']}"), 404, 1600)


def test_concurrent_use_of_a_cursor_is_409_busy(server):
    import threading

    body = raw(
        server,
        "post",
        "/_api/cursor",
        data={
            "query": KEYSET,
            "bindVars": {"@c": "resumes", "last": None, "n": 10},
            "batchSize": 2,
            "options": {"allowRetry": True},
        },
    ).body
    server.slow(0.5, routes=["cursor_batch"], before=True)
    results = {}
    t = threading.Thread(
        target=lambda: results.setdefault("a", raw(server, "post", f"/_api/cursor/{body['id']}/2"))
    )
    t.start()
    time.sleep(0.15)
    assert_error(raw(server, "post", f"/_api/cursor/{body['id']}/2"), 409, 1601)
    t.join()
    assert results["a"].status_code == 200 and [d["n"] for d in results["a"].body["result"]] == [
        2,
        3,
    ]


@pytest.mark.parametrize(
    ("data", "status", "num"),
    [
        ({}, 400, 600),
        ({"query": ""}, 400, 1502),
        ({"count": True}, 400, 1502),
        ({"query": KEYSET, "bindVars": [1]}, 400, 17),
        (
            {"query": KEYSET, "bindVars": {"@c": "resumes", "last": None, "n": 1}, "batchSize": 0},
            400,
            17,
        ),
        ({"query": "FOR x IN y RETURN x.z + 1"}, 400, 1501),
        ({"query": KEYSET, "bindVars": {"@c": "resumes", "n": 1}}, 400, 1551),
        ({"query": KEYSET, "bindVars": {"@c": "resumes", "last": None, "n": 1, "x": 1}}, 400, 1552),
        ({"query": KEYSET, "bindVars": {"@c": 5, "last": None, "n": 1}}, 400, 1553),
        ({"query": KEYSET, "bindVars": {"@c": "nope", "last": None, "n": 1}}, 404, 1203),
    ],
)
def test_cursor_request_and_aql_errors(server, data, status, num):
    resp = raw(server, "post", "/_api/cursor", data=data)
    assert_error(resp, status, num)
    if num in (1501, 1551, 1552, 1553, 1203):
        assert resp.body["errorMessage"].endswith("(while parsing)")
    if num in (1501, 1203):
        assert resp.body["errorMessage"].startswith("AQL: ")


def test_aql_errors_through_python_arango(server):
    db = client_db(server)
    with pytest.raises(AQLQueryExecuteError) as ei:
        db.aql.execute(KEYSET, bind_vars={"@c": "nope", "last": None, "n": 1})
    assert (ei.value.http_code, ei.value.error_code) == (404, 1203)
    assert "nope" in ei.value.error_message
    with pytest.raises(CursorNextError) as ei2:
        cur = db.aql.execute(
            KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}, batch_size=2
        )
        server.expire_cursors()
        list(cur)
    assert ei2.value.error_code == 1600


def test_count_queries(server):
    db = client_db(server)
    q = "FOR d IN @@c FILTER d._key > @last COLLECT WITH COUNT INTO n RETURN n"
    assert list(db.aql.execute(q, bind_vars={"@c": "resumes", "last": "k06"})) == [3]
    assert list(db.aql.execute(q, bind_vars={"@c": "resumes", "last": None})) == [10]
    assert list(db.aql.execute("RETURN LENGTH(@@c)", bind_vars={"@c": "resumes"})) == [10]


# ------------------------------------------------------------------ ordering and values

MIXED = ["c", "B", "a", "_x", "0", "Z9", "z1", "100", "99", "a-b", "a_b", "a.b", "A", "%", "$"]


def _keyset_keys(server: FakeArango, collection: str, n: int) -> list[str]:
    db = client_db(server)
    keys: list[str] = []
    last = None
    while True:
        page = [
            d["_key"]
            for d in db.aql.execute(KEYSET, bind_vars={"@c": collection, "last": last, "n": n})
        ]
        keys += page
        if len(page) < n:
            return keys
        last = page[-1]


def test_icu_like_order_filter_and_sort_agree(arango_server):
    seed(arango_server, DATABASE, "mixed", [{"_key": k} for k in MIXED])
    full = _keyset_keys(arango_server, "mixed", 100)
    assert full.index("a") < full.index("B") < full.index("c")  # case-insensitive first
    assert full.index("a") < full.index("A")  # then lower before upper
    assert full.index("_x") < full.index("0")  # punctuation before digits ("?" > "0" is false)
    assert full.index("100") < full.index("99")  # strings, not numbers
    assert sorted(full) != full
    for n in (1, 2, 4):  # FILTER d._key > @last uses the same order as SORT
        assert _keyset_keys(arango_server, "mixed", n) == full


def test_bytewise_order(arango_server_bytewise):
    seed(arango_server_bytewise, DATABASE, "mixed", [{"_key": k} for k in MIXED])
    full = _keyset_keys(arango_server_bytewise, "mixed", 100)
    assert full == sorted(MIXED)
    assert _keyset_keys(arango_server_bytewise, "mixed", 3) == full


def test_null_and_non_string_last_follow_type_order(server):
    db = client_db(server)
    for last in (None, False, 12345):  # null < bool < number < string
        assert (
            len(list(db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": last, "n": 100})))
            == 10
        )
    assert list(db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": [1], "n": 100})) == []


def test_values_round_trip_exactly(arango_server):
    doc = {
        "_key": "v1",
        "big": 2**63 - 1,
        "neg": -(2**63),
        "huge": 2**70 + 1,
        "nul": "a\u0000b",
        "_future": {"x": 1},
        "_from_like": "x",
        "f": 0.1,
        "nested": [{"_k": [1, None, True]}],
        "uni": "é✓",
    }
    seed(arango_server, DATABASE, "values", [doc])
    db = client_db(arango_server)
    from etl import jsonutil

    client = ArangoClient(
        hosts=arango_server.url,
        deserializer=jsonutil.loads,
        http_client=DefaultHTTPClient(retry_attempts=0),
    )
    got = list(
        client.db(DATABASE, username="root", password=ROOT_PASSWORD).aql.execute(
            KEYSET, bind_vars={"@c": "values", "last": None, "n": 1}
        )
    )[0]
    for k, v in doc.items():
        assert got[k] == v and type(got[k]) is type(v)
    assert got["_id"] == "values/v1" and isinstance(got["_rev"], str) and got["_rev"]
    stored = arango_server.documents(DATABASE, "values")["v1"]
    assert stored["huge"] == 2**70 + 1 and stored["nul"] == "a\u0000b"
    assert db.collection("values").count() == 1


# ------------------------------------------------------------------ import


def test_import_bulk_as_python_arango_sends_it(arango_server):
    arango_server.create_collection(DATABASE, "resumes")
    col = client_db(arango_server).collection("resumes")
    res = col.import_bulk(
        [{"_key": "a", "x": 1}, {"x": 2}, {"x": 3}], halt_on_error=True, details=True
    )
    assert res["created"] == 3 and res["errors"] == 0 and res["empty"] == 0 and res["updated"] == 0
    assert res["ignored"] == 0 and res["details"] == []
    imp = [r for r in arango_server.requests if r.route == "import"][-1]
    assert "type=array" in imp.path and "complete=1" in imp.path and "details=1" in imp.path
    docs = arango_server.documents(DATABASE, "resumes")
    assert set(docs) >= {"a"} and len(docs) == 3
    for key, d in docs.items():
        assert d["_key"] == key and d["_id"] == f"resumes/{key}" and d["_rev"]
        assert key == "a" or key.isdigit()  # generated keys are numeric strings
    assert len({d["_rev"] for d in docs.values()}) == 3
    with pytest.raises(DocumentInsertError) as ei:
        col.import_bulk([{"_key": "b"}, {"_key": "a"}], halt_on_error=True)
    assert (ei.value.http_code, ei.value.error_code) == (409, 1210)
    assert "b" not in arango_server.documents(DATABASE, "resumes")  # complete: all or nothing


def test_import_types_counts_and_details(arango_server):
    arango_server.create_collection(DATABASE, "c")

    def imp(body, **params):
        params.setdefault("collection", "c")
        return raw(arango_server, "post", "/_api/import", params=params, data=body)

    r = imp('{"_key":"d1"}\n\n{"_key":"d2"}\n', type="documents", details=True)
    assert r.status_code == 201 and (r.body["created"], r.body["empty"], r.body["errors"]) == (
        2,
        1,
        0,
    )
    assert "code" not in r.body and r.body["error"] is False
    r = imp('[{"_key":"l1"},{"_key":"l2"}]', type="list")
    assert r.body["created"] == 2 and "details" not in r.body
    assert imp('[{"_key":"a1"}]', type="auto").body["created"] == 1
    assert imp('{"_key":"a2"}\n{"_key":"a3"}', type="auto").body["created"] == 2
    r = imp('["_key","v"]\n["t1",1]\n["t2",2]', type="")  # tabular format
    assert r.body["created"] == 2 and arango_server.documents(DATABASE, "c")["t1"]["v"] == 1
    # without complete, bad documents only count as errors
    r = imp('[{"_key":"d1"},{"_key":"bad key"},{"_key":"ok1"},7]', type="array", details=True)
    assert (r.body["created"], r.body["errors"]) == (1, 3)
    assert len(r.body["details"]) == 3 and r.body["details"][0].startswith("at position 0: ")
    assert "unique constraint violated" in r.body["details"][0]
    r = imp('[{"_key":"d1","v":1},{"_key":"new"}]', type="array", onDuplicate="update")
    assert (r.body["created"], r.body["updated"]) == (1, 1)
    assert arango_server.documents(DATABASE, "c")["d1"]["v"] == 1
    r = imp('[{"_key":"d1","w":2}]', type="array", onDuplicate="replace")
    assert r.body["updated"] == 1 and "v" not in arango_server.documents(DATABASE, "c")["d1"]
    r = imp('[{"_key":"d1"}]', type="array", onDuplicate="ignore")
    assert r.body["ignored"] == 1
    r = imp('[{"_key":"only"}]', type="array", overwrite=True)
    assert r.body["created"] == 1 and list(arango_server.documents(DATABASE, "c")) == ["only"]


def test_import_errors(arango_server):
    arango_server.create_collection(DATABASE, "c")
    arango_server.create_collection(DATABASE, "e", edge=True)

    def imp(body, **params):
        return raw(arango_server, "post", "/_api/import", params=params, data=body)

    assert_error(imp("[{}]", type="array"), 400, 1204)
    assert_error(
        imp('[{"_key":"x"}]', collection="c"), 400, 400
    )  # no type: tabular, JSON array is not
    assert_error(imp('[{"_key":"x"}]', collection="c", type="bogus"), 400, 400)
    assert_error(imp("[{}]", collection="nope", type="array"), 404, 1203)
    assert_error(imp('{"_key":"x"}', collection="c", type="array"), 400, 400)
    assert_error(
        imp('[{"_key":"x"},{"_key":"x"}]', collection="c", type="array", complete=True), 409, 1210
    )
    assert_error(imp('[{"_key":"a/b"}]', collection="c", type="array", complete=True), 400, 1221)
    assert_error(
        imp('[{"_key":"e1","_from":"a/1"}]', collection="e", type="array", complete=True), 400, 1233
    )
    assert (
        arango_server.documents(DATABASE, "c") == {}
        and arango_server.documents(DATABASE, "e") == {}
    )
    r = imp(
        '[{"_key":"e1","_from":"1","_to":"2"}]',
        collection="e",
        type="array",
        fromPrefix="resumes",
        toPrefix="jobs",
        complete=True,
    )
    assert r.body["created"] == 1
    e1 = arango_server.documents(DATABASE, "e")["e1"]
    assert (e1["_from"], e1["_to"]) == ("resumes/1", "jobs/2")


def test_create_collection_over_http(arango_server):
    db = client_db(arango_server)
    col = db.create_collection("links", edge=True)
    assert col.properties()["edge"] is True
    assert_error(raw(arango_server, "post", "/_api/collection", data={"name": "links"}), 409, 1207)


# ------------------------------------------------------------------ fault injection


def test_fault_503_queue_full_surfaces_at_once(server):
    db = client_db(server)
    fault = server.fail(1)
    with pytest.raises(AQLQueryExecuteError) as ei:
        db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10})
    assert (ei.value.http_code, ei.value.error_code) == (503, 21003) and fault.fired == 1
    assert (
        len(list(db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}))) == 10
    )


def test_fault_503_503_is_resent_by_python_arango_three_times(server):
    db = client_db(server)
    server.fail_unavailable(2)
    assert (
        len(list(db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}))) == 10
    )
    server.fail_unavailable(3)
    with pytest.raises(ConnectionAbortedError):
        db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10})
    # GETs: urllib3's status retry turns a 503 into requests' RetryError, even with retry_attempts=0
    server.fail(1, routes=["collection_count"])
    with pytest.raises(requests.exceptions.RetryError):
        db.collection("resumes").count()


def test_dropped_connection_after_advance_loses_a_batch_without_allow_retry(server):
    """The spec's reason for allowRetry: python-arango silently resends a dropped batch request."""
    db = client_db(server)
    server.drop_connection(1, skip=1)
    got = [
        d["n"]
        for d in db.aql.execute(
            KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}, batch_size=2
        )
    ]
    assert got == [0, 1, 2, 3, 6, 7, 8, 9]  # batch 3 was delivered into a closed socket
    server.drop_connection(1, skip=1)
    cur = db.aql.execute(
        KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}, batch_size=2, allow_retry=True
    )
    assert [d["n"] for d in cur] == list(range(10))
    cur.close()
    dropped = [r for r in server.requests if r.status is None]
    assert len(dropped) == 2


def test_truncated_response_and_slow_response(server):
    db = client_db(server)
    server.drop_connection(1, mid_body=True)
    cur = db.aql.execute(
        KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10}, batch_size=2, allow_retry=True
    )
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(cur)
    client = ArangoClient(
        hosts=server.url, http_client=DefaultHTTPClient(request_timeout=0.3, retry_attempts=0)
    )
    slow_db = client.db(DATABASE, username="root", password=ROOT_PASSWORD)
    server.slow(0.8, routes=["cursor_create"])
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        slow_db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 10})
    assert time.monotonic() - t0 < 0.75


def test_proxy_429(server):
    server.proxy_429(1, retry_after="3")
    resp = raw(
        server,
        "post",
        "/_api/cursor",
        data={"query": KEYSET, "bindVars": {"@c": "resumes", "last": None, "n": 1}},
    )
    assert resp.status_code == 429 and isinstance(resp.body, str) and "429" in resp.body
    assert resp.headers["retry-after"] == "3" and "x-arango-queue-time-seconds" not in resp.headers
    db = client_db(server)
    server.proxy_429(1)
    with pytest.raises(AQLQueryExecuteError) as ei:
        db.aql.execute(KEYSET, bind_vars={"@c": "resumes", "last": None, "n": 1})
    assert ei.value.http_code == 429


def test_generated_collection(arango_server):
    arango_server.add_generated_collection(DATABASE, "gen", 25, lambda i, key: {"i": i})
    db = client_db(arango_server)
    assert db.collection("gen").count() == 25
    docs = list(
        db.aql.execute(
            KEYSET, bind_vars={"@c": "gen", "last": "000000000009", "n": 5}, batch_size=2
        )
    )
    assert [d["i"] for d in docs] == [10, 11, 12, 13, 14] and docs[0]["_id"] == "gen/000000000010"
