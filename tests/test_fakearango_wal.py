"""The fake server's document API, stream transactions and WAL tailing (docs: arangodb-wal.md).

python-arango 8.3.7 is the client wherever it can be (db.collection(...).insert, begin_transaction,
db.wal.tail, db.wal.last_tick, db.wal.tick_ranges, db.replication.*); raw `requests` where the
status line, the exact headers or the body bytes are the point.
"""

from __future__ import annotations

import json
import re

import pytest
import requests
from arango.exceptions import (
    DocumentDeleteError,
    DocumentInsertError,
    DocumentRevisionError,
    DocumentUpdateError,
    TransactionCommitError,
    TransactionInitError,
    WALLastTickError,
    WALTailError,
)

from tests.fakearango import FakeArango
from tests.fakearango.fixtures import ROOT_PASSWORD, client_db

DB = "hr"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
REPLICATION_HEADERS = (
    "x-arango-replication-checkmore",
    "x-arango-replication-frompresent",
    "x-arango-replication-lastincluded",
    "x-arango-replication-lastscanned",
    "x-arango-replication-lasttick",
)


@pytest.fixture
def server(arango_server: FakeArango) -> FakeArango:
    arango_server.create_database(DB)
    arango_server.create_collection(DB, "resumes")
    return arango_server


def http(server: FakeArango, method: str, path: str, *, db: str = DB, auth=None, **kw):
    return requests.request(
        method,
        f"{server.url}/_db/{db}{path}",
        auth=auth or ("root", ROOT_PASSWORD),
        timeout=10,
        **kw,
    )


def tail(server: FakeArango, *, db: str = DB, method: str = "GET", auth=None, **params):
    return http(server, method, "/_api/wal/tail", db=db, params=params, auth=auth)


def markers(resp) -> list[dict]:
    return [json.loads(line) for line in resp.content.decode("utf-8").split("\n") if line]


def hdr(resp, name: str) -> int:
    return int(resp.headers[f"x-arango-replication-{name}"])


def shape(ms: list[dict]) -> list[tuple]:
    """(type, tid, key) per marker: what the follower branches on."""
    return [(m["type"], m.get("tid"), (m.get("data") or {}).get("_key")) for m in ms]


def assert_error(resp, status: int, num: int) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] is True and body["errorNum"] == num and body["code"] == status


# ------------------------------------------------------------------ document API (python-arango)


def test_document_crud_through_python_arango(server):
    col = client_db(server, DB).collection("resumes")
    meta = col.insert({"_key": "a", "name": "Ann", "_id": "ignored/x", "_rev": "ignored"})
    assert set(meta) == {"_id", "_key", "_rev"} and meta["_id"] == "resumes/a"
    assert col.get("a") == {"_key": "a", "_id": "resumes/a", "_rev": meta["_rev"], "name": "Ann"}
    generated = col.insert({"name": "Bo"}, return_new=True)
    assert generated["_key"].isdigit() and generated["new"]["name"] == "Bo"
    upd = col.update({"_key": "a", "skills": ["sql"], "nested": {"x": 1}}, return_old=True)
    assert upd["_old_rev"] == meta["_rev"] and upd["old"]["name"] == "Ann"
    col.update({"_key": "a", "nested": {"y": 2}, "name": None}, keep_none=False)
    assert col.get("a")["nested"] == {"x": 1, "y": 2} and "name" not in col.get("a")
    rep = col.replace({"_key": "a", "only": True})
    assert {k: v for k, v in col.get("a").items() if not k.startswith("_")} == {"only": True}
    with pytest.raises(DocumentRevisionError) as ei:  # a stale _rev: 412 / 1200
        col.update({"_key": "a", "_rev": meta["_rev"], "x": 1})
    assert (ei.value.http_code, ei.value.error_code) == (412, 1200)
    with pytest.raises(DocumentInsertError) as ei:
        col.insert({"_key": "a"})
    assert (ei.value.http_code, ei.value.error_code) == (409, 1210)
    with pytest.raises(DocumentInsertError) as ei:
        col.insert({"_key": "bad key"})
    assert (ei.value.http_code, ei.value.error_code) == (400, 1221)
    with pytest.raises(DocumentUpdateError) as ei:
        col.update({"_key": "missing", "x": 1})
    assert (ei.value.http_code, ei.value.error_code) == (404, 1202)
    assert col.get("missing") is None
    assert col.has("a") and not col.has("missing")
    assert col.delete("a", return_old=True)["old"]["_rev"] == rep["_rev"]
    assert col.delete("a", ignore_missing=True) is False
    with pytest.raises(DocumentDeleteError) as ei:
        col.delete("a")
    assert ei.value.error_code == 1202
    # overwrite modes
    col.insert({"_key": "o", "v": 1, "keep": 1})
    assert col.insert({"_key": "o", "v": 2}, overwrite_mode="ignore")["_key"] == "o"
    assert col.get("o")["v"] == 1
    col.insert({"_key": "o", "v": 3}, overwrite_mode="update")
    assert (col.get("o")["v"], col.get("o")["keep"]) == (3, 1)
    assert "_old_rev" in col.insert({"_key": "o", "v": 4}, overwrite_mode="replace")
    assert "keep" not in col.get("o")


