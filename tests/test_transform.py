"""The transform: real shapes -> canonical rows, identity, every bad input's documented outcome,
lossless rebuild and determinism. Pure: no database."""

from __future__ import annotations

import copy
import time
import tomllib
import uuid
from datetime import UTC
from pathlib import Path

import pytest

from etl import jsonutil
from etl.mapping import load_mapping, mapping_from_dict
from etl.target import parse_timestamp
from etl.transform import (
    ETL_NAMESPACE,
    EdgeLink,
    Reject,
    Row,
    Transformer,
    Unmapped,
    rebuild_edge,
    rebuild_source,
    row_id,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "configs" / "atspro.toml"
CASES = Path(__file__).resolve().parent / "cases" / "documents"
RUN_ID = "run-test"


@pytest.fixture(autouse=True)
def _values_shown(monkeypatch):
    """These tests read the wording of reasons with the values quoted (etl migrate
    --show-values); tests/cli/test_cli_privacy.py checks that none is quoted by default."""
    monkeypatch.setenv("ETL_SHOW_VALUES", "1")


MIGRATED_AT = "2026-01-01T00:00:00+00:00"
ETL = {"run_id": RUN_ID, "migrated_at": MIGRATED_AT, "mapping_version": "atspro-1"}

MAPPING = load_mapping(DEFAULT)


def transformer(**policy) -> Transformer:
    if not policy:
        return Transformer(MAPPING, RUN_ID, MIGRATED_AT)
    raw = tomllib.loads(DEFAULT.read_text())
    raw["policy"].update(policy)
    return Transformer(mapping_from_dict(raw, "test"), RUN_ID, MIGRATED_AT)


T = transformer()


def case(name: str) -> dict:
    """A sample file, decoded the way sources decode (msgspec, stdlib for lone surrogates)."""
    return jsonutil.loads((CASES / f"{name}.json").read_bytes())


def expected(c: dict) -> dict:
    """The case's expected row with its placeholders filled in."""
    doc = c["document"]

    def fill(v):
        if v == "ROW_ID":
            return row_id(c["collection"], doc["_key"])
        if v == "ETL":
            return ETL
        if isinstance(v, str) and v.startswith("REF:"):
            coll, _, key = v[4:].partition("/")
            return row_id(coll, key)
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v

    return fill(c["expected"])


def same_json(a, b) -> bool:
    """Equal as JSON, types included (1 vs 1.0, -0.0 vs 0.0, key sets)."""
    return jsonutil.dumps_sorted(a) == jsonutil.dumps_sorted(b)


def row(collection: str, doc: dict, t: Transformer = T) -> Row:
    out = t.transform(collection, doc)
    assert isinstance(out, Row), out
    return out


def assert_lossless(out: Row, doc: dict, t: Transformer = T) -> None:
    rebuilt = rebuild_source(out.values, t.mapping, out.document_type)
    assert same_json(rebuilt, doc), (rebuilt, doc)


def resume(**attrs) -> dict:
    doc = {
        "_key": "k1",
        "_id": "resumes/k1",
        "_rev": "_r",
        "user_id": "u1",
        "file_metadata": {"filename": "cv.pdf", "size": 10},
        "resume_data": {"summary": "s", "skills": ["a"]},
        "status": "completed",
    }
    doc.update(attrs)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()


# -- identity -------------------------------------------------------------------------------------


def test_row_id_is_uuid5_of_collection_and_key():
    assert ETL_NAMESPACE == uuid.UUID("5b0e4f4a-7c1d-4e8a-9a3b-2f6d8c1e0a57")
    assert row_id("resumes", "123") == str(uuid.uuid5(ETL_NAMESPACE, "resumes/123"))
    # pinned: a change of namespace or formula would orphan every migrated row
    assert row_id("resumes", "123") == "e4f97082-a821-5129-9d00-313a2df1a4b8"
    assert row_id("resumes", "123") != row_id("jobs", "123")


# -- real shapes -> canonical rows -------------------------------------------------------------------


def test_transform_resume_current_shape_gives_expected_row():
    c = case("resume_current")
    out = row("resumes", c["document"])
    assert out.document_type == "resume" and out.key == "8123"
    assert list(out.values) == list(MAPPING.columns("resume"))
    assert same_json(out.values, expected(c))
    assert out.warnings == ()


def test_transform_optimization_gives_expected_row_with_references():
    c = case("optimization")
    out = row("documents", c["document"])
    assert out.document_type == "optimization"
    assert same_json(out.values, expected(c))
    assert out.values["resume_id"] == row_id("resumes", "8123")
    assert out.values["job_id"] == row_id("jobs", "j1")
    assert out.values["id"] == row_id("documents", "o1")


def test_transform_resume_older_shape_parsed_data():
    doc = case("resume_parsed_data")["document"]
    v = row("resumes", doc).values
    assert v["parsed_data"] is doc["parsed_data"]  # shared, not copied
    assert v["filename"] == "resume.docx"
    assert v["created_at"] == "2024-01-02T03:04:05+00:00"
    assert v["updated_at"] == "2024-01-02T03:04:05+00:00"
    assert v["metadata"]["mapped_from"] == {
        "filename": "filename",
        "updated_at": "created_at",
        "parsed_data": "parsed_data",
    }
    assert v["metadata"]["extra"] == {}
    assert "file" not in v["metadata"]


def test_transform_resume_older_shape_content():
    doc = case("resume_content")["document"]
    v = row("resumes", doc).values
    assert v["parsed_data"] == {"summary": "Compilers.", "experience": [{"company": "Navy"}]}
    assert v["filename"] == "cv_2023.pdf"
    assert v["created_at"] == "2023-09-01T00:00:00+00:00"  # epoch milliseconds
    assert v["metadata"]["parser_version"] == "0.3"
    assert v["metadata"]["original"]["created_at"] == 1693526400000
    assert v["metadata"]["mapped_from"]["parsed_data"] == "content"


def test_transform_resume_oldest_shape_gathers_top_level_sections():
    doc = case("resume_oldest")["document"]
    v = row("resumes", doc).values
    assert v["parsed_data"] == {
        "contact_info": {"full_name": "Alan Turing", "email": ""},
        "summary": None,
        "experience": [{"company": "Bletchley Park", "skills": ["cryptanalysis"]}],
        "education": [{"school": "King's College"}],
        "skills": ["logic"],
    }
    assert v["user_id"] == "4242"  # a numeric user_id becomes its decimal string
    assert v["metadata"]["original"]["user_id"] == 4242
    assert v["created_at"] == "2019-01-01T00:00:00+00:00"  # "2019": start of the year
    assert v["metadata"]["extra"] == {"uploaded_by": "importer"}
    assert v["metadata"]["mapped_from"]["parsed_data"] == "(sections)"


def test_transform_job_current_shape_keeps_empty_strings():
    doc = case("job_current")["document"]
    out = row("jobs", doc)
    v = out.values
    assert out.document_type == "job"
    assert (v["title"], v["company"], v["location"], v["job_url"]) == ("", "", "", "")
    assert v["source_url"] == "https://jobs.example.com/1"
    assert v["is_active"] is True and v["status"] == "pending"
    assert v["remote_type"] is None
    # a null attribute is not a value: kept as it is in extra, so the rebuild has it
    assert v["metadata"]["extra"] == {
        "type": "job",
        "source_type": "document",
        "source_filename": "job.md",
        "remote_type": None,
    }


def test_transform_job_older_shape_fallback_paths():
    doc = case("job_old")["document"]
    v = row("jobs", doc).values
    assert (v["title"], v["company"], v["job_url"], v["remote_type"]) == (
        "Engineer",
        "Initech",
        "https://initech.example/jobs/9",
        "hybrid",
    )
    assert v["created_at"] == "2023-05-01T08:00:00+00:00"  # +02:00 converted to UTC
    assert v["metadata"]["mapped_from"] == {
        "title": "title",
        "company": "company",
        "job_url": "url",
        "remote_type": "work_type",
        "updated_at": "created_at",
    }


def test_transform_research_parsed_data_is_source_metadata():
    doc = case("research")["document"]
    out = row("documents", doc)
    v = out.values
    assert out.document_type == "research"
    assert v["parsed_data"] == {
        "content_type": "markdown",
        "report_type": "company_research",
        "word_count": 812,
    }
    assert v["report_type"] == "company_research"
    assert (v["company"], v["job_title"], v["content"]) == (
        "Initech",
        "Engineer",
        "## Initech\nA company.",
    )
    assert v["job_id"] == row_id("jobs", "j1") and v["resume_id"] == row_id("resumes", "8123")
    # the raw keys stay, so a dangling reference loses nothing
    assert v["metadata"]["extra"] == {"type": "research", "resume_id": "8123", "job_id": "j1"}
    assert v["metadata"]["source"] == "arangodb"


def test_transform_edge_gives_link():
    doc = case("job_research_edge")["document"]
    out = T.transform("job_research", doc)
    assert out == EdgeLink("e1", row_id("documents", "r1"), row_id("jobs", "j1"), doc)
    assert rebuild_edge(out.edge) == doc


@pytest.mark.parametrize(
    "attrs,code",
    [
        (
            {"_from": "companies/c1"},
            "edge_bad_from: _from \"companies/c1\" is not in collection 'jobs'",
        ),
        ({"_from": "j1"}, "edge_bad_from: _from is \"j1\", not '<collection>/<key>'"),
        ({"_from": None}, "edge_bad_from"),
        ({"_to": "resumes/x"}, "edge_bad_to: _to \"resumes/x\" is not in collection 'documents'"),
        ({"_to": "documents/"}, "edge_bad_to"),
    ],
)
def test_transform_edge_with_unknown_end_is_rejected(attrs, code):
    doc = {**case("job_research_edge")["document"], **attrs}
    out = T.transform("job_research", doc)
    assert isinstance(out, Reject) and out.reason.startswith(code), out
    assert out.key == "e1" and jsonutil.loads(out.document) == doc


def test_transform_task_results_is_a_generic_row_and_rebuilds():
    doc = case("task_result")["document"]
    out = T.transform("task_results", doc)
    assert isinstance(out, Row) and out.document_type == "arango.task_results"
    v = out.values
    assert (v["id"], v["key"]) == (row_id("task_results", "tr1"), "tr1")
    assert v["data"] == {k: x for k, x in doc.items() if not k.startswith("_")}
    assert v["metadata"]["arango"] == {
        "collection": "task_results", "_key": "tr1", "_id": "task_results/tr1", "_rev": "_t"
    }  # fmt: skip
    assert T.rebuild(out) == doc


def test_transform_unmapped_collection_and_type():
    assert T.transform("photos", {"_key": "p"}) == Unmapped(
        "photos", "p", "not migrated (no mapping)"
    )
    note = {"_key": "n1", "type": "note", "user_id": "u"}
    assert T.transform("documents", note) == Unmapped(
        "documents", "n1", 'unmapped_type: type="note" has no mapping'
    )
    out = T.transform("documents", {"_key": "n2", "user_id": "u"})
    assert isinstance(out, Unmapped) and out.reason == "unmapped_type: type=null has no mapping"


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id,reason",
    [
        (DROP, "missing_user_id: none of user_id, userId is present"),
        (None, "missing_user_id"),
        ("", 'bad_user_id: user_id is "" (a string)'),
        ("   ", "bad_user_id"),
        (True, "bad_user_id: user_id is true (a boolean)"),
        (1.5, "bad_user_id: user_id is 1.5 (a number)"),
        ({"id": "u"}, "bad_user_id"),
    ],
)
def test_transform_bad_user_id_is_rejected(user_id, reason):
    doc = resume(user_id=user_id)
    out = T.transform("resumes", doc)
    assert isinstance(out, Reject), out
    assert out.reason.startswith(reason), out.reason
    assert (out.collection, out.key) == ("resumes", "k1")
    assert jsonutil.loads(out.document) == doc  # the whole document, for the reject store


