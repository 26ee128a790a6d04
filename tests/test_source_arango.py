"""ArangoSource against the fake ArangoDB server over real HTTP (python-arango is the client)."""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc

import pytest

from etl.errors import PermanentError, TransientError
from etl.sources.arango import COUNT_AFTER_QUERY, KEYSET_QUERY, ArangoSource
from etl.sources.base import Batch, CollectionInfo, Source
from tests.fakearango import FakeArango
from tests.fakearango.collation import COLLATIONS
from tests.fakearango.fixtures import (  # fixtures come from the plugin registered in conftest.py
    DATABASE,
    ROOT_PASSWORD,
    arango_settings,
    seed,
)

FAST = {"backoff_initial": 0.005, "backoff_max": 0.05}


def make_source(
    server: FakeArango, *, cursor_batch_size: int | None = None, **settings
) -> ArangoSource:
    settings.setdefault("retry_attempts", 8)
    return ArangoSource(
        arango_settings(server, **settings), cursor_batch_size=cursor_batch_size, **FAST
    )


def server_order(server: FakeArango, collection: str) -> list[str]:
    """The server's key order (its collation), computed on the test side for comparison only."""
    return sorted(server.documents(DATABASE, collection), key=COLLATIONS[server.collation])


def read_all(
    src: ArangoSource, collection: str, batch_size: int, after: str | None = None
) -> tuple[list[str], list[Batch]]:
    batches = list(src.batches(collection, batch_size, after=after))
    return [d["_key"] for b in batches for d in b.docs], batches


@pytest.fixture
def resumes(arango_server: FakeArango) -> FakeArango:
    seed(
        arango_server,
        DATABASE,
        "resumes",
        [{"_key": f"r{i:03d}", "i": i, "text": "x" * (i % 7)} for i in range(103)],
    )
    return arango_server


# ------------------------------------------------------------------ basics


def test_protocol_collections_and_description(resumes):
    seed(
        resumes,
        DATABASE,
        "job_research",
        [{"_key": "e1", "_from": "jobs/1", "_to": "research/2"}],
        edge=True,
    )
    resumes.create_collection(DATABASE, "empty")
    src = make_source(resumes)
    assert isinstance(src, Source)
    assert src.collections() == [
        CollectionInfo("empty", "document", 0),
        CollectionInfo("job_research", "edge", 1),
        CollectionInfo("resumes", "document", 103),
    ]
    assert src.collection("resumes") == CollectionInfo("resumes", "document", 103)
    assert ROOT_PASSWORD not in src.description and ROOT_PASSWORD not in repr(src)
    assert resumes.url in src.description and DATABASE in src.description
    src.close()


def test_reads_everything_once_in_server_order_with_positions(resumes):
    src = make_source(resumes)
    keys, batches = read_all(src, "resumes", 10)
    assert keys == server_order(resumes, "resumes")
    assert [len(b.docs) for b in batches] == [10] * 10 + [3]
    assert all(b.position == b.docs[-1]["_key"] and b.collection == "resumes" for b in batches)
    assert all(b.nbytes > 0 for b in batches)
    assert batches[0].nbytes > batches[-1].nbytes  # bytes follow the amount read
    sent = [r for r in resumes.requests if r.route == "cursor_create"]
    assert (
        len(sent) == 11
    )  # a fresh query per batch (the last page is short, so no empty page is asked for)
    assert resumes.cursors == {}  # every cursor closed


def test_query_warnings_reach_the_batch(resumes):
    resumes.query_warnings = [{"code": 1562, "message": "division by zero"}]
    batches = list(make_source(resumes).batches("resumes", 60))
    assert batches[0].warnings == ("AQL warning 1562: division by zero",)


def test_exact_multiple_of_batch_size_ends_with_no_empty_batch(arango_server):
    seed(arango_server, DATABASE, "c", [{"_key": f"k{i}"} for i in range(20)])
    keys, batches = read_all(make_source(arango_server), "c", 5)
    assert (
        len(keys) == 20 and len(set(keys)) == 20 and [len(b.docs) for b in batches] == [5, 5, 5, 5]
    )


