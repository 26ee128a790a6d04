"""JSON in and out, fast and exact.

msgspec decodes about as fast as orjson but keeps integers beyond 2^64 exact (orjson turns them
into floats, which would change a document's digits). Strings with lone UTF-16 surrogates
("\\ud800") are valid JSON that msgspec refuses; those documents fall back to the standard
library so they can still be read, and the transform then rejects or encodes them by policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")


def loads(data: bytes | str) -> Any:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        # Lone surrogates: msgspec refuses them, the standard library keeps them.
        # Anything that is really malformed fails again here, with a precise position.
        return json.loads(data, parse_constant=_reject_constant)


def loads_first_wins(data: bytes) -> tuple[Any, list[str]]:
    """Decode, keeping the FIRST value of an attribute name that an object repeats (what
    arangorestore --cleanup-duplicate-attributes keeps; arangodump-format.md), and return the
    repeated names. A line that re-encodes to its own bytes has no repeat (a repeat would be
    missing from the re-encoding), so only the rare line that does not (whitespace, escapes,
    number spellings, or a repeat) pays for the pair-by-pair decode."""
    obj = loads(data)
    try:
        again = _encoder.encode(obj)
    except UnicodeEncodeError:  # lone surrogates
        again = b""
    line = data.rstrip(b"\r\n ")
    # "\/" is a legal spelling of "/" (ArangoDB writes it); it never touches a repeat
    if again == line or (b"\\/" in line and again == line.replace(b"\\/", b"/")):
        return obj, []
    repeated: list[str] = []
    obj = json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_first_wins(repeated))
    return obj, repeated


def _first_wins(repeated: list[str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k, v in pairs:
            if k in d:
                repeated.append(k)
            else:
                d[k] = v
        return d

    return hook


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    try:
        return _encoder.encode(obj)
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def dumps_str(obj: Any) -> str:
    return dumps(obj).decode("utf-8")


def dumps_sorted(obj: Any) -> bytes:
    """Compact JSON with object keys sorted: a stable form for hashing."""
    try:
        return _sorted_encoder.encode(obj)
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()


def jsonpath_any(path: str, operand: str, values: Iterable[str | int]) -> str:
    """`PATH ? (OPERAND == v1 || OPERAND == v2 ...)`: a jsonpath filter that a GIN index on
    jsonb answers. JSON literals are jsonpath's (strings quoted and escaped as JSON)."""
    return f"{path} ? ({' || '.join(f'{operand} == {json.dumps(v)}' for v in values)})"


def type_name(v: Any) -> str:
    """A JSON value's type in words, for messages ("null", "a number", "an object", ...)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__
