"""Pure transform: one source document -> Row | Reject | Unmapped | EdgeLink. No I/O.

A Row holds the canonical row of its table (every column, None where the source has nothing,
plus parsed_data and metadata) under the id uuid5("<collection>/<_key>"). Lossless:
rebuild_source() gives the source document back. Bad inputs: see tests/test_transform.py.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from etl import jsonutil
from etl.generic import transform as generic
from etl.jsonutil import type_name
from etl.mapping import (
    SECTIONS,
    CollectionMapping,
    EdgeSpec,
    Field_,
    Mapping,
    Target,
    split_path,
)
from etl.target import PERCENTAGE_MAX, PERCENTAGE_MIN, coerce, columns, is_valid_email

ETL_NAMESPACE = uuid.UUID("5b0e4f4a-7c1d-4e8a-9a3b-2f6d8c1e0a57")

SYSTEM_ATTRS = ("_key", "_id", "_rev")


# `etl fallback` gives a row the application created in PostgreSQL the key "pg-<its row id>"
# (docs/sync.md): such a key maps back to that row id, so the row and its document stay one.
FALLBACK_KEY = re.compile(r"pg-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def row_id(collection: str, key: str) -> str:
    """The deterministic row id of a source document: uuid5 of "<collection>/<_key>", or the
    row id a fallback key ("pg-<uuid>") carries."""
    if key.startswith("pg-"):
        m = FALLBACK_KEY.fullmatch(key)
        if m is not None:
            return m.group(1)
    return str(uuid.uuid5(ETL_NAMESPACE, f"{collection}/{key}"))


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    document_type: str
    key: str
    values: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Reject:
    collection: str
    key: str | None
    reason: str
    document: str  # the source document as JSON text (escapes kept)


@dataclass(frozen=True, slots=True)
class Unmapped:
    collection: str
    key: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class EdgeLink:
    key: str
    target_id: str  # the research row the edge points at (_to)
    job_id: str  # the job row it comes from (_from)
    edge: dict[str, Any]  # the whole edge document (kept in metadata.edges[key])


class _Bad(Exception):
    """A document that cannot be loaded; the message is the reject reason."""


# -- value rules ----------------------------------------------------------------------------


def not_a_row(
    collection: str, doc: Any, t: Reject | Unmapped
) -> tuple[str, str | None, Any, str, str]:
    """The etl_rejects record of a document that is not a row (state.write_rejects), the same
    for migrate and sync: (collection, key, document, reason, stage)."""
    stage = "unmapped" if isinstance(t, Unmapped) else "transform"
    return (collection, t.key, doc, t.reason, stage)


def reference_key(raw: Any) -> str | None:
    """The key a reference value names: a non-empty string, or an integer's decimal string;
    anything else names no row (the column stays NULL, with a warning)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, str) and raw:
        return raw
    return None


def _short(v: Any, n: int = 60) -> str:
    """A field value in a reject reason or warning: only its type unless --show-values."""
    from etl.privacy import shown

    return shown(v, n)


def _ref(v: Any) -> str:
    """An edge's _from or _to: a document id (as the reject's key is) when it is a string."""
    return _literal(v) if isinstance(v, str) else _short(v)


def _literal(v: Any, n: int = 60) -> str:
    """A value of the mapping itself (a default), not of a document: always shown."""
    try:
        s = jsonutil.dumps_str(v)
    except Exception:  # noqa: BLE001 - only for a message
        s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    """Exactly the same JSON value (type and, for floats, sign of zero)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    v: Any = doc
    for seg in path:
        if not isinstance(v, dict):
            return None
        v = v.get(seg)
        if v is None:
            return None
    return v


# -- strings PostgreSQL cannot hold -------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_encode = msgspec.json.Encoder().encode
_UNESCAPE = re.compile(r"\\(\\|u([0-9a-f]{4}))")


def _pathstr(path: list[Any]) -> str:
    """a.b[0].c for a reject reason; a name with a control character (a newline, U+0000, a lone
    surrogate...) is written as ["JSON string"], so the reason stays one printable line."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not str(p).isprintable():
            out += "[" + json.dumps(str(p)) + "]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(document)"


def _unescape_str(s: str) -> str:
    return _UNESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(2), 16)), s)