def test_edges_multi_document_calls_and_raw_statuses(server):
    server.create_collection(DB, "links", edge=True)
    db = client_db(server, DB)
    links = db.collection("links")
    with pytest.raises(DocumentInsertError) as ei:
        links.insert({"_key": "e"})
    assert (ei.value.http_code, ei.value.error_code) == (400, 1233)
    e = links.insert({"_key": "e", "_from": "resumes/a", "_to": "jobs/b"}, return_new=True)
    assert list(e["new"])[:5] == ["_key", "_id", "_from", "_to", "_rev"]
    res = db.collection("resumes").insert_many([{"_key": "x"}, {"_key": "x"}])
    assert res[0]["_key"] == "x" and res[1].error_code == 1210
    raw = http(server, "POST", "/_api/document/resumes", json=[{"_key": "x"}, {"_key": "y"}, 7])
    assert raw.status_code == 202
    assert json.loads(raw.headers["x-arango-error-codes"]) == {"1210": 1, "1227": 1}
    assert [r.get("errorNum") for r in raw.json()] == [1210, None, 1227]
    one = http(server, "POST", "/_api/document/resumes?waitForSync=true", json={"_key": "z"})
    assert one.status_code == 201 and one.headers["etag"] == f'"{one.json()["_rev"]}"'
    assert one.headers["location"] == f"/_db/{DB}/_api/document/resumes/z"
    stale = http(server, "GET", "/_api/document/resumes/z", headers={"If-Match": '"nope"'})
    assert_error(stale, 412, 1200)
    assert stale.json()["_rev"] == one.json()["_rev"]  # the current revision comes back
    assert http(server, "DELETE", "/_api/document/resumes/z").status_code == 202
    assert_error(http(server, "GET", "/_api/document/nope/z"), 404, 1203)
    many = db.collection("resumes").get_many(["x", "y", "missing"])
    assert [d["_key"] for d in many] == ["x", "y"]
    out = db.collection("resumes").delete_many([{"_key": "x"}, {"_key": "y"}])
    assert [d["_key"] for d in out] == ["x", "y"]
    rs = db.collection("resumes")
    rs.insert_many([{"_key": "p", "v": 1}, {"_key": "q", "v": 1}])
    upd = rs.update_many([{"_key": "p", "v": 2}, {"_key": "missing", "v": 2}])
    assert upd[0]["_key"] == "p" and "_old_rev" in upd[0] and upd[1].error_code == 1202
    rep = rs.replace_many([{"_key": "q", "w": 3}])
    assert rep[0]["_key"] == "q" and rs.get("q")["w"] == 3 and "v" not in rs.get("q")
    t0 = server.last_tick()
    rs.update_many([{"_key": "p", "v": 3}, {"_key": "q", "v": 3}])
    tid = server.wal_markers(DB, from_tick=t0)[0]["tid"]
    assert shape(server.wal_markers(DB, from_tick=t0)) == [
        (2200, tid, None),
        (2300, tid, "p"),
        (2300, tid, "q"),
        (2201, tid, None),
    ]


# ------------------------------------------------------------------ stream transactions


def test_stream_transaction_commit_is_one_group_and_invisible_before(server):
    db = client_db(server, DB)
    col = db.collection("resumes")
    before = server.last_tick()
    txn = db.begin_transaction(write=["resumes"])
    tcol = txn.collection("resumes")
    tcol.insert({"_key": "b", "name": "Bo"})
    tcol.insert({"_key": "c", "name": "Cy"})
    assert tcol.get("b")["name"] == "Bo" and col.get("b") is None  # not visible outside
    assert txn.transaction_status() == "running"
    assert server.last_tick() == before  # nothing written before the commit
    with pytest.raises(DocumentInsertError) as ei:  # the key is locked by the transaction
        col.insert({"_key": "b"})
    assert (ei.value.http_code, ei.value.error_code) == (409, 1200)
    assert txn.commit_transaction() is True
    assert col.get("c")["name"] == "Cy" and txn.transaction_status() == "committed"
    assert txn.commit_transaction() is True  # idempotent
    ms = server.wal_markers(DB, from_tick=before)
    tid = ms[0]["tid"]
    assert shape(ms) == [(2200, tid, None), (2300, tid, "b"), (2300, tid, "c"), (2201, tid, None)]
    assert tid != "0"
    batch = server.wal_batches(DB)[-1]
    assert (batch.label, str(batch.tid)) == ("transaction", tid)
    assert int(ms[0]["tick"]) == batch.start == int(ms[1]["tick"])
    assert int(ms[3]["tick"]) == batch.end