def test_transform_numeric_user_id_becomes_text():
    doc = resume(user_id=12345678901234567890)
    out = row("resumes", doc)
    assert out.values["user_id"] == "12345678901234567890"
    assert_lossless(out, doc)


def test_transform_user_id_fallback_path():
    out = row("resumes", resume(user_id=DROP, userId="u9"))
    assert out.values["user_id"] == "u9"
    assert out.values["metadata"]["mapped_from"]["user_id"] == "userId"


def test_transform_nul_rejected_by_default_with_path():
    doc = case("bad_nul")["document"]
    out = T.transform("resumes", doc)
    assert isinstance(out, Reject)
    assert out.reason == "nul_in_string: resume_data.summary contains \\u0000"
    assert "\\u0000" in out.document and "\x00" not in out.document
    assert jsonutil.loads(out.document) == doc


def test_transform_nul_in_key_and_column_rejected():
    out = T.transform("resumes", resume(extra={"a\x00b": 1}))
    assert isinstance(out, Reject) and out.reason.startswith(
        'nul_in_string: extra (key "a\\u0000b")'
    )
    out = T.transform("resumes", resume(status="done\x00"))
    assert isinstance(out, Reject) and out.reason == "nul_in_string: status contains \\u0000"


def test_transform_nul_escape_policy_is_lossless():
    t = transformer(nul_in_strings="escape")
    doc = case("bad_nul")["document"]
    doc["note\x00key"] = {"deep": ["x\x00y\\z"]}
    doc["status"] = "ok\x00"
    out = row("resumes", doc, t)
    v = out.values
    assert v["parsed_data"]["summary"] == "zero\\u0000byte"
    assert v["parsed_data"]["skills"] == ["c\\u0000"]  # a literal backslash-u is not touched
    assert v["status"] == "ok\\u0000"
    assert v["metadata"]["extra"] == {"note\\u0000key": {"deep": ["x\\u0000y\\\\z"]}}
    assert "\x00" not in jsonutil.dumps_str(v)
    assert_lossless(out, doc, t)


