"""Property-based tests (hypothesis) over arbitrary JSON documents: unicode with astral
characters, U+0000, lone surrogates, integers far beyond 2^64, -0.0, 1e308, deep nesting, huge
strings and odd keys.

The transform is deterministic, lossless (a Row rebuilds its source exactly) and total (every
document ends as exactly one Row, Reject, Unmapped or EdgeLink, a Reject always with a reason).
On a real database, a migration of arbitrary documents loses nothing: every source document is
either a loaded row or in etl_rejects for that run, never both.
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile
from pathlib import Path

import psycopg
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from etl import jsonutil
from etl.migrate import Migration
from etl.transform import EdgeLink, Reject, Row, Unmapped
from tests.datagen import write_jsonl
from tests.helpers import settings_for
from tests.test_transform import assert_lossless, same_json, transformer

T_REJECT = transformer()  # the default policies: NUL and lone surrogates rejected
T_ESCAPE = transformer(nul_in_strings="escape", lone_surrogates="escape")
OUTCOMES = (Row, Reject, Unmapped, EdgeLink)
COLLECTIONS = ("resumes", "jobs", "documents", "job_research", "task_results", "no_such_collection")

# -- strategies --------------------------------------------------------------------------------

ODD = [
    "\x00",
    "\ud800",
    "\udfff",
    "\udbff\udc00"[0],
    "\U0001f600",
    "\U0010ffff",
    "\u202e",
    "\ufeff",
    "é",
    "\\",
    '"',
    "'",
    ";",
    "$",
    ".",
    "\n",
    "\t",
]
chars = st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(ODD))
texts = st.text(chars, max_size=20)
huge_text = st.builds(
    lambda s, n: s * n, st.text(chars, min_size=1, max_size=4), st.integers(20_000, 200_000)
)
odd_keys = st.one_of(
    texts,
    st.sampled_from(
        [
            "",
            "_key",
            "_id",
            "_rev",
            "_from",
            "_to",
            "_etl_escaped",
            "$",
            "$ref",
            "a.b",
            "a..b",
            ".",
            'q"uote',
            "semi;colon",
            "'; drop table resumes; --",
            "_private",
            "__proto__",
            "metadata",
            "parsed_data",
            "extra",
            "original",
            "escaped",
            "\x00",
            "k\x00ey",
            "\ud800",
            "user_id",
            "resume_data",
            "type",
            "status",
            "created_at",
            "file_metadata",
            "mapped_from",
        ]
    ),
)
ints = st.one_of(
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 2**64 + 1, -(2**64), 10**40]),
)
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 1e308, -1e308, 5e-324, 2.2250738585072014e-308, 1.5, 100.0, 1e20]),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_keys, inner, max_size=4)
    ),
    max_leaves=25,
)


def _nest(value, depth: int, as_list: bool):
    for _ in range(depth):
        value = [value] if as_list else {"c": value}
    return value


deep = st.builds(_nest, json_values, st.integers(50, 1200), st.booleans())
values = st.one_of(json_values, json_values, json_values, deep, huge_text)
keys = st.one_of(
    st.from_regex(r"[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,30}", fullmatch=True),
    st.sampled_from(["", "k1", "\x00", "k\x00", "\ud800", "a\nb", "'; drop table resumes; --"]),
    texts,
    ints,
)

# What the fields the mapping reads may hold: a plausible value or anything at all.
PLAUSIBLE = {
    "user_id": st.one_of(st.sampled_from(["u1", "user_7", " ", ""]), texts, ints, floats),
    "status": st.sampled_from(["completed", "pending", "failed", "processing", "bogus"]),
    "created_at": st.sampled_from(
        [
            "2025-08-16T21:54:43.160344",
            "2025-08-16T21:54:43Z",
            "2019",
            "2019-03",
            "not a date",
            1723845283160,
            "2025-02-30T00:00:00",
        ]
    ),
    "updated_at": st.sampled_from(["2025-08-16T21:54:43.160344+02:00", 0, -1, 10**20]),
    "file_metadata": st.fixed_dictionaries(
        {
            "filename": st.one_of(st.just("cv.pdf"), texts, huge_text),
            "size": ints,
            "content_type": texts,
        }
    ),
    "resume_data": st.dictionaries(
        st.sampled_from(["summary", "skills", "work_experience", "education", "contact_info", "x"]),
        json_values,
        max_size=4,
    ),
    "job_title": texts,
    "company": texts,
    "title": texts,
    "description": texts,
    "type": st.sampled_from(["optimization", "research", "note", None, 5]),
    "resume_id": st.one_of(st.sampled_from(["r1", "8123"]), ints, json_values),
    "job_id": st.one_of(st.just("j1"), json_values),
    "optimized_data": st.dictionaries(
        st.sampled_from(["atsScore", "content", "x"]), json_values, max_size=3
    ),
    "_from": st.sampled_from(["jobs/j1", "jobs/", "resumes/r1", "jobs", "", None]),
    "_to": st.sampled_from(["documents/d1", "documents/", "jobs/j1", None]),
    "is_active": st.sampled_from([True, False, "yes", None, 1]),
    "salary_range": st.one_of(st.fixed_dictionaries({"min": ints, "max": ints}), json_values),
}


@st.composite
def documents(draw, collection: str | None = None):
    """An arbitrary object, mostly shaped like something the mapping reads."""
    coll = collection or draw(st.sampled_from(COLLECTIONS))
    doc: dict = {}
    if draw(st.integers(0, 19)):  # mostly a usable key; sometimes none or a non-string
        key = draw(keys)
        doc["_key"] = key
        doc["_id"] = f"{coll}/{key}"
        doc["_rev"] = draw(st.sampled_from(["_r", "_hV1---", ""]))
    for name in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=8, unique=True)):
        doc[name] = draw(st.one_of(PLAUSIBLE[name], PLAUSIBLE[name], values))
    doc.update(draw(st.dictionaries(odd_keys, values, max_size=4)))
    return Case(coll, doc)


class Case(tuple):
    """(collection, document) with a short repr: hypothesis prints failing examples, and a
    document nested 1,000 levels deep is too deep for its pretty printer."""

    def __new__(cls, coll, doc):
        return super().__new__(cls, (coll, doc))

    def __repr__(self) -> str:
        import reprlib

        r = reprlib.Repr()
        r.maxlevel, r.maxstring, r.maxother, r.maxdict, r.maxlist = 6, 200, 200, 30, 30
        return f"Case({self[0]!r}, {r.repr(self[1])})"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


def not_an_object():
    return st.builds(
        Case, st.sampled_from(COLLECTIONS), st.one_of(scalars, st.lists(json_values, max_size=3))
    )


any_input = st.one_of(
    documents(),
    documents(),
    documents(),
    documents("resumes"),
    documents("documents"),
    not_an_object(),
)

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _fingerprint(out) -> bytes:
    """The whole outcome as bytes, JSON types included (1 vs 1.0, -0.0 vs 0.0)."""
    if isinstance(out, Row):
        body = {
            "t": "row",
            "type": out.document_type,
            "key": out.key,
            "values": out.values,
            "warnings": list(out.warnings),
        }
    elif isinstance(out, Reject):
        body = {
            "t": "reject",
            "c": out.collection,
            "key": out.key,
            "reason": out.reason,
            "doc": out.document,
        }
    elif isinstance(out, Unmapped):
        body = {"t": "unmapped", "c": out.collection, "key": out.key, "reason": out.reason}
    else:
        body = {
            "t": "edge",
            "key": out.key,
            "target": out.target_id,
            "job": out.job_id,
            "edge": out.edge,
        }
    try:
        return jsonutil.dumps_sorted(body)
    except RecursionError:
        return repr(body).encode("utf-8", "surrogatepass")


def _safe_copy(doc):
    try:
        return copy.deepcopy(doc)
    except RecursionError:
        return None


def _same_deep(a, b) -> bool:
    """same_json() for documents too deep for the recursive encoders: an iterative walk, JSON
    types included (True vs 1, 1 vs 1.0, -0.0 vs 0.0), object key order ignored."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, float):
            if x != y or math.copysign(1, x) != math.copysign(1, y):
                return False
        elif x != y:
            return False
    return True


