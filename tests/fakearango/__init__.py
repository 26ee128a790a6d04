"""An ArangoDB-compatible HTTP server for tests; see server.FakeArango and fixtures.py."""

from .server import (
    ALL_ROUTES,
    CURSOR_ROUTES,
    DOCUMENT_ROUTES,
    REPLICATION_ROUTES,
    TRANSACTION_ROUTES,
    WAL_ROUTES,
    FakeArango,
    Fault,
)

__all__ = [
    "FakeArango",
    "Fault",
    "CURSOR_ROUTES",
    "ALL_ROUTES",
    "WAL_ROUTES",
    "DOCUMENT_ROUTES",
    "REPLICATION_ROUTES",
    "TRANSACTION_ROUTES",
]