def test_query_is_keyset_with_bind_variables_only(resumes):
    src = make_source(resumes, cursor_batch_size=4)
    list(src.batches("resumes", 10))
    creates = [r for r in resumes.requests if r.route == "cursor_create"]
    assert creates
    # every further cursor batch goes through /_api/cursor/{id}/{batchId} (allowRetry)
    assert all(r.route != "cursor_next" for r in resumes.requests)
    assert any(r.route == "cursor_batch" for r in resumes.requests)
    assert KEYSET_QUERY == "FOR d IN @@c FILTER d._key > @last SORT d._key LIMIT @n RETURN d"


def test_resume_from_every_batch_boundary(resumes):
    src = make_source(resumes)
    keys, batches = read_all(src, "resumes", 7)
    for i, b in enumerate(batches):
        rest, _ = read_all(src, "resumes", 7, after=b.position)
        assert rest == keys[(i + 1) * 7 :], f"after batch {i}"
        assert src.remaining("resumes", b.position) == len(rest)
    assert src.remaining("resumes") == len(keys) == 103
    assert COUNT_AFTER_QUERY.startswith("FOR d IN @@c FILTER d._key > @last")


def test_empty_collection(arango_server):
    arango_server.create_collection(DATABASE, "empty")
    src = make_source(arango_server)
    assert list(src.batches("empty", 100)) == []
    assert src.remaining("empty") == 0 and src.remaining("empty", "anything") == 0


def test_edge_collection(arango_server):
    edges = [
        {"_key": f"e{i}", "_from": f"research/{i}", "_to": f"jobs/{i}", "w": i} for i in range(9)
    ]
    seed(arango_server, DATABASE, "job_research", edges, edge=True)
    src = make_source(arango_server)
    assert src.collection("job_research").type == "edge"
    keys, batches = read_all(src, "job_research", 4)
    assert keys == server_order(arango_server, "job_research")
    doc = next(d for b in batches for d in b.docs if d["_key"] == "e3")
    assert (doc["_from"], doc["_to"], doc["_id"]) == ("research/3", "jobs/3", "job_research/e3")


def test_values_are_exact(arango_server):
    doc = {
        "_key": "v",
        "big": 2**63 - 1,
        "neg": -(2**63),
        "beyond": 2**80 + 3,
        "nul": "a\u0000b",
        "_future": [1, {"_x": None}],
        "f": 1.5,
    }
    seed(arango_server, DATABASE, "values", [doc])
    [got] = [d for b in make_source(arango_server).batches("values", 10) for d in b.docs]
    for k, v in doc.items():
        assert got[k] == v and type(got[k]) is type(v)


# ------------------------------------------------------------------ key characters and collation

ALLOWED_PUNCT = "_-:.@()+,=;$!*'%"


def odd_keys() -> list[str]:
    keys = (
        {c for c in ALLOWED_PUNCT}
        | {f"a{c}b" for c in ALLOWED_PUNCT}
        | {f"{c}z" for c in ALLOWED_PUNCT}
    )
    keys |= {
        "a",
        "A",
        "b",
        "B",
        "z",
        "Z",
        "0",
        "9",
        "10",
        "100",
        "99",
        "aB",
        "Ab",
        "ab",
        "AB",
        "a0",
        "a_",
        "A_",
        "_A",
        "_a",
        "x" * 254,
        "%41",
        "a%2Fb",
        "(x)",
        "'q'",
        "$1",
        "!",
        "*",
        "mixed-Case_01:x.y@z",
    }
    return sorted(keys)