def _assert_lossless(out: Row, doc: dict, t) -> None:
    try:
        assert_lossless(out, doc, t)  # the helper of tests/test_transform.py
    except RecursionError:  # deeper than the encoders walk: compare iteratively
        assert _same_deep(t.rebuild(out), doc)


def _loadable(values: dict) -> None:
    """What PostgreSQL requires of a Row: UTF-8 encodable, no U+0000 in any string or key."""
    stack = [values]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            assert "\x00" not in v, v[:80]
            v.encode("utf-8")  # no lone surrogates


# -- the transform -----------------------------------------------------------------------------


@FAST
@given(any_input)
def test_every_document_has_exactly_one_outcome_and_rejects_have_reasons(item):
    coll, doc = item
    for t in (T_REJECT, T_ESCAPE):
        out = t.transform(coll, doc)
        assert sum(isinstance(out, k) for k in OUTCOMES) == 1, out
        if isinstance(out, Reject):
            assert out.reason and out.reason.strip() and "\n" not in out.reason, out
            assert out.document, "a reject keeps the source document"
            assert out.collection == coll
            # the kept document is the source, as JSON text (escapes kept)
            if not out.reason.startswith("too_deep"):
                assert same_json(jsonutil.loads(out.document), doc)
        elif isinstance(out, Unmapped):
            assert out.reason and out.reason.strip()
        elif isinstance(out, Row):
            assert out.key == doc["_key"]
            _loadable(out.values)
        if not isinstance(doc, dict) or not isinstance(doc.get("_key"), str) or not doc.get("_key"):
            assert isinstance(out, Reject)


