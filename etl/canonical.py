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


def _escape_char(m: re.Match[str]) -> str:
    return _ESCAPES[m.group()]


def _string_re(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, s) + '"'


_encode_str = msgspec.json.Encoder().encode


def _string(s: str) -> str:
    # msgspec escapes exactly what jsonb prints escaped (quote, backslash, \b \f \n \r \t, other
    # controls as \u00XX, nothing else), in C; a lone surrogate it refuses goes the slow way
    try:
        return _encode_str(s).decode("utf-8")
    except UnicodeEncodeError:
        return _string_re(s)


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


# Documents repeat the same shapes: the jsonb order of a dict's keys (and a key's quoted text)
# is computed once per distinct key tuple (key), at most _CACHE entries each.
_CACHE = 4096
_key_order: dict[tuple[str, ...], list[str]] = {}
_quoted_keys: dict[str, str] = {}


def _ordered(v: dict[str, Any]) -> list[str]:
    keys = tuple(v)
    order = _key_order.get(keys)
    if order is None:
        order = sorted(keys, key=jsonb_key_order)
        if len(_key_order) < _CACHE:
            _key_order[keys] = order
    return order


def _key(k: str) -> str:
    q = _quoted_keys.get(k)
    if q is None:
        q = _string(k)
        if len(_quoted_keys) < _CACHE:
            _quoted_keys[k] = q
    return q


def _render(v: Any, out: list[str]) -> None:
    # exact types first (what the decoders and the transform make), by frequency; then the
    # subclasses through isinstance; bool before int
    t = type(v)
    if t is str:
        out.append(_string(v))
    elif t is dict:
        if not v:
            out.append("{}")
            return
        sep = "{"
        for k in _ordered(v):
            x = v[k]
            if type(x) is str:  # the most common leaf, without a call
                out.append(f"{sep}{_key(k)}: {_string(x)}")
            else:
                out.append(f"{sep}{_key(k)}: ")
                _render(x, out)
            sep = ", "
        out.append("}")
    elif t is list or t is tuple:
        if not v:
            out.append("[]")
            return
        sep = "["
        for x in v:
            if type(x) is str:
                out.append(sep + _string(x))
            else:
                out.append(sep)
                _render(x, out)
            sep = ", "
        out.append("]")
    elif v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif t is int:
        out.append(str(v))
    elif t is float:
        out.append(_float(v))
    else:
        _render_other(v, out)


def _render_other(v: Any, out: list[str]) -> None:
    """Subclasses of the JSON types, and Decimal (loads_exact)."""
    if isinstance(v, Decimal):
        out.append(_decimal(v))
    elif isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, dict):
        _render(dict(v), out)
    elif isinstance(v, (list, tuple)):
        _render(list(v), out)
    elif isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, float):
        out.append(_float(v))
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
