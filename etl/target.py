"""The target schema's facts in Python: document types, their tables, every column with its type,
which columns reference which document type, and whether a source value fits a column type.

Mirrors sql/003 (tables), sql/006 (email and score rules) and sql/007 (the merge core's
reference columns); tests/test_target.py compares it with the catalog after apply-schema.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import sql

from etl.generic.names import is_generic
from etl.jsonutil import type_name

Kind = Literal[
    "text", "varchar", "bigint", "percentage", "bool", "timestamptz", "uuid", "user_id", "jsonb"
]

# the PostgreSQL type (format_type) of each kind; varchar adds its length
_SQL_TYPES = {
    "text": "text",
    "varchar": "character varying",
    "bigint": "bigint",
    "percentage": "percentage",
    "bool": "boolean",
    "timestamptz": "timestamp with time zone",
    "uuid": "uuid",
    "user_id": "text",
    "jsonb": "jsonb",
}


@dataclass(frozen=True, slots=True)
class ColumnType:
    kind: Kind
    length: int | None = None  # varchar(n)
    references: str | None = None  # the document type whose row id this uuid column holds

    @property
    def reference(self) -> bool:
        """Filled by a reference (a computed row id), not by a source path."""
        return self.references is not None

    @property
    def sql_type(self) -> str:
        """The column's type as PostgreSQL's format_type() prints it."""
        base = _SQL_TYPES[self.kind]
        return f"{base}({self.length})" if self.length is not None else base


def _v(n: int) -> ColumnType:
    return ColumnType("varchar", n)


def _ref(document_type: str) -> ColumnType:
    return ColumnType("uuid", references=document_type)


_TEXT = ColumnType("text")
_TS = ColumnType("timestamptz")

# Per document type: (table, its own columns in table order). The columns every document table
# has (ID_COLUMN, COMMON_HEAD, COMMON_TAIL, JSONB_COLUMNS) are added around them by columns().
TABLES: dict[str, tuple[str, dict[str, ColumnType]]] = {
    "resume": (
        "resume_documents",
        {
            "filename": _v(255),
            "content_type": _v(100),
            "file_size": ColumnType("bigint"),
            "file_hash": _TEXT,
            "status": _v(50),
            "source": _v(50),
            "task_id": _TEXT,
            "error_message": _TEXT,
        },
    ),
    "job": (
        "job_documents",
        {
            "title": _v(500),
            "company": _v(255),
            "location": _v(255),
            "remote_type": _v(50),
            "job_url": _TEXT,
            "source_url": _TEXT,
            "status": _v(50),
        },
    ),
    "optimization": (
        "optimization_results",
        {
            "resume_id": _ref("resume"),
            "job_id": _ref("job"),
            "parent_optimization_id": _ref("optimization"),
            "optimization_type": _v(50),
            "status": _v(50),
            "content": _TEXT,
            "ats_score": ColumnType("percentage"),
            "keyword_match_score": ColumnType("percentage"),
            "task_id": _TEXT,
        },
    ),
    "research": (
        "research_results",
        {
            "job_id": _ref("job"),
            "resume_id": _ref("resume"),
            "company": _v(255),
            "job_title": _v(500),
            "report_type": _v(50),
            "content": _TEXT,
            "status": _v(50),
            "task_id": _TEXT,
        },
    ),
}
DOCUMENT_TYPES = tuple(TABLES)
ID_COLUMN = ("id", ColumnType("uuid"))  # the row id (etl.transform.row_id)
COMMON_HEAD: dict[str, ColumnType] = {"user_id": ColumnType("user_id")}
COMMON_TAIL: dict[str, ColumnType] = {
    "created_at": _TS,
    "updated_at": _TS,
    "is_active": ColumnType("bool"),
    "expires_at": _TS,
    "deleted_at": _TS,
}
AUDIT_TABLE = "document_audit_log"  # sql/006: the audit triggers and reconcile write it
JSONB_COLUMNS = ("parsed_data", "metadata")

# sql/006: is_valid_email() and the percentage domain / parsed_data score range
EMAIL_MAX_LENGTH = 254
EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
PERCENTAGE_MIN, PERCENTAGE_MAX = 0, 100
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def table(document_type: str) -> str:
    """The table of a document type; a generic target's document type is its table."""
    if is_generic(document_type):
        return document_type
    return TABLES[document_type][0]


def qualified(document_type: str) -> str:
    """The schema-qualified table of a document type ("public.resume_documents")."""
    name = table(document_type)
    return name if "." in name else f"public.{name}"