def test_transform_nul_strip_policy_warns():
    t = transformer(nul_in_strings="strip")
    out = row("resumes", case("bad_nul")["document"], t)
    assert out.values["parsed_data"]["summary"] == "zerobyte"
    assert any(w.startswith("stripped_nul: resume_data.summary") for w in out.warnings)


def test_transform_lone_surrogate_policies():
    doc = case("bad_lone_surrogate")["document"]
    assert doc["resume_data"]["summary"] == "bad \ud800 half"
    out = T.transform("resumes", doc)
    assert isinstance(out, Reject)
    assert out.reason == "lone_surrogate: resume_data.summary contains a lone surrogate \\ud800"
    assert "\\ud800" in out.document

    t = transformer(lone_surrogates="escape")
    r = row("resumes", doc, t)
    assert r.values["parsed_data"]["summary"] == "bad \\ud800 half"
    jsonutil.dumps(r.values).decode("utf-8")  # encodable as UTF-8 now
    assert_lossless(r, doc, t)

    t = transformer(lone_surrogates="strip")
    r = row("resumes", doc, t)
    assert r.values["parsed_data"]["summary"] == "bad \ufffd half"
    assert any(w.startswith("replaced_surrogate") for w in r.warnings)


def test_transform_file_size_beyond_bigint_kept_in_metadata_file():
    doc = resume(file_metadata={"filename": "cv.pdf", "size": 1e20})
    out = row("resumes", doc)
    assert out.values["file_size"] is None
    assert out.values["metadata"]["file"]["size"] == 1e20
    assert any("file_size <- file_metadata.size" in w and "bigint" in w for w in out.warnings)
    assert_lossless(out, doc)
    # top-level form: the attribute stays in extra
    doc = resume(file_metadata=DROP, filename="cv.pdf", file_size=2**63)
    out = row("resumes", doc)
    assert out.values["file_size"] is None and out.values["metadata"]["extra"]["file_size"] == 2**63
    assert (
        row("resumes", resume(file_size=2**63 - 1, file_metadata=DROP)).values["file_size"]
        == 2**63 - 1
    )
    assert row("resumes", resume(file_size=2048.0, file_metadata=DROP)).values["file_size"] == 2048