@pytest.mark.parametrize("collation", ["icu", "bytewise"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_every_allowed_key_character_read_once(collation, batch_size):
    with FakeArango(ROOT_PASSWORD, collation=collation) as server:
        server.create_database(DATABASE)
        keys = odd_keys()
        seed(server, DATABASE, "odd", [{"_key": k, "k": k} for k in keys])
        src = make_source(server, cursor_batch_size=2)
        got, batches = read_all(src, "odd", batch_size)
        assert sorted(got) == keys and len(got) == len(set(got))
        assert got == server_order(server, "odd")  # the server's order, whatever it is
        if collation == "icu":
            assert got != sorted(keys)  # so a client comparing bytes would go wrong here
        mid = batches[len(batches) // 2].position
        assert src.remaining("odd", mid) == len(got) - got.index(mid) - 1
        rest, _ = read_all(src, "odd", batch_size, after=mid)
        assert rest == got[got.index(mid) + 1 :]


# ------------------------------------------------------------------ faults

FAULTS = {
    "503 burst": lambda s: s.fail(3, skip=2),
    "503/503 burst beyond python-arango's resends": lambda s: s.fail_unavailable(4, skip=2),
    "dropped connection after advancing": lambda s: s.drop_connection(1, skip=1),
    "dropped connection mid-body": lambda s: s.drop_connection(2, skip=1, mid_body=True),
    "slow response past timeout": lambda s: s.slow(0.8, 1, routes=["cursor_batch"], skip=1),
    "expired cursor": lambda s: s.expire_cursor_on(1, skip=2),
    "429 from a proxy": lambda s: s.proxy_429(2, skip=1),
    "412 queue time": lambda s: s.fail(
        2, status=412, error_num=21004, message="queue time violated", skip=1
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_document_exactly_once_under_fault(resumes, name, caplog):
    src = make_source(resumes, cursor_batch_size=3, request_timeout=0.4)
    fault = FAULTS[name](resumes)
    with caplog.at_level(logging.WARNING, logger="etl.sources.arango"):
        keys, _ = read_all(src, "resumes", 10)
    assert fault.count == 0 and fault.fired >= 1, "the fault was injected"
    assert keys == server_order(resumes, "resumes")
    retries = [
        r for r in caplog.records if r.name == "etl.sources.arango" and "attempt" in r.getMessage()
    ]
    if name == "dropped connection after advancing":
        assert (
            not retries
        )  # python-arango's resend + allowRetry absorb it: the same batch is sent again
        assert any(r.status is None for r in resumes.requests)
    else:
        assert retries and "attempt 1 of 8" in retries[0].getMessage()


def test_metadata_reads_retry_too(resumes):
    src = make_source(resumes)
    get_routes = ["collection_list", "collection_properties", "collection_count"]
    a = resumes.fail(2, routes=get_routes)  # GET + 503: requests' RetryError
    b = resumes.fail_unavailable(
        4, routes=get_routes
    )  # 503/503: python-arango's resends, then ConnectionAbortedError
    c = resumes.proxy_429(1, routes=get_routes)
    assert [c.name for c in src.collections()] == ["resumes"]
    assert src.remaining("resumes") == 103
    assert (a.count, b.count, c.count) == (0, 0, 0)


def test_retries_logged_with_attempt_numbers_then_transient_error(resumes, caplog):
    src = make_source(resumes, retry_attempts=3)
    resumes.fail(10)
    with (
        caplog.at_level(logging.WARNING, logger="etl.sources.arango"),
        pytest.raises(TransientError) as ei,
    ):
        list(src.batches("resumes", 10))
    msgs = [r.getMessage() for r in caplog.records if r.name == "etl.sources.arango"]
    assert len(msgs) == 2 and "attempt 1 of 3" in msgs[0] and "attempt 2 of 3" in msgs[1]
    assert "\n" not in str(ei.value) and "503" in str(ei.value) and "3 attempts" in str(ei.value)


def test_retry_after_from_a_proxy_is_honoured(resumes):
    slept: list[float] = []
    src = ArangoSource(
        arango_settings(resumes), backoff_initial=0.001, backoff_max=0.2, sleep=slept.append
    )
    resumes.proxy_429(1, retry_after="0.15")
    keys, _ = read_all(src, "resumes", 50)
    assert len(keys) == 103 and slept and slept[0] >= 0.15


def test_collection_dropped_mid_run_is_permanent(resumes):
    src = make_source(resumes)
    it = src.batches("resumes", 10)
    next(it)
    resumes.drop_collection(DATABASE, "resumes")
    with pytest.raises(PermanentError, match="'resumes' does not exist"):
        next(it)


# ------------------------------------------------------------------ configuration errors


def _one_line_permanent(make) -> str:
    with pytest.raises(PermanentError) as ei:
        make()
    msg = str(ei.value)
    assert "\n" not in msg and ROOT_PASSWORD not in msg and "Traceback" not in msg
    return msg


def test_wrong_password(arango_server):
    msg = _one_line_permanent(lambda: make_source(arango_server, password="wrong"))
    assert arango_server.url in msg and "wrong username or password" in msg and "wrong'" not in msg
    msg = _one_line_permanent(lambda: make_source(arango_server, password="wrong", auth="jwt"))
    assert "wrong username or password" in msg


def test_unknown_database(arango_server):
    msg = _one_line_permanent(lambda: make_source(arango_server, database="nodb"))
    assert "database 'nodb' does not exist" in msg
    arango_server.add_user("reader", "pw", databases=[DATABASE])
    msg = _one_line_permanent(
        lambda: make_source(arango_server, database="nodb", username="reader", password="pw")
    )
    assert "wrong username or password" in msg and "nodb" in msg  # the server does not say which


def test_unknown_collection_lists_existing(resumes):
    resumes.create_collection(DATABASE, "jobs")
    src = make_source(resumes)
    for call in (
        lambda: src.collection("nope"),
        lambda: list(src.batches("nope", 10)),
        lambda: src.remaining("nope", "x"),
        lambda: src.remaining("nope"),
    ):
        msg = _one_line_permanent(call)
        assert "'nope' does not exist" in msg and "existing collections: jobs, resumes" in msg
        assert "_graphs" not in msg


def test_unreachable_port_gives_up_after_retries(caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from etl.settings import ArangoSettings

    st = ArangoSettings(
        url=f"http://127.0.0.1:{port}", database=DATABASE, password=ROOT_PASSWORD, retry_attempts=3
    )
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="etl.sources.arango"):
        msg = _one_line_permanent(lambda: ArangoSource(st, **FAST))
    assert f"127.0.0.1:{port}" in msg and "refused" in msg.lower() and "3 attempts" in msg
    assert time.monotonic() - t0 < 5
    assert len([r for r in caplog.records if "attempt" in r.getMessage()]) == 2


def test_connect_retries_overload_then_succeeds_or_gives_up(arango_server):
    arango_server.fail(2, routes=["collection_list", "open_auth"])
    assert make_source(arango_server).collections() == []
    arango_server.fail(2, routes=["open_auth"])
    assert make_source(arango_server, auth="jwt").collections() == []
    arango_server.fail(10, routes=["open_auth"])
    msg = _one_line_permanent(lambda: make_source(arango_server, auth="jwt", retry_attempts=2))
    assert "503" in msg and "2 attempts" in msg


# ------------------------------------------------------------------ JWT


def test_jwt_reads_and_reauthenticates_after_token_expiry(resumes, caplog):
    resumes.session_timeout = 1
    src = make_source(resumes, auth="jwt")
    it = src.batches("resumes", 40)
    first = next(it)
    time.sleep(2.1)  # python-arango stops refreshing once its copy of exp has passed
    with caplog.at_level(logging.INFO, logger="etl.sources.arango"):
        rest = [d["_key"] for b in it for d in b.docs]
    keys = [d["_key"] for d in first.docs] + rest
    assert keys == server_order(resumes, "resumes")
    assert any("re-authenticating" in r.getMessage() for r in caplog.records)
    assert sum(1 for r in resumes.requests if r.route == "open_auth") >= 2


# ------------------------------------------------------------------ scale


def test_done_when_50k_with_503_burst_and_dropped_connections(arango_server):
    """The issue's done-when: 50k documents, batches of 5000, a 503 burst and dropped connections."""
    n = 50_000
    seed(arango_server, DATABASE, "big", ({"_key": f"{i:06d}", "i": i} for i in range(n)))
    src = make_source(arango_server, cursor_batch_size=1000)
    burst = arango_server.fail(4, skip=7)
    drop = arango_server.drop_connection(1, skip=13)
    cut = arango_server.drop_connection(1, skip=30, mid_body=True)
    t0 = time.monotonic()
    seen: dict[str, int] = {}
    nbatches = 0
    for b in src.batches("big", 5000):
        nbatches += 1
        assert len(b.docs) <= 5000
        for d in b.docs:
            seen[d["_key"]] = seen.get(d["_key"], 0) + 1
    assert (burst.count, drop.count, cut.count) == (0, 0, 0)
    assert len(seen) == n and set(seen.values()) == {1}
    assert nbatches == 10
    assert time.monotonic() - t0 < 20


def _peak_while_streaming(server: FakeArango, name: str) -> tuple[int, int]:
    src = make_source(server)
    gc.collect()
    tracemalloc.start()
    try:
        total = 0
        for b in src.batches(name, 2000):
            total += len(b.docs)
            del b
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    src.close()
    return total, peak


def test_memory_stays_flat_while_streaming(arango_server):
    make = lambda i, key: {"i": i, "name": f"doc {i}", "tags": ["a", "b"]}  # noqa: E731
    arango_server.add_generated_collection(DATABASE, "g20k", 20_000, make)
    arango_server.add_generated_collection(DATABASE, "g100k", 100_000, make)
    n20, peak20 = _peak_while_streaming(arango_server, "g20k")
    n100, peak100 = _peak_while_streaming(arango_server, "g100k")
    assert (n20, n100) == (20_000, 100_000)
    # five times the documents, (about) the same peak: only one batch is ever held
    print(f"tracemalloc peak: 20k docs {peak20} B, 100k docs {peak100} B")
    assert peak100 < peak20 * 1.5 + 512 * 1024, (peak20, peak100)


# ------------------------------------------------------------------ TLS


@pytest.fixture
def tls_server(tmp_path):
    import ssl

    from tests.tls import self_signed

    cert, key = self_signed(tmp_path, "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with FakeArango(ROOT_PASSWORD, ssl_context=ctx) as server:
        server.create_database(DATABASE)
        yield server, str(cert)


def test_tls_ca_file_verify_off_and_untrusted(tls_server):
    server, cert = tls_server
    assert server.url.startswith("https://")
    server.create_collection(DATABASE, "c").docs.update(
        {"a": {"_key": "a", "_id": "c/a", "_rev": "_1"}}
    )
    src = make_source(server, ca_file=cert)
    assert [d["_key"] for b in src.batches("c", 10) for d in b.docs] == ["a"]
    src = make_source(server, verify_tls=False)
    assert src.collection("c").count == 1
    t0 = time.monotonic()
    msg = _one_line_permanent(lambda: make_source(server))  # self-signed, not in the system store
    assert "TLS failed" in msg and "certificate verify failed" in msg and server.url in msg
    assert time.monotonic() - t0 < 3  # not retried


def test_read_documents_by_key_with_every_allowed_character(arango_server):
    """Reads by key (the follower's verifier, the fallback) send one documented GET per key,
    percent-encoded: `%41` must read the document `%41`, not `A`; a missing key is left out."""
    from etl.sources.arango import read_documents

    keys = odd_keys()
    seed(arango_server, DATABASE, "resumes", [{"_key": k, "k": k} for k in keys if k != "A"])
    src = make_source(arango_server)
    try:
        found = read_documents(src.arango_db(), "resumes", keys, src.retry)
    finally:
        src.close()
    assert set(found) == set(keys) - {"A"}
    assert all(found[k]["k"] == k and found[k]["_key"] == k for k in found)


def test_forbidden_is_not_reported_as_a_wrong_password(resumes):
    """403 errorNum 11 (arangodb-http.md §0/§1: a forbidden operation, e.g. a collection the
    user may not read) comes with a right password; only a 401 means wrong credentials."""
    src = make_source(resumes)
    resumes.fail(1, status=403, error_num=11, message="forbidden")
    msg = _one_line_permanent(lambda: read_all(src, "resumes", 100))
    assert "wrong username or password" not in msg and "is forbidden for user 'root'" in msg
