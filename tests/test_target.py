"""etl/target.py against the real schema after apply-schema: every table, column, type and
reference it names exists in PostgreSQL with that type, no document-table column is missing
from it, and sql/007's own lists (verify_schema_integrity, the merge core) agree with it."""

from __future__ import annotations

import re

import psycopg
import pytest

from etl import target


@pytest.fixture
def catalog(schema_db):
    """The schema as apply-schema made it: columns, foreign keys, sql/007's own lists."""
    with psycopg.connect(schema_db) as conn:
        cols = conn.execute(
            "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
            " from pg_attribute a join pg_class c on c.oid = a.attrelid"
            " where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'"
            " and a.attnum > 0 and not a.attisdropped"
        ).fetchall()
        fks = conn.execute(
            "select c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text"
            " from pg_constraint c"
            " join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]"
            " where c.contype = 'f' and cardinality(c.conkey) = 1"
        ).fetchall()
        verify = conn.execute(
            'select "check", status, detail from verify_schema_integrity()'
            " where \"check\" like 'column %'"
        ).fetchall()
        merge = conn.execute(
            "select prosrc from pg_proc where proname = 'etl_merge_stage'"
        ).fetchone()[0]
        tables = {
            dt: conn.execute("select etl_document_table(%s)::text", (dt,)).fetchone()[0]
            for dt in target.DOCUMENT_TYPES
        }
        emails = {v: conn.execute("select is_valid_email(%s)", (v,)).fetchone()[0] for v in EMAILS}
        percentages = {}
        for v in PERCENTAGES:
            try:
                with conn.transaction():
                    conn.execute("select %s::numeric::percentage", (v,))
                percentages[v] = True
            except psycopg.errors.CheckViolation:
                percentages[v] = False
    by_table: dict[str, dict[str, str]] = {}
    for tbl, col, typ in cols:
        by_table.setdefault(tbl, {})[col] = typ
    return {
        "columns": by_table,
        "fks": fks,
        "verify": verify,
        "merge": merge,
        "tables": tables,
        "emails": emails,
        "percentages": percentages,
    }


EMAILS = ["ada@example.com", "a.b+c@x-y.example.org", "ada@", "@example.com", "ada@example"]
EMAILS += ["a b@c.de", "ada@-x.com", "", "x" * 242 + "@example.com", "x" * 243 + "@example.com"]
PERCENTAGES = [target.PERCENTAGE_MIN, target.PERCENTAGE_MAX]
PERCENTAGES += [target.PERCENTAGE_MIN - 0.001, target.PERCENTAGE_MAX + 0.001]


def test_every_column_exists_with_its_type_and_none_is_missing(catalog):
    for dt in target.DOCUMENT_TYPES:
        tbl = target.table(dt)
        assert tbl in catalog["columns"], f"table {tbl} does not exist after apply-schema"
        expected = {c: t.sql_type for c, t in target.table_columns(dt).items()}
        assert catalog["columns"][tbl] == expected, tbl
        assert list(expected) == list(target.columns(dt))


def test_document_types_are_the_tables_of_the_sql_core(catalog):
    assert catalog["tables"] == {dt: target.table(dt) for dt in target.DOCUMENT_TYPES}


def test_references_are_the_foreign_keys(catalog):
    for dt in target.DOCUMENT_TYPES:
        tbl = target.table(dt)
        refs = target.reference_columns(dt)
        in_db = {col: to for src, col, to in catalog["fks"] if src == tbl}
        assert in_db == {col: target.table(to) for col, to in refs.items()}, tbl
        for col, to in refs.items():
            assert target.referenced_type(col) == to
            assert target.column_types(dt)[col].reference
    assert target.referenced_type("resume_id") == "resume"
    assert target.referenced_type("job_id") == "job"
    assert target.referenced_type("parent_optimization_id") == "optimization"
    for col in ("id", "user_id", "status", "no_such_column"):
        assert target.referenced_type(col) is None


def test_verify_schema_integrity_expects_the_same_columns(catalog):
    expected: dict[str, dict[str, str]] = {}
    for check, status, detail in catalog["verify"]:
        tbl, _, col = check.removeprefix("column ").partition(".")
        assert status == "ok", (check, detail)
        expected.setdefault(tbl, {})[col] = detail
    for dt in target.DOCUMENT_TYPES:
        assert expected[target.table(dt)] == {
            c: t.sql_type for c, t in target.table_columns(dt).items()
        }


def test_the_merge_core_nulls_exactly_the_reference_columns(catalog):
    values = re.search(r"FROM \(VALUES (.*?)\) AS v\(col, ref\)", catalog["merge"], re.S)
    assert values is not None, "etl_merge_stage no longer lists its reference columns"
    in_sql = dict(re.findall(r"\('(\w+)', '(\w+)'\)", values.group(1)))
    in_python = {
        col: target.table(to)
        for dt in target.DOCUMENT_TYPES
        for col, to in target.reference_columns(dt).items()
    }
    assert in_sql == in_python


def test_email_and_percentage_rules_are_the_database_ones(catalog):
    assert {v: target.is_valid_email(v) for v in EMAILS} == catalog["emails"]
    assert catalog["percentages"] == {
        target.PERCENTAGE_MIN: True,
        target.PERCENTAGE_MAX: True,
        target.PERCENTAGE_MIN - 0.001: False,
        target.PERCENTAGE_MAX + 0.001: False,
    }
    for v, fits in catalog["percentages"].items():
        assert target.coerce(target.ColumnType("percentage"), v)[0] == fits