@pytest.mark.parametrize(
    "score,column,in_extra",
    [
        (250, None, True),
        (-1, None, True),
        (100, 100, False),
        (0, 0, False),
        (99.5, 99.5, False),
        (1e308, None, True),
        ("85", None, True),
        (True, None, True),
    ],
)
def test_transform_score_outside_percentage_kept_in_extra(score, column, in_extra):
    doc = {**case("optimization")["document"], "ats_score": score}
    out = row("documents", doc)
    assert out.values["ats_score"] == column and type(out.values["ats_score"]) is type(column)
    assert ("ats_score" in out.values["metadata"]["extra"]) is in_extra
    assert_lossless(out, doc)


def test_transform_negative_zero_score():
    doc = {**case("optimization")["document"], "ats_score": -0.0}
    out = row("documents", doc)
    assert str(out.values["ats_score"]) == "0.0"
    assert str(out.values["metadata"]["original"]["ats_score"]) == "-0.0"
    assert_lossless(out, doc)


def test_transform_big_numbers_in_parsed_data_kept_exactly():
    doc = case("bad_numbers")["document"]
    pd = doc["parsed_data"]
    assert pd["views"] == 2**53 + 1 and pd["huge"] == 2**64 + 1  # decoded exactly
    out = row("jobs", doc)
    text = jsonutil.dumps_str(out.values["parsed_data"])
    assert '"views":9007199254740993' in text and '"huge":18446744073709551617' in text
    assert '"neg0":-0.0' in text and '"max":1e308' in text and '"small":5e-324' in text
    assert_lossless(out, doc)


