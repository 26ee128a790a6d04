"""etl.canonical against a real server: for every JSON value shape, Python's rendering is
byte-identical to PostgreSQL's (msgspec text)::jsonb::text, and both digests agree."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import jsonutil
from etl.canonical import canonical, digest, digest_sql, loads_exact

CONTROL = "".join(chr(i) for i in range(1, 0x20))

VALUES = [
    # scalars
    None,
    True,
    False,
    0,
    1,
    -1,
    2**53 + 1,
    -(2**53 + 1),
    2**63,
    -(2**63),
    2**63 - 1,
    2**64 + 1,
    -(2**64 + 1),
    123456789012345678901234567890,
    10**40,
    1e308,
    -1e308,
    1e-7,
    1.5e-7,
    0.1,
    2.0,
    -0.0,
    0.0,
    1.0000001,
    1e16,
    1.7976931348623157e308,
    5e-324,
    123456789.123,
    -2.5,
    100.0,
    1e22,
    1e21,
    1e-5,
    3.141592653589793,
    "",
    "plain",
    'quote " and backslash \\ and slash /',
    CONTROL,
    "\x7f DEL",
    "\u2028\u2029",
    "é ü ß 中文 😀 \U0001f600 \U0010ffff",
    "\ufeff bom",
    "tab\there\nnewline\r\b\f",
    "\\u0000 literally",
    "\u00e9" * 3,
    # containers
    {},
    [],
    [[]],
    [{}],
    {"a": {}},
    {"a": []},
    {
        "b": 1,
        "a": 2,
        "aa": 3,
        "ab": 4,
        "B": 5,
        "": 6,
        "é": 7,
        "z": 8,
        "zz": 9,
        "éa": 10,
        "😀": 11,
        "中": 12,
        "\x01": 13,
        '"': 14,
        "\\": 15,
        "a b": 16,
        "Z": 17,
    },
    {
        "work_experience": [
            {
                "company": "Acme",
                "position": "Dev",
                "skills": ["Python", "SQL"],
                "is_current": True,
                "start_date": "2020-01",
                "end_date": None,
            }
        ],
        "contact_info": {"full_name": 'Jöhn "J" Doe', "links": [], "email": "j@x.io"},
        "numbers": [1, 1.0, 1.0000001, -0.0, 2**64 + 1, 1e-7, 0.5],
        "nested": {"a": {"b": {"c": [1, [2, [3, {}]]]}}},
    },
    [1, "two", 3.0, None, True, {"k": [False]}],
    {"key" * 30: 1, "k": 2, "x" * 300: 3},
    {c: i for i, c in enumerate(CONTROL)},
    [float("nan"), float("inf"), float("-inf")],  # msgspec writes these as null
]


@pytest.fixture(scope="module")
def conn(pg_admin_dsn):
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        yield c


def server(conn, values: list) -> list[tuple[str, int]]:
    """(jsonb::text, digest) of each value's msgspec text, computed by PostgreSQL."""
    texts = [jsonutil.dumps_str(v) for v in values]
    rows = conn.execute(
        f"select t::jsonb::text, {digest_sql('t::jsonb::text')} from unnest(%s::text[]) with ordinality u(t, n)"
        " order by n",
        (texts,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_every_shape_matches_the_server(conn):
    got = server(conn, VALUES)
    for v, (text, dig) in zip(VALUES, got):
        assert canonical(v) == text, repr(v)
        assert digest(v) == dig, repr(v)


def test_each_value_inside_an_object_and_an_array(conn):
    wrapped = [{"v": v, "w": [v, v]} for v in VALUES]
    for v, (text, dig) in zip(wrapped, server(conn, wrapped)):
        assert canonical(v) == text, repr(v)
        assert digest(v) == dig


def test_specific_renderings():
    assert canonical(-0.0) == "0.0"
    assert canonical(1e-7) == "0.0000001"
    assert canonical(1e308) == "1" + "0" * 308
    assert canonical({"b": 1, "a": [1, {}], "aa": None}) == '{"a": [1, {}], "b": 1, "aa": null}'
    assert canonical("\x01\x1f\u2028") == '"\\u0001\\u001f\u2028"'


def test_server_text_round_trips_exactly(conn):
    """loads_exact keeps the server's digits, so canonical() of a parsed server text is that text."""
    for v, (text, _) in zip(VALUES, server(conn, VALUES)):
        assert canonical(loads_exact(text)) == text, repr(v)


def test_digest_is_signed_int64():
    for v in VALUES:
        assert -(2**63) <= digest(v) < 2**63


# -- arbitrary JSON -------------------------------------------------------------------------------
# Strings without U+0000 and surrogates: the transform rejects (or escapes) those before loading.
_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(_text, kids, max_size=5),
    max_leaves=25,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(_json, min_size=1, max_size=20))
def test_arbitrary_json_matches_the_server(conn, values):
    for v, (text, dig) in zip(values, server(conn, values)):
        assert canonical(v) == text, repr(v)
        assert digest(v) == dig, repr(v)


def test_the_fast_string_escape_equals_the_rule_by_rule_one():
    """canonical._string (msgspec, in C) against _string_re (the rules of docs/design.md, which
    the tests above pin against the server): every code point of the first planes and a sample
    beyond, lone surrogates included (the slow way)."""
    from etl.canonical import _string, _string_re

    points = [*range(0x3000), *range(0xD7F0, 0xE010), *range(0xFFF0, 0x10100, 7), 0x10FFFF]
    for cp in points:
        s = f"a{chr(cp)}b"
        assert _string(s) == _string_re(s), hex(cp)