def ident(table_name: str) -> sql.Identifier:
    """A table name as SQL: "arango.users" -> "arango"."users" (generic names hold no dots)."""
    return sql.Identifier(*table_name.split("."))


def column_types(document_type: str) -> dict[str, ColumnType]:
    """Every column a mapping can fill for this document type (references included)."""
    return {**COMMON_HEAD, **TABLES[document_type][1], **COMMON_TAIL}


def columns(document_type: str) -> tuple[str, ...]:
    """The canonical row's keys, in order: id, user_id, table columns, common, jsonb."""
    return (ID_COLUMN[0], *column_types(document_type), *JSONB_COLUMNS)


def table_columns(document_type: str) -> dict[str, ColumnType]:
    """Every column of the document type's table (the canonical row's keys) with its type."""
    jsonb = ColumnType("jsonb")
    return {
        ID_COLUMN[0]: ID_COLUMN[1],
        **column_types(document_type),
        **dict.fromkeys(JSONB_COLUMNS, jsonb),
    }


def reference_columns(document_type: str) -> dict[str, str]:
    """The document type's reference columns -> the document type each one points at."""
    return {n: t.references for n, t in TABLES[document_type][1].items() if t.references}


def _references() -> dict[str, str]:
    out: dict[str, str] = {}
    for dt in DOCUMENT_TYPES:
        for name, to in reference_columns(dt).items():
            if (
                out.setdefault(name, to) != to
            ):  # pragma: no cover - a schema fact, checked on import
                raise AssertionError(f"reference column {name} points at {out[name]} and {to}")
    return out


_REFERENCES = _references()


def referenced_type(column: str) -> str | None:
    """The document type a reference column (in any table) points at; None if it is not one."""
    return _REFERENCES.get(column)


def is_valid_email(s: str) -> bool:
    """sql/006's is_valid_email(): at most 254 characters and the same pattern."""
    return len(s) <= EMAIL_MAX_LENGTH and EMAIL_RE.fullmatch(s) is not None


# -- does a source value fit a column type ---------------------------------------------------

_YEAR = re.compile(r"^(\d{4})(?:-(\d{2}))?$")
_DIGITS = re.compile(r"^-?\d{11,}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(v: Any) -> str | None:
    """A timestamp in any accepted form -> UTC ISO string; None when it is not one."""
    try:
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            dt = _EPOCH + timedelta(milliseconds=v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                return None
            dt = _EPOCH + timedelta(milliseconds=v)
        elif isinstance(v, str):
            s = v.strip()
            m = _YEAR.match(s)
            if m:
                dt = datetime(int(m.group(1)), int(m.group(2) or 1), 1, tzinfo=UTC)
            elif _DIGITS.match(s):
                dt = _EPOCH + timedelta(milliseconds=int(s))
            else:
                dt = datetime.fromisoformat(s)
                dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
        else:
            return None
        if dt.year < 1:  # pragma: no cover - datetime cannot go below year 1 anyway
            return None
        return dt.isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def coerce(ct: ColumnType, v: Any) -> tuple[bool, Any]:
    """(True, column value) when column type `ct` can hold source value v, else (False, reason)."""
    kind = ct.kind
    if v is None:
        return False, "null"
    if kind == "varchar" or kind == "text":
        if not isinstance(v, str):
            return False, f"{type_name(v)}, the column is text"
        if ct.length is not None and len(v) > ct.length:
            return True, v[: ct.length]
        return True, v
    if kind == "timestamptz":
        ts = parse_timestamp(v)
        return (True, ts) if ts is not None else (False, "not a timestamp")
    if kind == "user_id":
        if isinstance(v, str):
            return (True, v) if v.strip() else (False, "empty")
        if isinstance(v, int) and not isinstance(v, bool):
            return True, str(v)
        return False, type_name(v)
    if kind == "bool":
        return (
            (True, v) if isinstance(v, bool) else (False, f"{type_name(v)}, the column is boolean")
        )
    if kind == "bigint":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False, f"{type_name(v)}, the column is bigint"
        if isinstance(v, float):
            if not math.isfinite(v) or v != int(v):
                return False, "not an integer, the column is bigint"
            v = int(v)
        if BIGINT_MIN <= v <= BIGINT_MAX:
            return True, v
        return False, "out of the bigint range"
    if kind == "percentage":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False, f"{type_name(v)}, the column is a percentage"
        if not (PERCENTAGE_MIN <= v <= PERCENTAGE_MAX):  # also false for NaN
            return False, "out of the percentage range 0..100"
        if v == 0:
            v = 0 if isinstance(v, int) else 0.0  # numeric has no negative zero
        return True, v
    return False, f"column kind {kind}"  # pragma: no cover - uuid columns are references