@pytest.mark.parametrize(
    "value,iso",
    [
        ("2025-08-16T21:54:43.160344", "2025-08-16T21:54:43.160344+00:00"),  # no zone = UTC
        ("2025-08-16T21:54:43.160344Z", "2025-08-16T21:54:43.160344+00:00"),
        ("2025-08-16T23:54:43+02:00", "2025-08-16T21:54:43+00:00"),
        ("2025-08-16 21:54:43", "2025-08-16T21:54:43+00:00"),
        ("2025-08-16", "2025-08-16T00:00:00+00:00"),
        (
            "2025-08-16T21:54:43.160344789",
            "2025-08-16T21:54:43.160344+00:00",
        ),  # beyond microseconds
        ("2019", "2019-01-01T00:00:00+00:00"),
        ("2019-03", "2019-03-01T00:00:00+00:00"),
        (1755381283160, "2025-08-16T21:54:43.160000+00:00"),  # epoch milliseconds
        (1755381283160.5, "2025-08-16T21:54:43.160500+00:00"),
        ("1755381283160", "2025-08-16T21:54:43.160000+00:00"),
        (0, "1970-01-01T00:00:00+00:00"),
        ("garbage", None),
        ("", None),
        ("2019-13", None),
        ("2025-02-30", None),
        (True, None),
        ({"$date": 1}, None),
        (10**20, None),
        (float("inf"), None),
    ],
)
def test_parse_timestamp_forms(value, iso):
    assert parse_timestamp(value) == iso