def test_stream_transaction_abort_writes_nothing_and_errors(server):
    server.create_collection(DB, "jobs")
    db = client_db(server, DB)
    before = server.last_tick()
    txn = db.begin_transaction(write="resumes", read="jobs")
    txn.collection("resumes").insert({"_key": "gone"})
    with pytest.raises(DocumentInsertError) as ei:  # jobs is not declared for writing
        txn.collection("jobs").insert({"_key": "j"})
    assert (ei.value.http_code, ei.value.error_code) == (400, 1652)
    assert txn.abort_transaction() is True
    assert server.last_tick() == before and db.collection("resumes").get("gone") is None
    with pytest.raises(TransactionCommitError) as ei:
        txn.commit_transaction()
    assert (ei.value.http_code, ei.value.error_code) == (400, 1653)
    assert_error(http(server, "PUT", "/_api/transaction/12345"), 404, 1655)
    assert_error(
        http(server, "POST", "/_api/document/resumes", json={}, headers={"x-arango-trx-id": "1"}),
        404,
        1655,
    )
    assert_error(
        http(server, "POST", "/_api/transaction/begin", json={"collections": {"write": "no"}}),
        404,
        1203,
    )
    assert_error(http(server, "POST", "/_api/transaction/begin", json={}), 400, 10)
    began = http(server, "POST", "/_api/transaction/begin", json={"collections": {}})
    assert began.status_code == 201 and began.json()["result"]["status"] == "running"
    server.trx_idle_timeout = 0.0  # it expires: commit answers 410/1654
    assert_error(
        http(server, "PUT", f"/_api/transaction/{began.json()['result']['id']}"), 410, 1654
    )


def test_restart_forgets_open_transactions_and_registrations_not_the_wal(server):
    db = client_db(server, DB)
    server.insert(DB, "resumes", {"_key": "kept"})
    assert tail(server, **{"from": 1, "syncerId": 7}).status_code == 200
    txn = db.begin_transaction(write="resumes")
    txn.collection("resumes").insert({"_key": "lost"})
    batches = server.wal_batches()
    server.restart()
    assert server.wal_batches() == batches and server.wal_clients() == []
    assert_error(http(server, "PUT", f"/_api/transaction/{txn.transaction_id}"), 404, 1655)
    assert server.documents(DB, "resumes").keys() == {"kept"}


# ------------------------------------------------------------------ what is written to the WAL


def test_single_operations_are_tid_0_and_ticks_follow_the_engine_counts(server):
    t0 = server.last_tick()
    a = server.insert(DB, "resumes", {"_key": "a", "n": 1})
    server.update(DB, "resumes", "a", {"n": 2})
    server.remove(DB, "resumes", "a")
    ms = server.wal_markers(DB, from_tick=t0)
    assert shape(ms) == [(2300, "0", "a"), (2300, "0", "a"), (2302, "0", "a")]
    ins, upd, rem = server.wal_batches(DB)[-3:]
    assert (ins.end - ins.start, upd.end - upd.start, rem.end - rem.start) == (1, 2, 1)
    assert [int(m["tick"]) for m in ms] == [ins.start, upd.start + 1, rem.end]
    assert ms[2]["data"] == {"_key": "a", "_rev": ms[1]["data"]["_rev"]} and ms[0]["data"] == a
    # an edge collection has the edge index (RocksDB: _from and _to), a persistent index one more
    server.create_collection(DB, "links", edge=True)
    server.create_index(DB, "links", ["w"])
    server.insert(DB, "links", {"_from": "a/1", "_to": "b/2", "w": 1})
    last = server.wal_batches(DB)[-1]
    assert last.end - last.start + 1 == 1 + 1 + 2 + 1


def test_collection_ddl_markers_and_cuid(server):
    db = client_db(server, DB)
    t0 = server.last_tick()
    col = db.create_collection("jobs")
    cuid = col.properties()["global_id"]
    assert re.fullmatch(rf"h{server.server_id:X}/\d+", cuid)
    col.insert({"_key": "j1"})
    col.add_index({"type": "persistent", "fields": ["title"], "unique": True})
    col.insert({"_key": "j2", "title": "x"})
    with pytest.raises(DocumentInsertError) as ei:  # the unique persistent index
        col.insert({"_key": "j3", "title": "x"})
    assert (ei.value.http_code, ei.value.error_code) == (409, 1210)
    iid = next(i["id"] for i in col.indexes() if i["type"] == "persistent")
    col.delete_index(iid)
    col.configure(sync=True)
    server.truncate_threshold = 0  # the range-delete path even for a small collection: 2004
    col.truncate()
    assert col.count() == 0
    ms = server.wal_markers(DB, from_tick=t0)
    assert [m["type"] for m in ms] == [2000, 2300, 2100, 2300, 2101, 2003, 2004]
    assert [m["data"]["_key"] for m in ms if m["type"] == 2300] == ["j1", "j2"]
    assert all(m["cuid"] == cuid for m in ms)
    assert ms[0]["data"]["name"] == "jobs" and ms[0]["data"]["globallyUniqueId"] == cuid
    assert ms[2]["data"]["fields"] == ["title"] and ms[4]["data"] == {"id": iid}
    assert ms[5]["data"]["waitForSync"] is True and set(ms[6]) == {"tick", "type", "db", "cuid"}
    # below the threshold a truncate is a transaction of removes
    server.truncate_threshold = 32 * 1024
    server.insert_many(DB, "jobs", [{"_key": "k1"}, {"_key": "k2"}])
    t1 = server.last_tick()
    col.truncate()
    tid = server.wal_markers(DB, from_tick=t1)[0]["tid"]
    assert shape(server.wal_markers(DB, from_tick=t1)) == [
        (2200, tid, None),
        (2302, tid, "k1"),
        (2302, tid, "k2"),
        (2201, tid, None),
    ]


