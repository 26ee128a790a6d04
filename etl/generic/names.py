"""PostgreSQL names for generic tables, columns and indexes: a name that is a plain lower-case
identifier is kept; any other is made one deterministically (a hash of the original keeps two
different names apart), so the same collection always gets the same table."""

from __future__ import annotations

import hashlib
import re

IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_IDENT = 63
DEFAULT_SCHEMA = "arango"
# the columns every generic table has; a typed column may not take one of these names
BASE_COLUMNS = ("id", "key", "data", "metadata", "from_ref", "to_ref", "from_id", "to_id")


def short_hash(name: str, n: int = 8) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def identifier(name: str, reserved: tuple[str, ...] = ()) -> str:
    """`name` when it is a plain lower-case identifier (and not reserved), else a shortened,
    lower-cased form with an 8-digit hash of the original: "userProfiles" -> "userprofiles_1f2e3d4c"."""
    if IDENT_RE.match(name) and name not in reserved:
        return name
    base = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "x"
    if base[0].isdigit():
        base = "_" + base
    return f"{base[: MAX_IDENT - 9]}_{short_hash(name)}"


def index_name(table: str, what: str) -> str:
    """<table>_<what>, shortened with a hash when it would pass 63 bytes."""
    name = f"{table}_{what}"
    if len(name) <= MAX_IDENT:
        return name
    return f"{name[: MAX_IDENT - 9]}_{short_hash(name)}"


def is_generic(document_type: str) -> bool:
    """A generic target's document type is its schema-qualified table ("arango.users"); the
    curated document types (resume, job, ...) never hold a dot."""
    return "." in document_type
