"""String order for `_key` comparison: ICU-like or bytewise.

ArangoDB compares strings with ICU collation for the database's language. The ICU-like order
here approximates the root collation for the characters a `_key` may hold: punctuation first
(in DUCET order), then digits, then letters compared case-insensitively, with ties broken by
case (lower before upper). Bytewise is plain UTF-8 byte order (= code point order). The server
uses ONE comparator for FILTER and SORT, so a client that compares keys itself is caught by
switching between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# DUCET-like primary order of ASCII punctuation and symbols (root collation, non-ignorable).
_PUNCT = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"
_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _tables() -> tuple[dict[int, str], dict[int, str]]:
    primary: dict[int, str] = {}
    tertiary: dict[int, str] = {}
    rank = 0x100  # start above ASCII so translated strings never collide with raw chars

    def nxt() -> str:
        nonlocal rank
        rank += 1
        return chr(rank)

    primary[ord(" ")] = nxt()
    for ch in _PUNCT:
        primary[ord(ch)] = nxt()
    for ch in _DIGITS:
        primary[ord(ch)] = nxt()
    for ch in _LETTERS:
        w = nxt()
        primary[ord(ch)] = w
        primary[ord(ch.upper())] = w
    for code in range(128):
        tertiary[code] = "0"
        if chr(code).isupper():
            tertiary[code] = "1"
    return primary, tertiary


_PRIMARY, _TERTIARY = _tables()


def icu_key(s: str) -> tuple[str, str, str]:
    """Sort key: primary (case-folded, punctuation < digits < letters), then case, then code points."""
    return (s.translate(_PRIMARY), s.translate(_TERTIARY), s)


def bytewise_key(s: str) -> str:
    return s  # code point order == UTF-8 byte order


COLLATIONS: dict[str, Callable[[str], Any]] = {"icu": icu_key, "bytewise": bytewise_key}


def type_rank(v: Any) -> int:
    """AQL type order: null < bool < number < string < array < object."""
    if v is None:
        return 0
    if isinstance(v, bool):
        return 1
    if isinstance(v, (int, float)):
        return 2
    if isinstance(v, str):
        return 3
    if isinstance(v, list):
        return 4
    return 5