def test_two_renames_show_the_latest_name_and_ids_resolve_with_it(server):
    t0 = server.last_tick()
    server.insert(DB, "resumes", {"_key": "a"})
    db = client_db(server, DB)
    assert db.collection("resumes").rename("cvs") is True
    server.rename_collection(DB, "cvs", "profiles")
    ms = server.wal_markers(DB, from_tick=t0)
    assert [(m["type"], m.get("data", {}).get("name")) for m in ms[1:]] == [
        (2002, "profiles"),
        (2002, "profiles"),
    ]
    assert ms[0]["data"]["_id"] == "profiles/a"
    assert db.collection("profiles").get("a")["_id"] == "profiles/a"
    assert_error(
        http(server, "PUT", "/_api/collection/profiles/rename", json={"name": "_graphs"}), 409, 1207
    )


def test_a_collection_dropped_before_the_read_shows_only_its_2001(server):
    t0 = server.last_tick()
    db = client_db(server, DB)
    tmp = db.create_collection("tmp")
    cuid = tmp.properties()["global_id"]
    tmp.insert({"_key": "a"})
    tmp.update({"_key": "a", "x": 1})
    tmp.insert_many([{"_key": "b"}])
    server.insert(DB, "resumes", {"_key": "kept"})
    assert db.delete_collection("tmp") is True
    ms = server.wal_markers(DB, from_tick=t0)
    tid = ms[0]["tid"]
    # the multi-document call's 2200/2201 stay (an empty transaction), its document does not
    assert shape(ms) == [
        (2200, tid, None),
        (2201, tid, None),
        (2300, "0", "kept"),
        (2001, None, None),
    ]
    assert ms[-1] == {"tick": ms[-1]["tick"], "type": 2001, "db": DB, "cuid": cuid}
    assert server.wal_batches(DB)[-1].label == "drop-data"  # range deletes: no marker
    assert_error(http(server, "DELETE", "/_api/collection/tmp"), 404, 1203)


def test_empty_transaction_intermediate_commits_and_abort_marker(server):
    t0 = server.last_tick()
    with server.transaction(DB) as t:  # only a system collection: filtered, 2200/2201 remain
        t.insert("_graphs", {"_key": "g"})
    tid = t.tid
    assert shape(server.wal_markers(DB, from_tick=t0)) == [(2200, tid, None), (2201, tid, None)]
    with_system = server.wal_markers(DB, from_tick=t0, include_system=True)
    assert shape(with_system) == [(2200, tid, None), (2300, tid, "g"), (2201, tid, None)]

    t1 = server.last_tick()
    with server.transaction(DB, intermediate_commit_count=2) as t:
        for k in ("a", "b", "c"):
            t.insert("resumes", {"_key": k})
        server.insert(DB, "resumes", {"_key": "between"})  # another commit between the groups
        t.insert("resumes", {"_key": "d"})
        t.insert("resumes", {"_key": "e"})
    tid = t.tid
    assert shape(server.wal_markers(DB, from_tick=t1)) == [
        (2200, tid, None),
        (2300, tid, "a"),
        (2300, tid, "b"),
        (2201, tid, None),
        (2300, "0", "between"),
        (2200, tid, None),
        (2300, tid, "c"),
        (2300, tid, "d"),
        (2201, tid, None),
        (2200, tid, None),
        (2300, tid, "e"),
        (2201, tid, None),
    ]
    # the same through HTTP: a multi-document call under --rocksdb.intermediate-commit-count
    server.intermediate_commit_count = 2
    t2 = server.last_tick()
    client_db(server, DB).collection("resumes").insert_many([{"_key": f"m{i}"} for i in range(3)])
    assert [m["type"] for m in server.wal_markers(DB, from_tick=t2)] == [
        2200, 2300, 2300, 2201, 2200, 2300, 2201,
    ]  # fmt: skip
    assert len({m["tid"] for m in server.wal_markers(DB, from_tick=t2)}) == 1

    t3 = server.last_tick()
    with server.transaction(DB) as t:
        t.insert("resumes", {"_key": "never"})
        t.abort(write_abort_marker=True)
    assert [m["type"] for m in server.wal_markers(DB, from_tick=t3)] == [2200, 2300, 2202]
    assert "never" not in server.documents(DB, "resumes")
    with pytest.raises(RuntimeError), server.transaction(DB) as t:
        t.insert("resumes", {"_key": "rolled-back"})
        raise RuntimeError
    assert server.last_tick() == server.wal_batches()[-1].end
    assert "rolled-back" not in server.documents(DB, "resumes")


def test_import_is_logged_only_when_asked(server):
    col = client_db(server, DB).collection("resumes")
    t0 = server.last_tick()
    col.import_bulk([{"_key": "s1"}])
    assert server.last_tick() == t0  # seeding "before the bulk copy"
    server.wal_imports = True
    col.import_bulk([{"_key": "s2"}, {"_key": "s3"}])
    assert [m["type"] for m in server.wal_markers(DB, from_tick=t0)] == [2200, 2300, 2300, 2201]


# ------------------------------------------------------------------ tailing: the wire format