class _StringFixer:
    """Applies the nul/surrogate policies to a whole document, copying only what changes."""

    def __init__(self, nul: str, sur: str):
        self.nul, self.sur = nul, sur
        self.escaped: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def fix_str(self, s: str, path: list[Any], what: str) -> str:
        has_nul = "\x00" in s
        m = _SURROGATE.search(s)
        if not has_nul and m is None:
            return s
        where = _pathstr(path) + (f" (key {_literal(s, 40)})" if what == "key" else "")
        if has_nul and self.nul == "reject":
            raise _Bad(f"nul_in_string: {where} contains \\u0000")
        if m is not None and self.sur == "reject":
            raise _Bad(f"lone_surrogate: {where} contains a lone surrogate \\u{ord(m.group()):04x}")
        if has_nul and self.nul == "strip":
            s = s.replace("\x00", "")
            self.warnings.append(f"stripped_nul: {where} lost its \\u0000 characters")
        if m is not None and self.sur == "strip":
            s = _SURROGATE.sub("\ufffd", s)
            self.warnings.append(f"replaced_surrogate: {where} lone surrogates became U+FFFD")
        if ("\x00" in s) or _SURROGATE.search(s):  # what is left is to be escaped
            s = s.replace("\\", "\\\\").replace("\x00", "\\u0000")
            s = _SURROGATE.sub(lambda x: f"\\u{ord(x.group()):04x}", s)
        return s

    def fix(self, v: Any, path: list[Any]) -> Any:
        if isinstance(v, str):
            new = self.fix_str(v, path, "value")
            if new is not v and new != v and self._escaping(v):
                self.escaped.append({"path": list(path), "key": None})
            return new
        if isinstance(v, dict):
            out: dict[str, Any] | None = None
            renamed: list[tuple[str, str]] = []
            for i, (k, x) in enumerate(v.items()):
                nk = self.fix_str(k, path, "key")
                path.append(nk)
                nx = self.fix(x, path)
                path.pop()
                if out is None and (nk is not k or nx is not x):
                    out = dict(list(v.items())[:i])
                if out is not None:
                    out[nk] = nx
                if nk != k and self._escaping(k):
                    renamed.append((k, nk))
            for _old, nk in renamed:  # after the children: rebuild undoes them children first
                self.escaped.append({"path": list(path), "key": nk})
            return v if out is None else out
        if isinstance(v, list):
            out_l: list[Any] | None = None
            for i, x in enumerate(v):
                path.append(i)
                nx = self.fix(x, path)
                path.pop()
                if nx is not x and out_l is None:
                    out_l = list(v[:i])
                if out_l is not None:
                    out_l.append(nx)
            return v if out_l is None else out_l
        return v

    def _escaping(self, original: str) -> bool:
        return ("\x00" in original and self.nul == "escape") or (
            _SURROGATE.search(original) is not None and self.sur == "escape"
        )


def _unescape_doc(doc: dict[str, Any], escaped: list[dict[str, Any]]) -> None:
    """Undo the "escape" policies in place, in recording order (children before parents)."""
    for e in escaped:
        container: Any = doc
        path = e["path"]
        if e["key"] is None:
            for p in path[:-1]:
                container = container[p]
            container[path[-1]] = _unescape_str(container[path[-1]])
        else:
            for p in path:
                container = container[p]
            items = list(container.items())
            container.clear()
            for k, x in items:
                container[_unescape_str(k) if k == e["key"] else k] = x


# -- the transformer ----------------------------------------------------------------------------


