"""Recognition of the few AQL queries `etl` sends. Not an AQL engine.

Queries are matched by their whitespace-normalised text (keywords case-insensitive). Anything
else is a parse error (400/1501), which is what a client sending an unexpected query deserves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COLL = r"(?:@@(?P<cparam>\w+)|(?P<cname>[A-Za-z_][\w\-]*))"
_VAR = r"(?P<var>[A-Za-z_]\w*)"
_S = r"\s*"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # FOR d IN @@c FILTER d._key > @last SORT d._key LIMIT @n RETURN d
    (
        "keyset",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL} FILTER (?P=var)\._key{_S}>{_S}@(?P<last>\w+) SORT (?P=var)\._key(?: ASC)?"
            rf" LIMIT (?:@(?P<nparam>\w+)|(?P<nlit>\d+)) RETURN (?P=var)$",
            re.I,
        ),
    ),
    # FOR d IN @@c FILTER d._key > @last AND d._key <= @until SORT d._key LIMIT @n RETURN d
    (
        "keyset_range",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL} FILTER (?P=var)\._key{_S}>{_S}@(?P<last>\w+) AND (?P=var)\._key{_S}<={_S}@(?P<until>\w+)"
            rf" SORT (?P=var)\._key(?: ASC)? LIMIT (?:@(?P<nparam>\w+)|(?P<nlit>\d+)) RETURN (?P=var)$",
            re.I,
        ),
    ),
    # FOR d IN @@c FILTER d._key > @last AND d._key <= @until COLLECT WITH COUNT INTO n RETURN n
    (
        "count_range",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL} FILTER (?P=var)\._key{_S}>{_S}@(?P<last>\w+) AND (?P=var)\._key{_S}<={_S}@(?P<until>\w+)"
            rf" COLLECT WITH COUNT INTO (?P<out>[A-Za-z_]\w*) RETURN (?P=out)$",
            re.I,
        ),
    ),
    # FOR d IN @@c SORT d._key LIMIT @offset, 1 RETURN d._key   (a key at a position: range bounds)
    (
        "key_at",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL} SORT (?P=var)\._key(?: ASC)? LIMIT @(?P<offset>\w+){_S},{_S}1"
            rf" RETURN (?P=var)\._key$",
            re.I,
        ),
    ),
    # FOR d IN @@c FILTER d._key > @last COLLECT WITH COUNT INTO n RETURN n
    (
        "count_after",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL} FILTER (?P=var)\._key{_S}>{_S}@(?P<last>\w+)"
            rf" COLLECT WITH COUNT INTO (?P<out>[A-Za-z_]\w*) RETURN (?P=out)$",
            re.I,
        ),
    ),
    # FOR d IN @@c COLLECT WITH COUNT INTO n RETURN n
    (
        "count_all",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL} COLLECT WITH COUNT INTO (?P<out>[A-Za-z_]\w*) RETURN (?P=out)$",
            re.I,
        ),
    ),
    # RETURN LENGTH(@@c) / RETURN COUNT(@@c)
    ("count_all", re.compile(rf"^RETURN (?:LENGTH|COUNT){_S}\({_S}{_COLL}{_S}\)$", re.I)),
    # FOR d IN @@c [SORT d._key] RETURN d   (primary index order)
    (
        "scan",
        re.compile(
            rf"^FOR {_VAR} IN {_COLL}(?: SORT (?P=var)\._key(?: ASC)?)? RETURN (?P=var)$", re.I
        ),
    ),
]

_BIND = re.compile(r"@(@?)(\w+)")


@dataclass
class Parsed:
    kind: str
    collection_param: str | None  # bind parameter name without '@' (for @@c: "c")
    collection_name: str | None
    last_param: str | None
    until_param: str | None
    offset_param: str | None
    limit_param: str | None
    limit_literal: int | None
    declared: set[str]  # bind keys as sent by the client: "@c", "last", "n"


class AqlError(Exception):
    def __init__(self, status: int, error_num: int, message: str):
        super().__init__(message)
        self.status, self.error_num, self.message = status, error_num, message


def normalise(query: str) -> str:
    q = re.sub(r"\s+", " ", query).strip()
    return re.sub(r"\s*>\s*", " > ", q)


def parse(query: str) -> Parsed:
    if not isinstance(query, str) or not query.strip():
        raise AqlError(400, 1502, "query is empty")
    q = normalise(query)
    declared = {("@" + m.group(2)) if m.group(1) else m.group(2) for m in _BIND.finditer(q)}
    for kind, pattern in _PATTERNS:
        m = pattern.match(q)
        if m:
            gd = m.groupdict()
            return Parsed(
                kind,
                gd.get("cparam"),
                gd.get("cname"),
                gd.get("last"),
                gd.get("until"),
                gd.get("offset"),
                gd.get("nparam"),
                int(gd["nlit"]) if gd.get("nlit") else None,
                declared,
            )
    near = query.strip()[:30]
    raise AqlError(
        400,
        1501,
        f"AQL: syntax error, unexpected identifier near '{near}' at position 1:1 (while parsing)",
    )