def test_tail_200_wire_format_non_ascii_and_headers(server):
    t0 = server.last_tick()
    doc = server.insert(DB, "resumes", {"_key": "u", "name": "Zoë 日本語 🎉", "big": 2**63 + 1})
    resp = tail(server, **{"from": t0})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-arango-dump"  # no charset
    assert "x-arango-replication-active" not in resp.headers
    assert all(h in resp.headers for h in REPLICATION_HEADERS)
    body = resp.content
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    assert "Zoë 日本語 🎉".encode() in body and b"\\u" not in body  # raw UTF-8, compact
    assert int(resp.headers["content-length"]) == len(body)
    line = body[:-1].decode("utf-8")
    assert line == json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
    (m,) = markers(resp)
    assert list(m) == ["tick", "type", "db", "cuid", "tid", "data"] and m["data"] == doc
    assert isinstance(m["tick"], str) and m["data"]["big"] == 2**63 + 1
    batch = server.wal_batches(DB)[-1]
    assert (hdr(resp, "lastincluded"), hdr(resp, "lastscanned"), hdr(resp, "lasttick")) == (
        batch.start,
        batch.end,
        batch.end,
    )
    # checkmore is true only because the primary-index write follows the marker
    assert resp.headers["x-arango-replication-checkmore"] == "true"
    assert resp.headers["x-arango-replication-frompresent"] == "true"
    # python-arango reads the same
    got = client_db(server, DB).wal.tail(lower=str(t0), deserialize=True)
    assert got["content"] == [m] and got["check_more"] is True and "active" not in got


def test_tail_204_headers_idle_ahead_and_from_zero(server):
    server.insert(DB, "resumes", {"_key": "a"})
    batch = server.wal_batches(DB)[-1]
    idle = tail(server, **{"from": batch.end, "lastScanned": batch.end})
    assert idle.status_code == 204 and idle.content == b""
    assert idle.headers["content-length"] == "0"
    assert idle.headers["content-type"] == "application/x-arango-dump"
    assert {h: idle.headers[h] for h in REPLICATION_HEADERS} == {
        "x-arango-replication-checkmore": "false",
        "x-arango-replication-frompresent": "true",
        "x-arango-replication-lastincluded": "0",
        "x-arango-replication-lastscanned": str(batch.start),  # below `from`
        "x-arango-replication-lasttick": str(batch.end),
    }
    ahead = tail(server, **{"from": batch.end + 100})
    assert ahead.status_code == 204
    assert (hdr(ahead, "lastincluded"), hdr(ahead, "lastscanned")) == (0, 0)
    assert ahead.headers["x-arango-replication-frompresent"] == "false"
    everything = tail(server)  # from=0: the whole retained WAL, never "present"
    assert everything.status_code == 200
    assert everything.headers["x-arango-replication-frompresent"] == "false"
    assert client_db(server, DB).wal.tail(lower=str(batch.end))["content"] == ""


def test_tail_filters_other_databases_system_collections_and_collection_param(server):
    server.create_database("other")
    server.create_collection("other", "resumes")
    server.create_collection(DB, "jobs")
    t0 = server.last_tick()
    server.insert("other", "resumes", {"_key": "o"})
    server.insert(DB, "_graphs", {"_key": "g"})
    server.insert(DB, "jobs", {"_key": "j"})
    server.insert(DB, "resumes", {"_key": "r"})
    server.background_write()  # _statistics: never delivered, not even with includeSystem
    assert shape(markers(tail(server, **{"from": t0}))) == [(2300, "0", "j"), (2300, "0", "r")]
    assert [
        m["data"]["_key"] for m in markers(tail(server, **{"from": t0, "includeSystem": "true"}))
    ] == [
        "g",
        "j",
        "r",
    ]
    only = tail(server, **{"from": t0, "collection": "resumes"})
    assert shape(markers(only)) == [(2300, "0", "r")]
    glob = tail(server, db="_system", **{"from": t0, "global": "true"})
    assert [(m["db"], m["data"]["_key"]) for m in markers(glob)] == [
        ("other", "o"),
        (DB, "j"),
        (DB, "r"),
    ]
    t1 = server.last_tick()
    server.create_database("fresh")
    created = markers(tail(server, db="_system", **{"from": t1, "global": "true"}))
    assert created[0]["type"] == 1100 and created[0]["db"] == "fresh"
    server.drop_database("fresh")
    t2 = server.last_tick() - 1
    assert markers(tail(server, db="_system", **{"from": t2, "global": "true"})) == [
        {"tick": str(t2 + 1), "type": 1101, "db": "fresh"}
    ]


def test_to_is_inclusive_at_batch_granularity_and_skipped_batches(server):
    t0 = server.last_tick()
    server.insert_many(DB, "resumes", [{"_key": "a"}, {"_key": "b"}])
    server.insert(DB, "resumes", {"_key": "c"})
    trx, single = server.wal_batches(DB)[-2:]
    resp = tail(server, **{"from": t0, "to": trx.start})  # the batch starting at `to` comes whole
    ms = markers(resp)
    assert [m["type"] for m in ms] == [2200, 2300, 2300, 2201] and int(ms[-1]["tick"]) > trx.start
    assert hdr(resp, "lastscanned") == trx.end
    # a `from` inside a batch: that batch is skipped whole, later ones are read
    inside = tail(server, **{"from": trx.start + 1})
    assert (
        shape(markers(inside)) == [(2300, "0", "c")] and hdr(inside, "lastincluded") == single.start
    )