class Transformer:
    """transform(collection, doc) for one run. Does not modify `doc`; the Row shares unchanged
    sub-objects with it (no deep copies), so callers must not mutate either afterwards."""

    def __init__(self, mapping: Mapping, run_id: str, migrated_at: datetime | str):
        self.mapping = mapping
        self.run_id = run_id
        if isinstance(migrated_at, datetime):
            migrated_at = (
                migrated_at.replace(tzinfo=UTC)
                if migrated_at.tzinfo is None
                else migrated_at.astimezone(UTC)
            ).isoformat()
        self.migrated_at = migrated_at
        self._templates: dict[str, dict[str, Any]] = {}
        self._strings_policy = (mapping.nul_in_strings, mapping.lone_surrogates)

    # public ------------------------------------------------------------------------------
    def transform(self, collection: str, doc: Any) -> Row | Reject | Unmapped | EdgeLink:
        if not isinstance(doc, dict):
            return Reject(
                collection, None, f"not_an_object: the document is {type_name(doc)}", _dump(doc)
            )
        key = doc.get("_key")
        if not isinstance(key, str) or not key:
            return Reject(
                collection,
                None if key is None else str(key),
                f"missing_key: _key is {type_name(key)}, not a non-empty string",
                _dump(doc),
            )
        if "\x00" in key or _SURROGATE.search(key):
            # No policy applies to the identity: the row id, the reject store and checkpoints need
            # the key as valid text, and ArangoDB never makes such a key.
            what = "\\u0000" if "\x00" in key else "a lone surrogate"
            return Reject(
                collection, key, f"bad_key: _key contains {what} (ArangoDB keys cannot)", _dump(doc)
            )
        cm = self.mapping.for_collection(collection)
        if cm is None:
            return Unmapped(collection, key, self.mapping.unmapped_reason(collection))
        try:
            clean, escaped, warnings = self._strings(doc)
            if cm.generic is not None:
                return self._generic(cm, key, clean, escaped, warnings, doc)
            if cm.edge is not None:
                return self._edge(cm.edge, key, clean, escaped)
            target = cm.target
            if target is None:
                assert cm.route_on is not None and cm.routes is not None  # a routed collection
                value = _get(clean, cm.route_on)
                target = cm.routes.get(value) if isinstance(value, str) else None
                if target is None:
                    return Unmapped(
                        collection,
                        key,
                        f"unmapped_type: {'.'.join(cm.route_on)}="
                        f"{_literal(value, 40)} has no mapping",
                    )
            return self._row(target, key, clean, escaped, warnings)
        except _Bad as exc:
            return Reject(collection, key, str(exc), _dump(doc))
        except RecursionError:
            return Reject(
                collection,
                key,
                "too_deep: the document is nested too deeply to migrate",
                _dump(doc),
            )

    def rebuild(self, row: Row) -> dict[str, Any]:
        return rebuild_source(row.values, self.mapping, row.document_type)

    # steps -------------------------------------------------------------------------------
    def _generic(
        self,
        cm: CollectionMapping,
        key: str,
        clean: dict[str, Any],
        escaped: list[Any] | None,
        warnings: list[str],
        doc: dict[str, Any],
    ) -> Row | Reject:
        g = cm.generic
        assert g is not None  # a generic collection
        problem = generic.edge_problem(clean) if g.edge else None
        if problem:
            return Reject(cm.name, key, problem, _dump(doc))
        etl = {
            "run_id": self.run_id,
            "migrated_at": self.migrated_at,
            "mapping_version": self.mapping.version,
        }
        values = generic.values(g, key, clean, escaped, etl, row_id)
        return Row(g.document_type, key, values, tuple(dict.fromkeys(warnings)))

    def _strings(self, doc: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None, list[str]]:
        try:
            enc = _encode(doc)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - lone surrogates (UnicodeEncodeError) or anything odd
            pass
        else:
            if b"\\u0000" not in enc:
                return doc, None, []
        fixer = _StringFixer(*self._strings_policy)
        clean = fixer.fix(doc, [])
        return clean, (fixer.escaped or None), fixer.warnings

    def _edge(
        self, spec: EdgeSpec, key: str, doc: dict[str, Any], escaped: list[Any] | None
    ) -> EdgeLink:
        ends = []
        for attr, coll, code in (
            ("_from", spec.from_collection, "edge_bad_from"),
            ("_to", spec.to_collection, "edge_bad_to"),
        ):
            v = doc.get(attr)
            if not isinstance(v, str) or "/" not in v:
                raise _Bad(f"{code}: {attr} is {_ref(v)}, not '<collection>/<key>'")
            c, _, k = v.partition("/")
            if c != coll or not k:
                raise _Bad(f"{code}: {attr} {_ref(v)} is not in collection {coll!r}")
            ends.append(k)
        edge = doc if escaped is None else {**doc, "_etl_escaped": escaped}
        return EdgeLink(
            key, row_id(spec.to_collection, ends[1]), row_id(spec.from_collection, ends[0]), edge
        )

    def _template(self, document_type: str) -> dict[str, Any]:
        t = self._templates.get(document_type)
        if t is None:
            t = self._templates[document_type] = dict.fromkeys(columns(document_type))
        return t

    def _row(
        self,
        target: Target,
        key: str,
        doc: dict[str, Any],
        escaped: list[Any] | None,
        warnings: list[str],
    ) -> Row:
        consumed: set[str] = set()
        original: dict[str, Any] = {}
        mapped_from: dict[str, Any] = {}
        values = self._template(target.document_type).copy()
        values["id"] = row_id(target.collection, key)

        for f in target.columns:
            ctype = f.type
            assert ctype is not None  # a column always has a type (only metadata has none)
            found = self._resolve(f, doc, warnings)
            if found is None:
                if f.name == "user_id":
                    self._no_user(f, doc)
                if f.default is not None:
                    values[f.name] = coerce(ctype, f.default)[1]
                    mapped_from[f.name] = None
                    warnings.append(
                        f"default: {f.name} = {_literal(f.default)} (no usable "
                        f"{' / '.join(f.path_strings)})"
                    )
                continue
            i, value, raw = found
            values[f.name] = value
            path = f.paths[i]
            if i:
                mapped_from[f.name] = f.path_strings[i]
            if len(path) == 1:
                consumed.add(path[0])
                if not _same(value, raw):
                    original[path[0]] = raw
            if (
                ctype.kind == "varchar"
                and ctype.length is not None
                and isinstance(raw, str)
                and len(raw) > ctype.length
            ):
                warnings.append(
                    f"truncated: {f.name} to {ctype.length} characters "
                    f"(full value kept in metadata)"
                )

        for f in target.references:
            assert f.collection is not None  # a reference names its collection
            for i, path in enumerate(f.paths):
                raw = _get(doc, path)
                if raw is None:
                    continue
                named = reference_key(raw)
                if named is not None:
                    values[f.name] = row_id(f.collection, named)
                else:
                    warnings.append(
                        f"bad_reference: {f.path_strings[i]} is {type_name(raw)}; "
                        f"{f.name} left null (value kept in metadata.extra)"
                    )
                break

        meta_entries: dict[str, Any] = {}
        for f in target.metadata:
            for i, path in enumerate(f.paths):
                raw = _get(doc, path)
                if raw is None:
                    continue
                meta_entries[f.name] = raw
                if i:
                    mapped_from[f.name] = f.path_strings[i]
                if len(path) == 1:
                    consumed.add(path[0])
                break
            else:
                if f.default is not None:
                    meta_entries[f.name] = f.default
                    mapped_from[f.name] = None

        parsed: dict[str, Any] | None = None
        for i, name in enumerate(target.parsed_data):
            v = doc.get(name)
            if isinstance(v, dict):
                parsed = v
                consumed.add(name)
                if i:
                    mapped_from["parsed_data"] = name
                break
        if parsed is None:
            present = [s for s in target.sections if s in doc]
            if present:
                parsed = {s: doc[s] for s in present}
                consumed.update(present)
                mapped_from["parsed_data"] = SECTIONS
            else:
                parsed = {}
                if target.parsed_data:
                    mapped_from["parsed_data"] = None
        self._validate(target, parsed, values.get("status"))
        values["parsed_data"] = parsed

        # _id and _rev are provenance when they are what ArangoDB writes (strings); a file can
        # hold anything there (null, a number): that stays in extra, so nothing is lost
        system = {k: doc[k] for k in ("_id", "_rev") if isinstance(doc.get(k), str)}
        extra = {
            k: v for k, v in doc.items() if k not in consumed and k != "_key" and k not in system
        }
        metadata: dict[str, Any] = {
            "source": "arangodb",
            "arango": {
                "collection": target.collection,
                "_key": key,
                "_id": system.get("_id"),
                "_rev": system.get("_rev"),
            },
            "etl": {
                "run_id": self.run_id,
                "migrated_at": self.migrated_at,
                "mapping_version": self.mapping.version,
            },
            "extra": extra,
        }
        metadata.update(meta_entries)
        if original:
            metadata["original"] = original
        if mapped_from:
            metadata["mapped_from"] = mapped_from
        if escaped:
            metadata["escaped"] = escaped
        values["metadata"] = metadata
        return Row(target.document_type, key, values, tuple(dict.fromkeys(warnings)))

    @staticmethod
    def _resolve(
        f: Field_, doc: dict[str, Any], warnings: list[str]
    ) -> tuple[int, Any, Any] | None:
        for i, path in enumerate(f.paths):
            raw = _get(doc, path)
            if raw is None:
                continue
            assert f.type is not None  # a column (metadata entries are not coerced)
            ok, value = coerce(f.type, raw)
            if ok:
                return i, value, raw
            if f.name != "user_id":
                warnings.append(
                    f"unfit_value: {f.name} <- {f.path_strings[i]} = {_short(raw)}: "
                    f"{value}; column left to the next path or null, value kept in metadata"
                )
        return None

    @staticmethod
    def _no_user(f: Field_, doc: dict[str, Any]) -> None:
        for p, s in zip(f.paths, f.path_strings):
            raw = _get(doc, p)
            if raw is not None:
                raise _Bad(
                    f"bad_user_id: {s} is {_short(raw, 40)} ({type_name(raw)}); "
                    "a non-empty string or an integer is required"
                )
        raise _Bad(f"missing_user_id: none of {', '.join(f.path_strings)} is present")

    @staticmethod
    def _validate(target: Target, parsed: dict[str, Any], status: Any) -> None:
        """The checks sql/006 (validate_document_data) makes, so a row it would refuse is
        rejected here with the same field named, instead of costing a bisection at load."""
        if not parsed:
            if status in target.nonempty_when_status:
                raise _Bad(f"empty_parsed_data: parsed_data is empty but status is {status!r}")
            return
        for list_path in target.list_fields:
            _check_lists(parsed, list_path, 0, "parsed_data")
        for path in target.object_fields:
            v = _get(parsed, path)
            if v is not None and not isinstance(v, dict):
                raise _Bad(
                    f"not_an_object: parsed_data.{'.'.join(path)} is {type_name(v)}; "
                    "the database requires an object"
                )
        for path in target.email_fields:
            v = _get(parsed, path)
            if v is None or v == "":
                continue
            if not isinstance(v, str) or not is_valid_email(v):
                raise _Bad(
                    f"bad_email: parsed_data.{'.'.join(path)} is {_short(v, 60)}, not an email address"
                )
        # like the database: the first range key present wins (even when null); when it is not
        # an object, the separate min/max pairs are compared instead
        pairs: list[tuple[Any, Any, str]] = []
        for path in target.range_fields:
            parent = _get(parsed, path[:-1]) if len(path) > 1 else parsed
            if isinstance(parent, dict) and path[-1] in parent:
                v = parent[path[-1]]
                if isinstance(v, dict):
                    pairs.append((v.get("min"), v.get("max"), ".".join(path)))
                break
        if not pairs:
            pairs = [
                (_get(parsed, a), _get(parsed, b), ".".join(a)) for a, b in target.min_max_pairs
            ]
        for lo, hi, where in pairs:
            if _is_number(lo) and _is_number(hi) and lo > hi:
                raise _Bad(f"bad_range: parsed_data.{where} has min {lo} > max {hi}")
        for path in target.score_fields:
            v = _get(parsed, path)
            if _is_number(v) and not (PERCENTAGE_MIN <= v <= PERCENTAGE_MAX):
                raise _Bad(
                    f"bad_score: parsed_data.{'.'.join(path)} = {_short(v)} is outside 0..100"
                )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_lists(v: Any, path: tuple[tuple[str, bool], ...], i: int, where: str) -> None:
    if not isinstance(v, dict):
        return
    seg, each = path[i]
    x = v.get(seg)
    if x is None:
        return
    here = f"{where}.{seg}"
    last = i == len(path) - 1
    if last or each:
        if not isinstance(x, list):
            raise _Bad(f"not_a_list: {here} is {type_name(x)}; the database requires an array")
    if last:
        if each:
            for j, el in enumerate(x):
                if el is not None and not isinstance(el, list):
                    raise _Bad(
                        f"not_a_list: {here}[{j}] is {type_name(el)}; the database requires an array"
                    )
        return
    if each:
        for j, el in enumerate(x):
            _check_lists(el, path, i + 1, f"{here}[{j}]")
    else:
        _check_lists(x, path, i + 1, here)


