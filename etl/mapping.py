"""The collection mapping file (configs/atspro.toml) -> a validated, precompiled Mapping.

pydantic checks the structure (an unknown key is an error), then _Compiler checks the meaning
against the target schema (etl.target). Every error is one ConfigError naming the file, the key
path and the problem, before any work starts.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from etl import target
from etl.errors import ConfigError
from etl.generic.names import IDENT_RE
from etl.generic.spec import GenericSettings, GenericTarget, IndexSpec, TypedSpec, compile_target

# metadata keys the transform writes itself; a mapping's metadata entries may not use them
RESERVED_METADATA = frozenset(
    {"source", "arango", "etl", "extra", "original", "mapped_from", "escaped", "edges", "warnings"}
)


# -- paths --------------------------------------------------------------------------------------

_SEGMENT = r"[A-Za-z0-9_$@-]+"
PATH_RE = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")
LIST_PATH_RE = re.compile(rf"^{_SEGMENT}(\[\])?(\.{_SEGMENT}(\[\])?)*$")
SECTIONS = "(sections)"  # mapped_from marker: parsed_data gathered from top-level sections


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


# -- structure (pydantic) -----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    paths: list[str] = Field(min_length=1)
    default: Any = None


class ReferenceSpec(_Strict):
    paths: list[str] = Field(min_length=1)
    collection: str


def _as_column_specs(v: Any) -> Any:
    # `col = ["a", "b"]` is shorthand for `col = {paths = ["a", "b"]}`
    if isinstance(v, dict):
        return {k: ({"paths": s} if isinstance(s, (list, str)) else s) for k, s in v.items()}
    return v


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class TargetSpec(_Strict):
    document_type: str | None = None
    parsed_data: list[str] = []
    parsed_data_sections: list[str] = []
    list_fields: list[str] = []
    object_fields: list[str] = []
    email_fields: list[str] = []
    range_fields: list[str] = []
    min_max_pairs: list[list[str]] = []
    score_fields: list[str] = []
    nonempty_when_status: list[str] = []
    columns: dict[str, ColumnSpec] = {}
    metadata: dict[str, ColumnSpec] = {}
    references: dict[str, ReferenceSpec] = {}

    _cols = field_validator("columns", "metadata", mode="before")(_as_column_specs)
    _refs = field_validator("references", mode="before")(
        lambda v: (
            {
                k: (
                    {"paths": [s["path"]], **{x: y for x, y in s.items() if x != "path"}}
                    if isinstance(s, dict) and "path" in s
                    else s
                )
                for k, s in v.items()
            }
            if isinstance(v, dict)
            else v
        )
    )
    _lists = field_validator("parsed_data", mode="before")(_str_list)


class CollectionSpec(TargetSpec):
    kind: Literal["document", "edge", "unmapped", "generic"]
    route_on: str | None = None
    routes: dict[str, TargetSpec] = {}
    from_collection: str | None = None
    to_collection: str | None = None
    to_document_type: str | None = None
    sets: str | None = None
    reason: str | None = None
    # kind = "generic" (etl/generic/spec.py)
    table: str | None = None
    edge: bool = False
    typed: dict[str, TypedSpec] = {}
    indexes: list[IndexSpec] = []
    not_translated: list[str] = []
    from_collections: list[str] = []
    to_collections: list[str] = []


_GENERIC_KEYS = {
    "kind", "table", "edge", "typed", "indexes", "not_translated", "from_collections",
    "to_collections",
}  # fmt: skip


class PolicySpec(_Strict):
    on_dangling_reference: Literal["null", "reject"] = "null"
    nul_in_strings: Literal["reject", "strip", "escape"] = "reject"
    lone_surrogates: Literal["reject", "strip", "escape"] = "reject"
    order: list[str] = []
    # etl sync: a document removed in ArangoDB is deleted ("delete") or kept with is_active =
    # false and deleted_at set ("soft"); a collection truncated or dropped stops the follower
    # ("stop") or removes its rows ("apply").
    on_remove: Literal["delete", "soft"] = "delete"
    on_collection_ddl: Literal["stop", "apply"] = "stop"


class MappingSpec(_Strict):
    mapping_version: str = Field(min_length=1)
    policy: PolicySpec = PolicySpec()
    generic: GenericSettings = GenericSettings()
    collections: dict[str, CollectionSpec] = Field(min_length=1)


# -- the compiled mapping -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field_:
    """One thing to fill from ordered source paths: a column, a metadata entry or a reference."""

    name: str
    paths: tuple[tuple[str, ...], ...]  # precompiled: each path as a tuple of attribute names
    type: target.ColumnType | None = None  # None for metadata entries (any JSON value)
    default: Any = None
    collection: str | None = None  # references: the collection the key belongs to

    @property
    def path_strings(self) -> tuple[str, ...]:
        return tuple(".".join(p) for p in self.paths)


@dataclass(frozen=True, slots=True)
class Target:
    """How one collection (or one `type` route of it) becomes rows of one document type."""

    collection: str
    document_type: str
    columns: tuple[Field_, ...]  # path-fed columns, in table order (user_id first)
    references: tuple[Field_, ...]
    metadata: tuple[Field_, ...]
    parsed_data: tuple[str, ...]  # top-level attribute names, in order
    sections: tuple[str, ...]
    list_fields: tuple[tuple[tuple[str, bool], ...], ...]  # ((segment, is_list_each), ...)
    object_fields: tuple[tuple[str, ...], ...]
    email_fields: tuple[tuple[str, ...], ...]
    range_fields: tuple[tuple[str, ...], ...]
    min_max_pairs: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    score_fields: tuple[tuple[str, ...], ...]
    nonempty_when_status: frozenset[str]

    # how a row names its document: metadata.arango._key, none for a row the application
    # created (generic rows: their `key` column); found by row id (transform.row_id)
    key_column: ClassVar[str] = "id"
    key_sql: ClassVar[str] = "metadata -> 'arango' ->> '_key'"

    @property
    def table(self) -> str:
        return target.table(self.document_type)

    def key_of(self, row: dict[str, Any]) -> str | None:
        """The ArangoDB _key of a row of this table (None: the application created it)."""
        arango = (row.get("metadata") or {}).get("arango")
        key = arango.get("_key") if isinstance(arango, dict) else None
        return key if isinstance(key, str) else None

    def columns_list(self) -> tuple[str, ...]:
        return target.columns(self.document_type)


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    collection: str
    from_collection: str
    to_collection: str
    to_document_type: str
    sets: str


@dataclass(frozen=True, slots=True)
class CollectionMapping:
    name: str
    kind: Literal["document", "edge"]
    target: Target | None = None  # a plain document collection
    route_on: tuple[str, ...] | None = None
    routes: dict[str, Target] | None = None  # routed on the value at route_on
    edge: EdgeSpec | None = None
    generic: GenericTarget | None = None  # a generic table (kind "document" or "edge")

    def targets(self) -> list[Target | GenericTarget]:
        if self.generic is not None:
            return [self.generic]
        if self.target is not None:
            return [self.target]
        return list((self.routes or {}).values())


@dataclass(frozen=True)
class Mapping:
    path: str
    version: str
    on_dangling_reference: str
    nul_in_strings: str
    lone_surrogates: str
    order: tuple[str, ...]
    collections: dict[str, CollectionMapping]
    unmapped: dict[str, str]  # collection -> reason
    generic_schema: str = "arango"
    on_remove: str = "delete"
    on_collection_ddl: str = "stop"

    @property
    def mapping_version(self) -> str:
        return self.version

    def collections_in_order(self) -> Iterator[str]:
        """Mapped collections in dependency order, then the ones declared unmapped."""
        yield from self.order
        yield from (c for c in self.unmapped if c not in self.order)

    def for_collection(self, name: str) -> CollectionMapping | None:
        """The mapping of a collection; None when it is not migrated (declared unmapped or absent)."""
        return self.collections.get(name)

    def unmapped_reason(self, name: str) -> str:
        return self.unmapped.get(name, "not migrated (no mapping)")

    def target_tables(self, collection: str) -> list[TableRef]:
        """Where a collection's documents live: schema-qualified table and key column (empty
        when the collection is not migrated). For every table a document's row id
        is transform.row_id(collection, key); a generic table also has the key in `key`."""
        cm = self.collections.get(collection)
        if cm is None:
            return []
        if cm.edge is not None:  # job_research: the edge is kept in its research row
            return [TableRef(target.qualified(cm.edge.to_document_type), "id")]
        return [TableRef(target.qualified(t.document_type), t.key_column) for t in cm.targets()]

    def generic_targets(self) -> list[GenericTarget]:
        return [cm.generic for cm in self.collections.values() if cm.generic is not None]

    def document_types(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.collections.values():
            for t in c.targets():
                seen[t.document_type] = None
        return list(seen)

    @staticmethod
    def columns(document_type: str) -> tuple[str, ...]:
        return target.columns(document_type)

    @staticmethod
    def table(document_type: str) -> str:
        return target.table(document_type)


@dataclass(frozen=True, slots=True)
class TableRef:
    """A collection's target table: `table` schema-qualified, `key_column` the column to find a
    document by ("key" holds the _key; "id" holds transform.row_id(collection, _key))."""

    table: str
    key_column: str


# -- loading ---------------------------------------------------------------------------------


def load_mapping(path: str | Path) -> Mapping:
    """Read, validate and compile a mapping file; ConfigError names file, key and problem."""
    file = Path(path)
    try:
        with file.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"mapping file {file} does not exist (check migrate.mapping or ETL_MAPPING)"
        ) from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"mapping file {file}: cannot be read: {exc}") from None
    return mapping_from_dict(raw, str(file))


def mapping_from_dict(raw: dict, file: str = "<mapping>") -> Mapping:
    try:
        spec = MappingSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"mapping file {file}: key '{key}': {msg}") from None
    return _Compiler(spec, file).compile()


class _Compiler:
    def __init__(self, spec: MappingSpec, file: str):
        self.spec = spec
        self.file = file

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"mapping file {self.file}: key '{key}': {problem}")

    def compile(self) -> Mapping:
        spec = self.spec
        collections: dict[str, CollectionMapping] = {}
        unmapped: dict[str, str] = {}
        schema = spec.generic.schema_
        if not IDENT_RE.match(schema):
            raise self.fail("generic.schema", f"{schema!r} is not a plain lower-case identifier")
        tables: dict[str, str] = {}
        for name, c in spec.collections.items():
            key = f"collections.{name}"
            if c.kind == "generic":
                self._only(key, c, _GENERIC_KEYS)
                g = compile_target(self.fail, key, name, schema, c, tables)
                collections[name] = CollectionMapping(
                    name, "edge" if g.edge else "document", generic=g
                )
            elif c.kind == "unmapped":
                self._only(key, c, {"kind", "reason"})
                unmapped[name] = c.reason or "not migrated (no mapping)"
            elif c.kind == "edge":
                self._only(
                    key, c, {"kind", "from_collection", "to_collection", "to_document_type", "sets"}
                )
                collections[name] = CollectionMapping(name, "edge", edge=self._edge(key, name, c))
            elif c.route_on is not None:
                self._only(key, c, {"kind", "route_on", "routes"})
                if not PATH_RE.match(c.route_on):
                    raise self.fail(f"{key}.route_on", f"bad path syntax {c.route_on!r}")
                if not c.routes:
                    raise self.fail(f"{key}.routes", "route_on needs at least one route")
                routes = {
                    v: self._target(f"{key}.routes.{v}", name, t) for v, t in c.routes.items()
                }
                collections[name] = CollectionMapping(
                    name, "document", route_on=split_path(c.route_on), routes=routes
                )
            else:
                if c.routes:
                    raise self.fail(f"{key}.routes", "routes need route_on")
                self._only(key, c, set(TargetSpec.model_fields) | {"kind"})
                collections[name] = CollectionMapping(
                    name, "document", target=self._target(key, name, c)
                )

        # dependency order (generic collections the order leaves out come last)
        order = list(spec.policy.order)
        for i, name in enumerate(order):
            if name not in spec.collections:
                raise self.fail(f"policy.order[{i}]", f"unknown collection {name!r}")
            if name in unmapped:
                raise self.fail(f"policy.order[{i}]", f"collection {name!r} is declared unmapped")
            if name in order[:i]:
                raise self.fail(f"policy.order[{i}]", f"collection {name!r} is listed twice")
        order += [n for n, cm in collections.items() if cm.generic is not None and n not in order]
        for name in collections:
            if name not in order:
                raise self.fail(
                    "policy.order", f"mapped collection {name!r} is missing from the order"
                )
        rank = {n: i for i, n in enumerate(order)}
        for name, cm in collections.items():
            if cm.edge is not None:
                for end in (cm.edge.from_collection, cm.edge.to_collection):
                    if rank[end] > rank[name]:
                        raise self.fail(
                            "policy.order", f"edge collection {name!r} must come after {end!r}"
                        )
            for t in cm.targets():
                for ref in t.references:
                    if ref.collection not in collections:
                        raise self.fail(
                            f"collections.{name}.references.{ref.name}.collection",
                            f"unknown or unmapped collection {ref.collection!r}",
                        )
                    if collections[ref.collection].generic is not None:
                        raise self.fail(
                            f"collections.{name}.references.{ref.name}.collection",
                            f"{ref.collection!r} is a generic collection (references point at"
                            " curated tables)",
                        )
                    if collections[ref.collection].kind != "document":
                        raise self.fail(
                            f"collections.{name}.references.{ref.name}.collection",
                            f"{ref.collection!r} is an edge collection",
                        )
                    if rank[ref.collection] > rank[name]:
                        raise self.fail(
                            "policy.order",
                            f"{ref.collection!r} must come before {name!r}"
                            f" (referenced by {ref.name})",
                        )
        return Mapping(
            self.file,
            spec.mapping_version,
            spec.policy.on_dangling_reference,
            spec.policy.nul_in_strings,
            spec.policy.lone_surrogates,
            tuple(order),
            collections,
            unmapped,
            schema,
            spec.policy.on_remove,
            spec.policy.on_collection_ddl,
        )

    def _only(self, key: str, c: CollectionSpec, allowed: set[str]) -> None:
        for f in sorted(c.model_fields_set - allowed):
            article = "an" if c.kind in ("edge", "unmapped") else "a"
            raise self.fail(
                f"{key}.{f}",
                f"not allowed for {article} {c.kind} collection"
                + (" routed on a value" if c.route_on else ""),
            )

    def _edge(self, key: str, name: str, c: CollectionSpec) -> EdgeSpec:
        for f in ("from_collection", "to_collection", "to_document_type", "sets"):
            if getattr(c, f) is None:
                raise self.fail(f"{key}.{f}", "required for an edge collection")
        for f in ("from_collection", "to_collection"):
            other = self.spec.collections.get(getattr(c, f))
            if other is None or other.kind != "document":
                raise self.fail(
                    f"{key}.{f}", f"{getattr(c, f)!r} is not a mapped document collection"
                )
        if c.to_document_type not in target.DOCUMENT_TYPES:
            raise self.fail(f"{key}.to_document_type", self._unknown_type(c.to_document_type))
        refs = list(target.reference_columns(c.to_document_type))
        if c.sets not in refs:
            raise self.fail(
                f"{key}.sets",
                f"{c.sets!r} is not a reference column of "
                f"{target.table(c.to_document_type)} (one of {refs})",
            )
        # required, checked above
        assert c.from_collection and c.to_collection and c.to_document_type and c.sets
        return EdgeSpec(name, c.from_collection, c.to_collection, c.to_document_type, c.sets)

    @staticmethod
    def _unknown_type(t: str | None) -> str:
        return f"unknown document type {t!r} (known: {', '.join(target.DOCUMENT_TYPES)})"

    def _paths(
        self, key: str, paths: list[str], pattern: re.Pattern = PATH_RE
    ) -> tuple[tuple[str, ...], ...]:
        for i, p in enumerate(paths):
            if not isinstance(p, str) or not pattern.match(p):
                raise self.fail(
                    f"{key}[{i}]",
                    f"bad path syntax {p!r} (dotted attribute names, e.g. "
                    "'file_metadata.filename')",
                )
        return tuple(split_path(p) for p in paths)

    def _target(self, key: str, collection: str, t: TargetSpec) -> Target:
        if t.document_type is None:
            raise self.fail(
                f"{key}.document_type", "required (one of " + ", ".join(target.DOCUMENT_TYPES) + ")"
            )
        if t.document_type not in target.DOCUMENT_TYPES:
            raise self.fail(f"{key}.document_type", self._unknown_type(t.document_type))
        ctypes = target.column_types(t.document_type)
        tbl = target.table(t.document_type)
        cols: dict[str, Field_] = {}
        for name, cs in t.columns.items():
            ck = f"{key}.columns.{name}"
            ct = ctypes.get(name)
            if ct is None:
                known = [c for c, x in ctypes.items() if not x.reference]
                raise self.fail(
                    ck,
                    f"unknown target column for document type {t.document_type!r} "
                    f"(table {tbl} has: {', '.join(known)})",
                )
            if ct.reference:
                raise self.fail(ck, f"{name} is a reference column: map it under references")
            if cs.default is not None:
                ok, _ = target.coerce(ct, cs.default)  # the same rule the transform applies
                if not ok:
                    raise self.fail(f"{ck}.default", f"{cs.default!r} does not fit column {name}")
            cols[name] = Field_(name, self._paths(f"{ck}.paths", cs.paths), ct, cs.default)
        if "user_id" not in cols:
            raise self.fail(f"{key}.columns.user_id", "required: every row needs its user")
        refs = []
        for name, rs in t.references.items():
            rk = f"{key}.references.{name}"
            ct = ctypes.get(name)
            if ct is None or not ct.reference:
                known = [c for c, x in ctypes.items() if x.reference]
                raise self.fail(
                    rk, f"not a reference column of {tbl} (one of: {', '.join(known) or 'none'})"
                )
            refs.append(Field_(name, self._paths(f"{rk}.paths", rs.paths), ct, None, rs.collection))
        metas = []
        for name, ms in t.metadata.items():
            mk = f"{key}.metadata.{name}"
            if name in RESERVED_METADATA:
                raise self.fail(
                    mk, f"reserved metadata key (reserved: {', '.join(sorted(RESERVED_METADATA))})"
                )
            metas.append(Field_(name, self._paths(f"{mk}.paths", ms.paths), None, ms.default))
        pd = self._paths(f"{key}.parsed_data", t.parsed_data)
        for i, p in enumerate(pd):
            if len(p) != 1:
                raise self.fail(f"{key}.parsed_data[{i}]", "must be a top-level attribute name")
        secs = self._paths(f"{key}.parsed_data_sections", t.parsed_data_sections)
        for i, p in enumerate(secs):
            if len(p) != 1:
                raise self.fail(
                    f"{key}.parsed_data_sections[{i}]", "must be a top-level attribute name"
                )
        lists = self._paths(f"{key}.list_fields", t.list_fields, LIST_PATH_RE)
        compiled_lists = tuple(
            tuple((s[:-2], True) if s.endswith("[]") else (s, False) for s in p) for p in lists
        )
        pairs = []
        for i, pair in enumerate(t.min_max_pairs):
            if len(pair) != 2:
                raise self.fail(f"{key}.min_max_pairs[{i}]", "must be [min path, max path]")
            a, b = self._paths(f"{key}.min_max_pairs[{i}]", pair)
            pairs.append((a, b))
        ordered = tuple(cols[c] for c in ctypes if c in cols)
        return Target(
            collection,
            t.document_type,
            ordered,
            tuple(refs),
            tuple(metas),
            tuple(p[0] for p in pd),
            tuple(p[0] for p in secs),
            compiled_lists,
            self._paths(f"{key}.object_fields", t.object_fields),
            self._paths(f"{key}.email_fields", t.email_fields),
            self._paths(f"{key}.range_fields", t.range_fields),
            tuple(pairs),
            self._paths(f"{key}.score_fields", t.score_fields),
            frozenset(t.nonempty_when_status),
        )