def test_transform_garbage_timestamp_column_null_value_kept():
    doc = resume(created_at="garbage", updated_at="2025-01-01T00:00:00+00:00")
    out = row("resumes", doc)
    assert out.values["created_at"] is None  # the table default applies
    assert out.values["updated_at"] == "2025-01-01T00:00:00+00:00"
    assert out.values["metadata"]["extra"] == {"created_at": "garbage"}
    assert any(w.startswith("unfit_value: created_at <- created_at") for w in out.warnings)
    assert_lossless(out, doc)
    # updated_at falls back to created_at only when that is usable
    out = row("resumes", resume(created_at="nonsense"))
    assert out.values["updated_at"] is None and out.values["metadata"]["extra"] == {
        "created_at": "nonsense"
    }


def test_transform_long_filename_truncated_full_name_kept():
    name = "x" * 300 + ".pdf"
    doc = resume(file_metadata={"filename": name})
    out = row("resumes", doc)
    assert out.values["filename"] == name[:255]
    assert out.values["metadata"]["file"]["filename"] == name
    assert any(w.startswith("truncated: filename to 255") for w in out.warnings)
    assert_lossless(out, doc)
    doc = resume(file_metadata=DROP, filename=name)
    out = row("resumes", doc)
    assert (
        out.values["filename"] == name[:255]
        and out.values["metadata"]["original"]["filename"] == name
    )
    assert_lossless(out, doc)


def test_transform_missing_filename_defaults_to_unknown():
    doc = resume(file_metadata=DROP)
    out = row("resumes", doc)
    assert out.values["filename"] == "unknown"
    assert out.values["metadata"]["mapped_from"]["filename"] is None
    assert_lossless(out, doc)


@pytest.mark.parametrize(
    "parsed,reason",
    [
        (
            {"skills": {"python": 5}},
            "not_a_list: parsed_data.skills is an object; the database requires an array",
        ),
        (
            {"work_experience": [{"skills": ["a"]}, {"skills": "b"}]},
            "not_a_list: parsed_data.work_experience[1].skills is a string",
        ),
        ({"experience": {"company": "x"}}, "not_a_list: parsed_data.experience is an object"),
        (
            {"contact_info": {"links": {"a": 1}}},
            "not_a_list: parsed_data.contact_info.links is an object",
        ),
        ({"contact_info": "Ada"}, "not_an_object: parsed_data.contact_info is a string"),
        (
            {"contact_info": {"email": "not-an-address"}},
            'bad_email: parsed_data.contact_info.email is "not-an-address"',
        ),
        ({"contact_info": {"email": 5}}, "bad_email"),
        ({"contact_info": {"email": "a@b.co\n"}}, "bad_email"),
    ],
)
def test_transform_invalid_parsed_data_rejected_naming_field(parsed, reason):
    out = T.transform("resumes", resume(resume_data=parsed))
    assert isinstance(out, Reject) and out.reason.startswith(reason), out


@pytest.mark.parametrize(
    "parsed",
    [
        {"skills": None, "contact_info": None},
        {"contact_info": {"email": "", "links": None}},
        {"contact_info": {"email": "first.last+tag@sub.example.org"}},
        {"work_experience": [{"skills": None, "responsibilities": []}, "not an object"]},
    ],
)
def test_transform_valid_parsed_data_accepted(parsed):
    assert isinstance(T.transform("resumes", resume(resume_data=parsed)), Row)


def test_transform_job_salary_and_empty_completed():
    job = case("job_old")["document"]
    bad = {**job, "parsed_data": {"salary_range": {"min": 200, "max": 100}}}
    out = T.transform("jobs", bad)
    assert (
        isinstance(out, Reject)
        and out.reason == "bad_range: parsed_data.salary_range has min 200 > max 100"
    )
    bad = {**job, "parsed_data": {"salary_min": 5, "salary_max": 1}}
    assert T.transform("jobs", bad).reason.startswith("bad_range: parsed_data.salary_min")
    out = T.transform("jobs", {**job, "parsed_data": {}})  # status completed
    assert isinstance(out, Reject) and out.reason.startswith("empty_parsed_data")
    assert isinstance(T.transform("jobs", {**job, "parsed_data": {}, "status": "pending"}), Row)