def _dump(doc: Any) -> str:
    """The source document as JSON text for the reject store (escapes kept)."""
    try:
        return jsonutil.dumps_str(doc)
    except RecursionError:
        return _dump_iterative(doc)


def _dump_iterative(doc: Any) -> str:
    """JSON text of a document nested too deeply for the recursive encoders (no depth limit)."""
    import json

    out: list[str] = []

    def scalar(v: Any) -> str:
        return json.dumps(v, ensure_ascii=True)

    # stack of iterators; a str entry on the stack is literal text to emit
    stack: list[Any] = [iter([(None, doc)])]
    while stack:
        top = stack[-1]
        if isinstance(top, str):
            out.append(stack.pop())
            continue
        try:
            k, v = next(top)
        except StopIteration:
            stack.pop()
            continue
        if k is not None:
            out.append(scalar(k) + ":")
        if isinstance(v, dict):
            out.append("{")
            stack.append("}")
            stack.append(_joined(iter(v.items()), out))
        elif isinstance(v, list):
            out.append("[")
            stack.append("]")
            stack.append(_joined(((None, x) for x in v), out))
        else:
            out.append(scalar(v))
    return "".join(out)


def _joined(items: Iterable[tuple[Any, Any]], out: list[str]) -> Iterator[tuple[Any, Any]]:
    """Yield items, writing the separating commas into out."""
    for i, item in enumerate(items):
        if i:
            out.append(",")
        yield item