def test_transaction_split_across_two_responses_with_chunk_16k(server):
    t0 = server.last_tick()
    pad = "x" * 1000
    with server.transaction(DB) as t:
        for i in range(25):
            t.insert("resumes", {"_key": f"k{i:02d}", "pad": pad})
    server.insert(DB, "resumes", {"_key": "after"})
    trx = server.wal_batches(DB)[-2]
    # lastScanned = 0: a transaction always arrives whole, whatever its size
    whole = tail(server, **{"from": t0, "chunkSize": 16384, "lastScanned": 0})
    assert [m["type"] for m in markers(whole)] == [2200] + [2300] * 25 + [2201]
    assert hdr(whole, "lastscanned") == trx.start  # the body is full: the batch's start
    # lastScanned > 0: cut inside the transaction once the body passes 16 KiB
    first = tail(server, **{"from": t0, "chunkSize": 16384, "lastScanned": t0})
    ms1 = markers(first)
    assert ms1[0]["type"] == 2200 and 2201 not in [m["type"] for m in ms1]
    before_last_line = len(first.content) - len(first.content.split(b"\n")[-2]) - 1
    assert before_last_line <= 16384 < len(first.content)  # the line that passed it ends it
    assert hdr(first, "lastscanned") == trx.start  # the start of the batch it cut
    assert hdr(first, "lastincluded") == int(ms1[-1]["tick"])
    assert first.headers["x-arango-replication-checkmore"] == "true"
    second = tail(
        server,
        **{
            "from": hdr(first, "lastincluded"),
            "chunkSize": 16384,
            "lastScanned": hdr(first, "lastscanned"),
        },
    )
    ms2 = markers(second)
    assert ms2[0]["type"] == 2300 and ms2[0]["tid"] == ms1[0]["tid"]  # no repeated 2200
    keys = [m["data"]["_key"] for m in ms1[1:] + ms2 if m["type"] == 2300]
    assert keys == [f"k{i:02d}" for i in range(25)] + ["after"]
    assert [m["type"] for m in ms2][-2:] == [2201, 2300]
    # the trap: resuming a cut transaction with lastScanned=0 skips the rest of it silently
    lost = tail(server, **{"from": hdr(first, "lastincluded"), "lastScanned": 0})
    assert shape(markers(lost)) == [(2300, "0", "after")]


def test_worked_example_cursor_walk(server):
    """arangodb-wal.md §7 with this server's ticks: the same shapes and cursor rules."""
    db = client_db(server, DB)
    col = db.collection("resumes")
    cuid = col.properties()["global_id"]
    f = int(db.wal.last_tick()["tick"])
    pin = db.wal.tail(lower=str(f), upper=str(f), syncer_id=4711, client_info="etl-pin")
    assert pin["from_present"] is True and pin["content"] == ""
    assert server.wal_clients()[0]["lastServedTick"] == str(f)
    last_scanned = 0
    col.insert({"_key": "a", "name": "Ann", "skills": ["sql"]})
    col.update({"_key": "a", "skills": ["sql", "go"]})

    r1 = tail(server, **{"from": f, "lastScanned": last_scanned, "chunkSize": 1048576,
                         "syncerId": 4711, "clientInfo": "etl"})  # fmt: skip
    m1 = markers(r1)
    assert shape(m1) == [(2300, "0", "a"), (2300, "0", "a")]
    assert m1[1]["data"]["skills"] == ["sql", "go"] and m1[0]["cuid"] == cuid
    assert hdr(r1, "lastincluded") == int(m1[1]["tick"])
    assert hdr(r1, "lastscanned") == hdr(r1, "lasttick") == hdr(r1, "lastincluded") + 1
    assert r1.headers["x-arango-replication-checkmore"] == "true"
    f, last_scanned = hdr(r1, "lastincluded"), hdr(r1, "lastscanned")

    txn = db.begin_transaction(write="resumes")
    txn.collection("resumes").insert({"_key": "b", "name": "Bo"})
    txn.collection("resumes").insert({"_key": "c", "name": "Cy"})
    txn.commit_transaction()
    col.delete("a")
    r2 = tail(server, **{"from": f, "lastScanned": last_scanned, "syncerId": 4711})
    m2 = markers(r2)
    tid = m2[0]["tid"]
    assert shape(m2) == [
        (2200, tid, None),
        (2300, tid, "b"),
        (2300, tid, "c"),
        (2201, tid, None),
        (2302, "0", "a"),
    ]
    ticks = [int(m["tick"]) for m in m2]
    assert ticks[0] == ticks[1] and ticks[2] == ticks[1] + 2 and ticks[3] == ticks[2] + 1
    assert ticks[4] == ticks[3] + 2 and m2[4]["data"]["_rev"] == m1[1]["data"]["_rev"]
    assert hdr(r2, "lastincluded") == hdr(r2, "lastscanned") == hdr(r2, "lasttick") == ticks[4]
    assert r2.headers["x-arango-replication-checkmore"] == "false"
    f, last_scanned = hdr(r2, "lastincluded"), hdr(r2, "lastscanned")

    r3 = tail(server, **{"from": f, "lastScanned": last_scanned, "syncerId": 4711})
    assert r3.status_code == 204 and hdr(r3, "lastincluded") == 0
    assert hdr(r3, "lastscanned") == hdr(r3, "lasttick") - 1 == f - 1  # no skip-ahead
    assert server.wal_clients()[0]["lastServedTick"] == str(f)


