"""The text PostgreSQL prints for a jsonb value, computed in Python, and its 64-bit digest:
both sides of `etl reconcile` hash the same text. The rules, each pinned against a real server
by tests/test_canonical.py, are in docs/design.md ("Canonical JSON text").
"""

from __future__ import annotations

import hashlib
import math
import re
from decimal import Decimal
from typing import Any

import msgspec

__all__ = ["canonical", "digest", "digest_text", "digest_sql", "loads_exact", "jsonb_key_order"]

_encode_float = msgspec.json.Encoder().encode
_exact_decoder = msgspec.json.Decoder(float_hook=Decimal)

_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
for _i in range(0x20):
    _ESCAPES.setdefault(chr(_i), f"\\u{_i:04x}")


def _escape_char(m: re.Match) -> str:
    return _ESCAPES[m.group()]


def _string(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, s) + '"'


def jsonb_key_order(k: str) -> tuple[int, str]:
    """Sort key of an object key in jsonb: byte length, then bytes (= code points for UTF-8)."""
    return (len(k) if k.isascii() else len(k.encode("utf-8")), k)


def _decimal(d: Decimal) -> str:
    if not d.is_finite():
        return "null"
    s = format(d, "f")
    if s.startswith("-") and not d:  # numeric has no negative zero
        s = s[1:]
    return s


def _float(f: float) -> str:
    if not math.isfinite(f):
        return "null"  # what msgspec writes, so what the server stores
    return _decimal(Decimal(_encode_float(f).decode("ascii")))


def _render(v: Any, out: list) -> None:
    # order of the checks: str and dict are by far the most common; bool before int
    if isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, dict):
        if not v:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k in sorted(v, key=jsonb_key_order):
            if not first:
                out.append(", ")
            first = False
            out.append(_string(k))
            out.append(": ")
            _render(v[k], out)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        if not v:
            out.append("[]")
            return
        out.append("[")
        first = True
        for x in v:
            if not first:
                out.append(", ")
            first = False
            _render(x, out)
        out.append("]")
    elif v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, float):
        out.append(_float(v))
    elif isinstance(v, Decimal):
        out.append(_decimal(v))
    else:
        raise TypeError(f"not a JSON value: {type(v).__name__}")


def canonical(v: Any) -> str:
    """PostgreSQL's jsonb::text of v as our loader stores it."""
    if isinstance(v, str):
        return _string(v)
    out: list[str] = []
    _render(v, out)
    return "".join(out)


def digest_text(text: str) -> int:
    """The first 8 bytes of md5(text, UTF-8) as a signed int64 (big-endian)."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big", signed=True)


def digest(v: Any) -> int:
    return digest_text(canonical(v))


def digest_sql(text_expr: str) -> str:
    """SQL for the same digest of a text expression: ('x' || first 16 hex of md5)::bit(64)::bigint."""
    return f"(('x' || left(md5({text_expr}), 16))::bit(64)::bigint)"


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON (e.g. the server's jsonb::text) keeping every number's digits (Decimal)."""
    return _exact_decoder.decode(text)