# -- the inverse ------------------------------------------------------------------------------


def rebuild_source(values: dict[str, Any], mapping: Mapping, document_type: str) -> dict[str, Any]:
    """The source document a canonical row was made from (the proof the transform is lossless).

    Exact for every document except under the lossy "strip" policies."""
    md = values["metadata"]
    if "data" in values and "parsed_data" not in values:  # a generic table's row
        generic_doc = generic.rebuild(values)
        if md.get("escaped"):
            generic_doc = _deepish_copy(generic_doc)
            _unescape_doc(generic_doc, md["escaped"])
        return generic_doc
    arango = md["arango"]
    cm = mapping.for_collection(arango["collection"])
    assert cm is not None  # the row was loaded through this mapping
    target = next(
        t for t in cm.targets() if isinstance(t, Target) and t.document_type == document_type
    )
    doc: dict[str, Any] = {}
    for k in SYSTEM_ATTRS:
        if arango.get(k) is not None:
            doc[k] = arango[k]
    doc.update(md.get("extra") or {})
    mapped_from = md.get("mapped_from") or {}
    original = md.get("original") or {}

    def put(name: str, first: str | None, value: Any) -> None:
        src = mapped_from[name] if name in mapped_from else first
        if src is None or value is None:
            return
        if src == SECTIONS:
            doc.update(value)
            return
        path = split_path(src)
        if len(path) == 1 and path[0] not in doc:
            doc[path[0]] = original.get(path[0], value)

    for f in target.columns:
        put(f.name, f.path_strings[0], values.get(f.name))
    for f in target.metadata:
        put(f.name, f.path_strings[0], md.get(f.name))
    put(
        "parsed_data",
        target.parsed_data[0] if target.parsed_data else None,
        values.get("parsed_data"),
    )
    if md.get("escaped"):
        doc = _deepish_copy(doc)
        _unescape_doc(doc, md["escaped"])
    return doc


def rebuild_edge(edge: dict[str, Any]) -> dict[str, Any]:
    """The source edge document of an EdgeLink."""
    escaped = edge.get("_etl_escaped")
    if not escaped:
        return edge
    doc: dict[str, Any] = _deepish_copy({k: v for k, v in edge.items() if k != "_etl_escaped"})
    _unescape_doc(doc, escaped)
    return doc


def _deepish_copy(v: Any) -> Any:
    """A copy of the dicts and lists of v (leaves shared). Iterative: the transform accepts
    documents nested nearly as deep as Python's recursion limit, and rebuilding one must not
    fail where transforming it did not."""
    if not isinstance(v, (dict, list)):
        return v
    root = dict(v) if isinstance(v, dict) else list(v)
    stack = [root]
    while stack:
        c = stack.pop()
        for k, x in c.items() if isinstance(c, dict) else enumerate(c):
            if isinstance(x, (dict, list)):
                c[k] = y = dict(x) if isinstance(x, dict) else list(x)
                stack.append(y)
    return root
