"""The change stream's rules (arangodb-wal.md §3.4): single operations at once, a transaction at
its commit marker and never before, nothing of an aborted one, other databases and system
collections left out, collection DDL surfaced, a stray transaction marker refused."""

from __future__ import annotations

import pytest

from etl.errors import PermanentError
from etl.sync.changes import Change, ChangeStream, CollectionEvent

CUID = "h1F9E0D2C3B4A/2081"


def stream(refresh=None) -> ChangeStream:
    return ChangeStream("hr", {CUID: "resumes"}, refresh or (lambda: {}))


def doc(tick, key, tid="0", **data):
    return {
        "tick": str(tick), "type": 2300, "db": "hr", "cuid": CUID, "tid": tid,
        "data": {"_key": key, "_id": f"resumes/{key}", "_rev": "_x", **data},
    }  # fmt: skip


def test_the_worked_example_of_the_spec_in_commit_order():
    s = stream()
    first = s.feed([doc(5120417, "a", name="Ann"), doc(5120420, "a", name="Ann", skills=["go"])])
    assert [(c.key, c.doc["name"]) for c in first] == [("a", "Ann"), ("a", "Ann")]
    trx = [
        {"tick": "5120422", "type": 2200, "tid": "74590", "db": "hr"},
        doc(5120422, "b", tid="74590"),
        doc(5120424, "c", tid="74590"),
    ]
    assert s.feed(trx) == [] and s.buffered  # nothing before the commit marker
    out = s.feed(
        [
            {"tick": "5120425", "type": 2201, "tid": "74590", "db": "hr"},
            {"tick": "5120427", "type": 2302, "db": "hr", "cuid": CUID, "tid": "0",
             "data": {"_key": "a", "_rev": "_y"}},
        ]
    )  # fmt: skip
    assert [(c.key, c.doc is None) for c in out] == [("b", False), ("c", False), ("a", True)]
    assert not s.buffered


def test_an_aborted_transaction_leaves_nothing_and_other_databases_are_dropped():
    s = stream()
    out = s.feed(
        [
            {"tick": "10", "type": 2200, "tid": "7", "db": "hr"},
            doc(10, "x", tid="7"),
            {"tick": "12", "type": 2202, "tid": "7", "db": "hr"},
            dict(doc(13, "y"), db="other"),
        ]
    )
    assert out == [] and s.aborted == 1 and not s.buffered


def test_a_document_of_a_transaction_whose_start_was_not_read_is_refused():
    with pytest.raises(PermanentError, match="whose start was not read"):
        stream().feed([doc(10, "x", tid="99")])


def test_an_unknown_cuid_is_looked_up_again_and_system_collections_are_left_out():
    s = stream(lambda: {"hNEW/1": "jobs", "hSYS/2": "_jobs"})
    out = s.feed(
        [
            dict(doc(10, "j1"), cuid="hNEW/1"),
            {"tick": "11", "type": 2302, "db": "hr", "cuid": "hSYS/2", "tid": "0",
             "data": {"_key": "q"}},
        ]
    )  # fmt: skip
    assert out == [Change(10, "jobs", "j1", out[0].doc)]


def test_collection_ddl_is_surfaced_with_the_current_name():
    s = stream()
    out = s.feed(
        [
            {"tick": "20", "type": 2004, "db": "hr", "cuid": CUID},
            {"tick": "21", "type": 2002, "db": "hr", "cuid": CUID, "data": {"name": "cvs"}},
            {"tick": "22", "type": 2001, "db": "hr", "cuid": CUID},
        ]
    )
    assert [(e.type, e.collection, e.what) for e in out if isinstance(e, CollectionEvent)] == [
        (2004, "resumes", "truncated"),
        (2002, "resumes", "renamed to 'cvs'"),
        (2001, "cvs", "dropped"),
    ]


def test_a_change_of_a_collection_nobody_can_name_is_refused_not_dropped():
    s = stream(lambda: {})
    with pytest.raises(PermanentError, match="does not list"):
        s.feed(
            [{"tick": "9", "type": 2302, "db": "hr", "cuid": "hGONE/7", "tid": "0",
              "data": {"_key": "k"}}]
        )  # fmt: skip


def test_a_user_without_admin_rights_is_told_so_not_wrong_password(arango_server):
    """/_api/wal/* answers 403/11 to a user who is not admin (arangodb-wal.md §1.1): the
    password is right, the missing right is administrate access to _system."""
    from etl.sources.arango import ArangoSource
    from etl.sources.wal import WalReader
    from tests.fakearango.fixtures import arango_settings

    arango_server.add_user("reader", "pw", ["atspro"], admin=False)
    with ArangoSource(arango_settings(arango_server, username="reader", password="pw")) as src:
        for call in (lambda r: r.last_tick(), lambda r: r.tail(1, 0, "4711")):
            with pytest.raises(PermanentError) as ei:
                call(WalReader(src))
            text = f"{ei.value} {ei.value.hint}"
            assert "wrong username or password" not in text
            assert "may not read the write-ahead log" in text and "_system" in text