def test_transform_optimization_score_inside_parsed_data_checked():
    doc = {**case("optimization")["document"], "optimized_data": {"atsScore": 250}}
    out = T.transform("documents", doc)
    assert isinstance(out, Reject) and out.reason.startswith(
        "bad_score: parsed_data.atsScore = 250"
    )


def test_transform_multi_megabyte_document():
    doc = resume(
        resume_data={
            "summary": "s" * 3_000_000,
            "work_experience": [{"description": "d" * 1000, "skills": ["x"]}] * 3000,
        }
    )
    t0 = time.perf_counter()
    out = row("resumes", doc)
    assert time.perf_counter() - t0 < 2.0
    assert len(jsonutil.dumps(out.values)) > 6_000_000
    assert_lossless(out, doc)


def test_transform_deep_nesting():
    deep: dict = {"leaf": "x"}
    for i in range(200):
        deep = {"level": i, "child": deep}
    doc = resume(resume_data={"skills": [], "deep": deep})
    out = row("resumes", doc)
    assert_lossless(out, doc)
    # far deeper than any encoder can walk: rejected, the document still kept as text
    for _ in range(5000):
        deep = {"c": deep}
    out = T.transform("resumes", resume(resume_data={"deep": deep}))
    assert isinstance(out, Reject) and out.reason.startswith("too_deep")
    assert out.document.startswith('{"_key":"k1"') and out.document.count("{") > 5000


def test_transform_duplicate_keys_last_wins():
    doc = case("bad_duplicate_keys")["document"]
    out = row("resumes", doc)
    assert out.values["user_id"] == "u_last"
    assert out.values["parsed_data"] == {"skills": ["y"]}


def test_transform_every_allowed_key_character():
    key = "a_b-c:d.e@f(g)h+i,j=k;l$m!n*o'p%q"
    doc = resume(_key=key, _id=f"resumes/{key}")
    out = row("resumes", doc)
    assert out.key == key
    assert out.values["id"] == str(uuid.uuid5(ETL_NAMESPACE, f"resumes/{key}"))
    assert out.values["metadata"]["arango"]["_key"] == key
    opt = {**case("optimization")["document"], "resume_id": key}
    assert row("documents", opt).values["resume_id"] == out.values["id"]


def test_transform_not_an_object_or_no_key_rejected():
    out = T.transform("resumes", ["not", "a", "document"])
    assert isinstance(out, Reject) and out.reason == "not_an_object: the document is an array"
    out = T.transform("resumes", {"user_id": "u"})
    assert (
        isinstance(out, Reject)
        and out.key is None
        and out.reason.startswith("missing_key: _key is null")
    )
    out = T.transform("resumes", {"_key": 5, "user_id": "u"})
    assert (
        isinstance(out, Reject)
        and out.key == "5"
        and out.reason.startswith("missing_key: _key is a number")
    )


def test_transform_reference_values():
    base = case("optimization")["document"]
    out = row("documents", {**base, "resume_id": 123})
    assert out.values["resume_id"] == row_id("resumes", "123")
    no_job = {k: v for k, v in base.items() if k != "job_id"}
    out = row("documents", {**no_job, "resume_id": {"k": 1}})
    assert out.values["resume_id"] is None and out.values["job_id"] is None
    assert out.values["metadata"]["extra"]["resume_id"] == {"k": 1}
    assert any(w.startswith("bad_reference: resume_id is an object") for w in out.warnings)
    out = row("documents", {**base, "parent_id": "o0"})
    assert out.values["parent_optimization_id"] == row_id("documents", "o0")


def test_transform_non_boolean_is_active_kept_in_extra():
    doc = case("job_current")["document"] | {"is_active": "yes"}
    out = row("jobs", doc)
    assert out.values["is_active"] is None and out.values["metadata"]["extra"]["is_active"] == "yes"
    assert_lossless(out, doc)


