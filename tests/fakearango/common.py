"""Replies, ArangoDB error bodies and small parsers shared by the server's route modules."""

from __future__ import annotations

import re
from typing import Any

KEY_RE = re.compile(r"^[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$")


class Reply:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def error(status: int, num: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, {"error": True, "errorNum": num, "errorMessage": message, "code": status}, headers
    )


class ApiError(Exception):
    """Raised by a route (or the Python-side API) to answer with an ArangoDB error body;
    `extra` adds attributes such as the current `_rev` of a 412 precondition failure."""

    def __init__(self, status: int, num: int, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.num, self.extra = status, num, extra
        self.reply = error(status, num, message)
        if extra:
            self.reply.body.update(extra)


def parse_bool(value: str | None, default: bool = True) -> bool:
    """A boolean query parameter as the test server has always read it ("" counts as true)."""
    if value is None:
        return default
    return value.strip().lower() in ("", "1", "true", "yes", "on")