def test_put_tail_with_empty_array_is_get(server):
    t0 = server.last_tick()
    server.insert(DB, "resumes", {"_key": "a"})
    put = tail(server, method="PUT", **{"from": t0, "firstRegularTick": 0})
    assert put.status_code == 400  # no body: not an array
    put = http(server, "PUT", "/_api/wal/tail", params={"from": t0}, json=[])
    assert put.status_code == 200 and put.content == tail(server, **{"from": t0}).content
    assert_error(http(server, "PUT", "/_api/wal/tail", params={"from": t0}, json={}), 400, 400)


# ------------------------------------------------------------------ retention


def test_frompresent_false_after_pruning_and_registrations(server):
    server.insert(DB, "resumes", {"_key": "a"})
    f = server.last_tick()
    for i in range(3):
        server.insert(DB, "resumes", {"_key": f"n{i}"})
    assert tail(server, **{"from": f}).headers["x-arango-replication-frompresent"] == "true"
    # a tail with a syncerId registers it at `from` and keeps the WAL from there
    assert tail(server, **{"from": f, "syncerId": 4711, "clientInfo": "etl"}).status_code == 200
    (client,) = server.wal_clients()
    assert client["syncerId"] == "4711" and client["clientInfo"] == "etl"
    assert client["lastServedTick"] == str(f) and TIME_RE.match(client["expires"])
    tick_min = server.prune_wal()
    assert (
        tick_min <= f
        and tail(server, **{"from": f}).headers["x-arango-replication-frompresent"] == "true"
    )
    # lapsed registrations protect nothing
    server.wal_client_ttl = 0.0
    tail(server, **{"from": f, "syncerId": 4711})
    assert server.wal_clients() == []
    tick_min = server.prune_wal()
    assert tick_min > f and tick_min == server.wal_batches()[-1].start
    gone = tail(server, **{"from": f})
    assert gone.headers["x-arango-replication-frompresent"] == "false"
    assert [m["data"]["_key"] for m in markers(gone)] == ["n2"]  # only the last batch is left
    rng = client_db(server, DB).wal.tick_ranges()
    assert (int(rng["tick_min"]), int(rng["tick_max"])) == (tick_min, server.last_tick())


def test_forced_pruning_ignores_registrations(server):
    server.insert(DB, "resumes", {"_key": "a"})
    f = server.last_tick()
    tail(server, **{"from": f, "serverId": 99})  # the older identity also registers
    server.insert(DB, "resumes", {"_key": "b"})
    server.insert(DB, "resumes", {"_key": "c"})
    assert server.prune_wal() <= f and server.wal_clients()[0]["serverId"] == "99"
    assert server.prune_wal(force=True) > f
    resp = tail(server, **{"from": f})
    assert resp.headers["x-arango-replication-frompresent"] == "false"
    assert [m["data"]["_key"] for m in markers(resp)] == ["c"]


def test_dump_batches_register_and_pin(server):
    db = client_db(server, DB)
    batch = db.replication.create_dump_batch(ttl=600)
    assert batch["last_tick"] == str(server.last_tick()) and server.wal_clients() == []
    assert db.replication.extend_dump_batch(batch["id"], 300) is True
    assert db.replication.delete_dump_batch(batch["id"]) is True
    assert_error(http(server, "DELETE", f"/_api/replication/batch/{batch['id']}"), 404, 1600)
    assert_error(http(server, "PUT", "/_api/replication/batch/1", json={"ttl": 1}), 404, 1600)
    made = http(
        server, "POST", "/_api/replication/batch", params={"syncerId": 5, "state": "true"},
        json={"ttl": 600},
    )  # fmt: skip
    assert made.status_code == 200 and set(made.json()) == {"id", "lastTick", "state"}
    assert server.wal_clients()[0]["lastServedTick"] == made.json()["lastTick"]
    assert_error(http(server, "POST", "/_api/replication/batch", data=b"[]"), 400, 400)
    assert_error(
        http(server, "POST", "/_api/replication/batch", params={"syncerId": "0"}, json={}), 400, 10
    )
    assert_error(http(server, "GET", "/_api/replication/batch"), 405, 405)
    inv = db.replication.inventory(made.json()["id"], include_system=False)
    (params,) = [c["parameters"] for c in inv["collections"]]
    assert (params["name"], params["global_id"]) == (
        "resumes",
        db.collection("resumes").properties()["global_id"],
    )
    assert inv["state"]["last_log_tick"] == str(server.last_tick())
    assert_error(http(server, "GET", "/_api/replication/inventory"), 404, 1600)


# ------------------------------------------------------------------ other endpoints, errors