def test_transform_does_not_modify_its_input():
    docs = [c["document"] for c in map(case, ["resume_current", "optimization", "bad_nul"])]
    before = copy.deepcopy(docs)
    t = transformer(nul_in_strings="escape")
    for d in docs:
        t.transform("resumes" if "file_metadata" in d or "resume_data" in d else "documents", d)
    assert docs == before


# -- lossless and deterministic --------------------------------------------------------------------

LOADABLE = [
    "resume_current",
    "resume_parsed_data",
    "resume_content",
    "resume_oldest",
    "job_current",
    "job_old",
    "optimization",
    "research",
    "bad_duplicate_keys",
    "bad_numbers",
]


@pytest.mark.parametrize("name", LOADABLE)
def test_transform_rebuilds_every_source_document_exactly(name):
    c = case(name)
    out = row(c["collection"], c["document"])
    assert_lossless(out, c["document"])
    assert T.rebuild(out) == c["document"]


@pytest.mark.parametrize("name", ["bad_nul", "bad_lone_surrogate"])
def test_transform_rebuilds_escaped_documents_exactly(name):
    t = transformer(nul_in_strings="escape", lone_surrogates="escape")
    c = case(name)
    assert_lossless(row(c["collection"], c["document"], t), c["document"], t)


def test_transform_is_deterministic():
    for name in LOADABLE + ["job_research_edge"]:
        c = case(name)
        a = T.transform(c["collection"], c["document"])
        b = transformer().transform(c["collection"], case(name)["document"])
        assert a == b
        assert jsonutil.dumps_sorted(
            a.values if isinstance(a, Row) else a.edge
        ) == jsonutil.dumps_sorted(b.values if isinstance(b, Row) else b.edge)


def test_transform_run_id_and_time_only_in_metadata_etl():
    c = case("resume_current")
    a = row("resumes", c["document"]).values
    from datetime import datetime

    b = (
        Transformer(MAPPING, "other-run", datetime(2030, 1, 1, tzinfo=UTC))
        .transform("resumes", c["document"])
        .values
    )
    assert b["metadata"]["etl"] == {
        "run_id": "other-run",
        "migrated_at": "2030-01-01T00:00:00+00:00",
        "mapping_version": "atspro-1",
    }
    strip = lambda v: {**v, "metadata": {k: x for k, x in v["metadata"].items() if k != "etl"}}  # noqa: E731
    assert strip(a) == strip(b)


def test_transform_edge_string_policies():
    doc = {**case("job_research_edge")["document"], "relationship": "has\x00research"}
    out = T.transform("job_research", doc)
    assert isinstance(out, Reject) and out.reason == "nul_in_string: relationship contains \\u0000"
    t = transformer(nul_in_strings="escape")
    link = t.transform("job_research", doc)
    assert isinstance(link, EdgeLink) and link.edge["relationship"] == "has\\u0000research"
    assert "\x00" not in jsonutil.dumps_str(link.edge)
    assert rebuild_edge(link.edge) == doc


def test_a_system_attribute_that_is_not_a_string_is_kept_in_extra():
    """ArangoDB writes _id and _rev as strings; a file can hold null or a number there. Such a
    value is not provenance: it stays in metadata.extra and comes back exactly (hypothesis found
    `_id: null` rebuilt as absent)."""
    for odd in ({"_id": None}, {"_rev": 5}, {"_id": None, "_rev": None}):
        doc = {"_key": "k1", "user_id": "u1", "resume_data": {"summary": "s"}, **odd}
        out = row("resumes", doc)
        assert out.values["metadata"]["extra"] == odd
        assert_lossless(out, doc)
    doc = {"_key": "k1", "_id": "resumes/k1", "_rev": "_r1", "user_id": "u1", "resume_data": {}}
    md = row("resumes", doc).values["metadata"]
    assert md["arango"]["_id"] == "resumes/k1" and md["arango"]["_rev"] == "_r1"
    assert "_id" not in md["extra"] and "_rev" not in md["extra"]