@FAST
@given(any_input)
def test_transform_is_deterministic_across_calls_and_instances(item):
    coll, doc = item
    before = _safe_copy(doc)
    a = T_REJECT.transform(coll, doc)
    b = T_REJECT.transform(coll, doc)
    other = transformer()
    c = other.transform(coll, _safe_copy(doc) if before is not None else doc)
    assert type(a) is type(b) is type(c)
    assert _fingerprint(a) == _fingerprint(b) == _fingerprint(c)
    e1, e2 = (
        T_ESCAPE.transform(coll, doc),
        transformer(nul_in_strings="escape", lone_surrogates="escape").transform(coll, doc),
    )
    assert _fingerprint(e1) == _fingerprint(e2)
    if before is not None:  # the input was not modified
        assert _fingerprint_doc(doc) == _fingerprint_doc(before)


def _fingerprint_doc(doc) -> bytes:
    try:
        return jsonutil.dumps_sorted(doc)
    except RecursionError:
        return repr(doc).encode("utf-8", "surrogatepass")


@FAST
@given(st.one_of(documents("resumes"), documents("jobs"), documents("documents"), documents()))
def test_a_row_rebuilds_its_source_document_exactly(item):
    coll, doc = item
    rows = 0
    for t in (T_REJECT, T_ESCAPE):
        out = t.transform(coll, doc)
        if isinstance(out, Row):
            rows += 1
            _assert_lossless(out, doc, t)
    if isinstance(T_REJECT.transform(coll, doc), Row):
        assert rows == 2  # what the strict policies accept, the escape policies accept too


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.builds(
        Case,
        st.sampled_from(["resumes", "jobs"]),
        st.dictionaries(odd_keys, values, min_size=1, max_size=6),
    )
)
def test_any_extra_attributes_survive_a_row_exactly(item):
    """A valid document plus arbitrary attributes (any names, any values): if it loads, every
    attribute comes back; under the escape policies, NUL and lone surrogates never block it."""
    coll, extra = item
    base = (
        {"_key": "k1", "user_id": "u1", "resume_data": {"summary": "s"}}
        if coll == "resumes"
        else {"_key": "k1", "user_id": "u1", "job_title": "t"}
    )
    doc = {**extra, **base}
    out = T_ESCAPE.transform(coll, doc)
    if isinstance(out, Reject):
        # only the documented reasons remain possible for a well-formed base
        assert out.reason.split(":")[0] in {
            "too_deep",
            "bad_user_id",
            "missing_user_id",
            "not_a_list",
            "bad_email",
            "bad_range",
            "bad_score",
        }, out.reason
        return
    assert isinstance(out, Row)
    _loadable(out.values)
    _assert_lossless(out, doc, T_ESCAPE)


# -- on the database ---------------------------------------------------------------------------

_example = itertools.count()
DB_COLLECTIONS = ("resumes", "jobs", "documents")


@st.composite
def small_sources(draw):
    """{collection: [documents]} with unique keys per collection (a real source has no duplicates)."""
    out: dict[str, list[dict]] = {}
    for coll in DB_COLLECTIONS:
        docs = []
        seen = set()
        for _, doc in draw(st.lists(documents(coll), max_size=4)):  # Case = (collection, doc)
            k = doc.get("_key")
            # ArangoDB gives every document a string _key (a source refuses a file without one)
            if not isinstance(k, str) or k in seen:
                continue
            seen.add(k)
            docs.append(doc)
        out[coll] = docs
    assume(any(out.values()))
    return Case("sources", out)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(small_sources())
def test_migration_of_arbitrary_documents_loses_nothing(schema_db, tmp_path, case):
    source = case[1]
    n = next(_example)
    # unique keys across examples: every example inserts new rows
    for docs in source.values():
        for d in docs:
            if isinstance(d.get("_key"), str):
                d["_key"] = f"x{n}-{d['_key']}"
    path = Path(tempfile.mkdtemp(dir=tmp_path))
    write_jsonl(path, source)
    settings_ = settings_for(schema_db, tmp_path, defer_indexes=False)
    summary = Migration(
        settings_,
        collections=list(DB_COLLECTIONS),
        source=f"jsonl:{path}",
        batch_size=3,
        retry_wait=lambda rs: 0,
    ).run()
    assert summary.state == "finished"
    run_id = summary.run_id
    total = sum(len(d) for d in source.values())
    with psycopg.connect(schema_db) as conn:
        loaded = conn.execute(
            "select metadata->'arango'->>'collection', metadata->'arango'->>'_key' from ("
            " select metadata from resume_documents union all select metadata from job_documents"
            " union all select metadata from optimization_results union all select metadata from research_results) t"
            " where metadata->'etl'->>'run_id' = %s",
            (run_id,),
        ).fetchall()
        rejected = conn.execute(
            "select collection, key, reason from etl_rejects where run_id = %s", (run_id,)
        ).fetchall()
    assert all(r[2] for r in rejected), rejected
    assert total == len(loaded) + len(rejected), (total, len(loaded), rejected)
    both = set(loaded) & {(c, k) for c, k, _ in rejected}
    assert not both, both
    counted = {c.collection: c for c in summary.collections}
    for coll, docs in source.items():
        c = counted[coll]
        assert c.source_count == len(docs)
        assert len(docs) == c.counts.loaded + c.counts.rejected + c.counts.unmapped