def test_last_tick_range_and_logger_state_shapes(server):
    server.insert(DB, "resumes", {"_key": "a"})
    latest = server.last_tick()
    lt = http(server, "GET", "/_api/wal/lastTick").json()
    assert list(lt) == ["time", "tick", "server"] and lt["tick"] == str(latest)
    assert TIME_RE.match(lt["time"]) and lt["server"] == {
        "version": server.version,
        "serverId": str(server.server_id),
    }
    rng = http(server, "GET", "/_api/wal/range").json()
    assert list(rng) == ["time", "tickMin", "tickMax", "server"]
    assert (rng["tickMin"], rng["tickMax"]) == ("1", str(latest))
    ls = http(server, "GET", "/_api/replication/logger-state").json()
    assert ls["state"] == {
        "running": True,
        "lastLogTick": str(latest),
        "lastUncommittedLogTick": str(latest),
        "totalEvents": latest,
        "time": ls["state"]["time"],
    }
    assert ls["server"]["engine"] == "rocksdb" and ls["clients"] == []
    db = client_db(server, DB)
    assert db.wal.last_tick()["tick"] == str(latest)
    assert db.replication.logger_state()["state"]["total_events"] == latest
    assert_error(http(server, "POST", "/_api/replication/logger-state"), 405, 405)


def test_wal_errors(server):
    assert_error(tail(server, syncerId="0"), 400, 10)
    assert_error(tail(server, syncerId="01"), 400, 10)
    assert_error(tail(server, syncerId="abc"), 400, 10)
    assert_error(tail(server, syncerId=""), 400, 10)
    assert tail(server, serverId="abc").status_code == 200  # parses as 0: ignored
    assert_error(tail(server, **{"from": 5, "to": 4}), 400, 400)
    assert_error(tail(server, **{"to": 0}), 400, 400)
    assert_error(tail(server, **{"global": "true"}), 403, 11)  # outside _system
    assert_error(tail(server, collection="nope"), 404, 1203)
    assert_error(http(server, "GET", "/_api/wal/nothing"), 400, 400)
    assert_error(http(server, "GET", "/_api/wal"), 400, 400)
    assert_error(http(server, "POST", "/_api/wal/tail"), 400, 400)
    assert_error(http(server, "PUT", "/_api/wal/lastTick"), 400, 400)
    assert server.wal_clients() == []  # errors do not register
    # admin = read-write on _system
    server.add_user("reader", "pw", [DB])
    server.add_user("sysro", "pw", ["_system", DB], admin=False)
    server.add_user("admin", "pw", ["_system", DB])
    for user in ("reader", "sysro"):
        assert_error(tail(server, auth=(user, "pw")), 403, 11)
        assert_error(http(server, "GET", "/_api/wal/lastTick", auth=(user, "pw")), 403, 11)
        assert_error(http(server, "GET", "/_api/wal/range", auth=(user, "pw")), 403, 11)
    assert http(server, "GET", "/_api/replication/logger-state", auth=("reader", "pw")).ok
    assert http(server, "POST", "/_api/replication/batch", json={}, auth=("reader", "pw")).ok
    assert tail(server, auth=("admin", "pw")).status_code == 200
    assert_error(tail(server, auth=("root", "wrong")), 401, 11)
    reader = client_db(server, DB, username="reader", password="pw")
    with pytest.raises(WALTailError) as ei:
        reader.wal.tail()
    assert ei.value.error_code == 403  # python-arango reports the HTTP status here
    # coordinator
    server.set_coordinator(True)
    assert_error(tail(server), 501, 1470)
    assert_error(http(server, "GET", "/_api/wal/lastTick"), 501, 1470)
    assert_error(tail(server, auth=("reader", "pw")), 501, 1470)  # before the admin check
    assert_error(http(server, "GET", "/_api/replication/logger-state"), 501, 9)
    assert_error(http(server, "POST", "/_api/replication/batch", json={}), 400, 400)
    with pytest.raises(WALLastTickError):
        client_db(server, DB).wal.last_tick()


def test_faults_on_wal_routes(server):
    server.insert(DB, "resumes", {"_key": "a"})
    server.fail_unavailable(1, routes=["wal_tail"])
    assert_error(tail(server, **{"from": 1, "syncerId": 1}), 503, 503)
    assert server.wal_clients() == []  # not executed
    server.drop_connection(1, routes=["wal_tail"], mid_body=True)
    with pytest.raises(requests.exceptions.RequestException):
        tail(server, **{"from": 1, "syncerId": 1})
    assert server.wal_clients()[0]["syncerId"] == "1"  # executed, then cut
    assert tail(server, **{"from": 1}).status_code == 200
    server.fail(1, routes=["wal_last_tick"], status=500, error_num=4, message="internal")
    assert_error(http(server, "GET", "/_api/wal/lastTick"), 500, 4)
    server.fail(1, routes=["logger_state"])
    assert_error(http(server, "GET", "/_api/replication/logger-state"), 503, 21003)
    db = client_db(server, DB)
    server.fail(1, routes=["document_insert"])
    with pytest.raises(DocumentInsertError) as ei:
        db.collection("resumes").insert({"_key": "b"})
    assert ei.value.http_code == 503 and "b" not in server.documents(DB, "resumes")
    server.fail(1, routes=["transaction_begin"])
    with pytest.raises(TransactionInitError):
        db.begin_transaction(write="resumes")
    routes = [(r.route, r.status, r.fault) for r in server.requests]
    assert ("wal_tail", 200, "truncate") in routes and ("wal_tail", 503, "error") in routes
