"""pytest fixtures for the fake ArangoDB server.

Register in tests/conftest.py with `pytest_plugins = ["tests.fakearango.fixtures"]`, or import
the fixtures into a test module (`from tests.fakearango.fixtures import arango_server`).

    arango_server          a started FakeArango (ICU-like collation), stopped after the test;
                           root password ROOT_PASSWORD, database "atspro" created
    arango_server_bytewise the same with bytewise key order
    arango_module_server   one server per test module (faults are cleared after each use)

Helpers: seed(server, db, collection, docs, edge=False) creates the collection (Python side)
and imports the documents over HTTP with python-arango's import_bulk; arango_settings(server,
**overrides) gives etl's ArangoSettings for the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from .server import FakeArango

ROOT_PASSWORD = "rootpw"
DATABASE = "atspro"


def client_db(
    server: FakeArango, db: str = DATABASE, username: str = "root", password: str = ROOT_PASSWORD
):
    """A python-arango StandardDatabase on the server (no transport retries)."""
    from arango import ArangoClient
    from arango.http import DefaultHTTPClient

    client = ArangoClient(
        hosts=server.url, http_client=DefaultHTTPClient(request_timeout=10, retry_attempts=0)
    )
    return client.db(db, username=username, password=password)


def seed(
    server: FakeArango,
    db: str,
    collection: str,
    docs: Iterable[dict],
    *,
    edge: bool = False,
    chunk: int = 10000,
    password: str = ROOT_PASSWORD,
) -> int:
    """Create `collection` and import `docs` through POST /_api/import (python-arango import_bulk)."""
    server.create_database(db)
    server.create_collection(db, collection, edge=edge)
    col = client_db(server, db, password=password).collection(collection)
    total = 0
    buf: list[dict] = []

    def flush() -> None:
        nonlocal total
        if buf:
            res = col.import_bulk(buf, halt_on_error=True, details=True)
            assert res["errors"] == 0, res
            total += res["created"] + res["updated"]
            buf.clear()

    for d in docs:
        buf.append(d)
        if len(buf) >= chunk:
            flush()
    flush()
    return total


def arango_settings(server: FakeArango, database: str = DATABASE, **overrides: Any):
    from etl.settings import ArangoSettings

    values: dict[str, Any] = {
        "url": server.url,
        "database": database,
        "username": "root",
        "password": ROOT_PASSWORD,
        "request_timeout": 5.0,
        "retry_attempts": 4,
    }
    values.update(overrides)
    return ArangoSettings(**values)


def _server(collation: str) -> Iterator[FakeArango]:
    server = FakeArango(ROOT_PASSWORD, collation=collation)
    server.start()
    server.create_database(DATABASE)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def arango_server() -> Iterator[FakeArango]:
    yield from _server("icu")


@pytest.fixture
def arango_server_bytewise() -> Iterator[FakeArango]:
    yield from _server("bytewise")


@pytest.fixture(scope="module")
def _arango_module_server() -> Iterator[FakeArango]:
    yield from _server("icu")


@pytest.fixture
def arango_module_server(_arango_module_server: FakeArango) -> Iterator[FakeArango]:
    yield _arango_module_server
    _arango_module_server.clear_faults()
